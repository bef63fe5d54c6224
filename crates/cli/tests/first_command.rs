//! The README's first command, `cargo run -p batch-autoscaler -- simulate …`, compiles
//! the planner and the simulator only (minutes on 2 cores), never the Kubernetes and
//! AWS stack (≈ 9 min more): every dependency of the binary that `simulate` and `bench`
//! do not need is optional (the `cloud` feature), and the crates they do need stay
//! light.

use std::path::Path;

/// The `[dependencies]` of a manifest: (name, optional).
fn dependencies(manifest: &Path) -> Vec<(String, bool)> {
    let text = std::fs::read_to_string(manifest).expect("read manifest");
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            if let Some((name, spec)) = line.split_once('=') {
                let name = name.trim().trim_end_matches(".workspace").to_owned();
                deps.push((name, spec.contains("optional = true")));
            }
        }
    }
    deps
}

const SIMULATE_NEEDS: &[&str] = &[
    "model",
    "catalog",
    "planner",
    "sim",
    "bench",
    "clap",
    "anyhow",
    "serde",
    "serde_json",
    "serde_yaml",
    "thiserror",
    "regex",
];

#[test]
fn simulate_compiles_without_the_cloud_stack() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates dir");
    let cli = dependencies(&crates.join("cli/Cargo.toml"));
    assert!(cli.iter().any(|(n, _)| n == "sim"), "parsed {cli:?}");
    assert!(cli.iter().any(|(n, o)| n == "kube" && *o), "parsed {cli:?}");
    for (name, optional) in &cli {
        assert!(
            *optional || SIMULATE_NEEDS.contains(&name.as_str()),
            "batch-autoscaler depends on {name:?} unconditionally: make it optional (feature `cloud`) \
             unless `simulate` needs it (allowed: {SIMULATE_NEEDS:?})"
        );
    }
    for krate in ["sim", "bench", "catalog", "planner", "model"] {
        for (name, _) in dependencies(&crates.join(krate).join("Cargo.toml")) {
            assert!(
                SIMULATE_NEEDS.contains(&name.as_str()),
                "{krate} depends on {name:?}, which the README's first command would compile \
                 (allowed: {SIMULATE_NEEDS:?})"
            );
        }
    }
}
