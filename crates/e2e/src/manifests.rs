//! The shipped manifests as the end-to-end environment uses them: the RBAC objects of
//! the chart's render (`deploy/manifests/batch-autoscaler.yaml`), applied so that the
//! autoscaler runs under exactly the ServiceAccount and roles a user installs, and the
//! split of a multi-document render into its objects for the server-side dry run.
//!
//! Text-level on purpose: `helm template` prints every object as a document with a
//! top-level `kind:` line, and kubectl parses the documents for real; a YAML parser
//! here would only re-check what kubectl checks.

/// The kinds that make up the autoscaler's identity and permissions.
pub const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The documents of a multi-document YAML stream (comments-only documents dropped).
pub fn documents(text: &str) -> Vec<String> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(std::mem::take(&mut current));
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.push(current);
    docs.into_iter().filter(|d| kind_of(d).is_some()).collect()
}

/// The top-level `kind:` of a document.
pub fn kind_of(doc: &str) -> Option<&str> {
    doc.lines()
        .find_map(|l| l.strip_prefix("kind:"))
        .map(|k| k.trim().trim_matches('"'))
}

/// The top-level `metadata.namespace:` of a document (two-space indentation, as helm prints).
pub fn namespace_of(doc: &str) -> Option<&str> {
    let mut in_metadata = false;
    for line in doc.lines() {
        if !line.starts_with(' ') {
            in_metadata = line.trim_end() == "metadata:";
        } else if in_metadata {
            if let Some(ns) = line.strip_prefix("  namespace:") {
                return Some(ns.trim().trim_matches('"'));
            }
        }
    }
    None
}

/// The RBAC objects of a render, as one YAML stream.
pub fn rbac_of(render: &str) -> String {
    documents(render)
        .into_iter()
        .filter(|d| kind_of(d).is_some_and(|k| RBAC_KINDS.contains(&k)))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDER: &str = "# header\n---\n# Source: a\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: x\n  namespace: kube-system\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\n  namespace: ops\n  labels:\n    kind: fake\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: cr\nrules: []\n";

    #[test]
    fn rbac_keeps_identity_and_permissions_and_drops_the_rest() {
        let rbac = rbac_of(RENDER);
        let kinds: Vec<_> = documents(&rbac)
            .iter()
            .map(|d| kind_of(d).unwrap_or("?").to_owned())
            .collect();
        assert_eq!(kinds, ["ServiceAccount", "ClusterRole"]);
    }

    #[test]
    fn namespace_is_read_from_metadata_only() {
        let docs = documents(RENDER);
        assert_eq!(docs.len(), 3, "the comment-only header is not a document");
        assert_eq!(namespace_of(&docs[0]), Some("kube-system"));
        assert_eq!(namespace_of(&docs[1]), Some("ops"));
        assert_eq!(namespace_of(&docs[2]), None);
    }

    #[test]
    fn the_shipped_render_grants_the_autoscaler_its_roles() {
        let render = std::fs::read_to_string(crate::paths::rendered_manifests())
            .expect("deploy/manifests/batch-autoscaler.yaml");
        let rbac = rbac_of(&render);
        let kinds: std::collections::BTreeSet<_> = documents(&rbac)
            .iter()
            .filter_map(|d| kind_of(d).map(str::to_owned))
            .collect();
        assert_eq!(
            kinds.len(),
            RBAC_KINDS.len(),
            "every RBAC kind once or more in the render: {kinds:?}"
        );
    }
}
