//! The sans-IO rule, enforced: the model and planner crates depend on no async
//! runtime, no Kubernetes or AWS crate, nothing that does I/O.

use std::path::Path;

const ALLOWED: &[&str] = &["model", "serde", "regex"];

fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("read manifest");
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            // Only [dependencies]: dev-dependencies are for tests.
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            if let Some((name, _)) = line.split_once('=') {
                deps.push(name.trim().trim_end_matches(".workspace").to_owned());
            }
        }
    }
    deps
}

#[test]
fn model_and_planner_stay_sans_io() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates dir");
    for krate in ["model", "planner"] {
        let deps = dependencies(&crates.join(krate).join("Cargo.toml"));
        assert!(
            !deps.is_empty() || krate == "model",
            "parsed no dependencies of {krate}"
        );
        for dep in deps {
            assert!(
                ALLOWED.contains(&dep.as_str()),
                "{krate} depends on {dep:?}; the core must stay sans-IO (allowed: {ALLOWED:?})"
            );
        }
    }
}

#[test]
fn the_planner_never_reads_a_clock() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).expect("src") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        for forbidden in [
            "SystemTime::now",
            "Instant::now",
            "thread::sleep",
            "std::fs::",
            "std::net::",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}",
                path.display()
            );
        }
    }
}
