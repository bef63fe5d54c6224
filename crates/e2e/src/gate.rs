//! Whether the end-to-end tests run here: `BATCH_AUTOSCALER_E2E=1` says they must
//! (anything missing is then a failure); without it they are skipped loudly, unless
//! `CI` is set, where a skip is a failure.

use std::io::Write;

/// The variable that turns the end-to-end tests on.
pub const ENABLE_VAR: &str = "BATCH_AUTOSCALER_E2E";

/// Straight to the process's stderr: libtest captures `eprintln!` of passing tests.
pub fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.write_all(b"\n");
    let _ = err.flush();
}

/// `true` if `test` should run; prints the SKIPPED line (or panics under `CI`) if not.
pub fn should_run(test: &str) -> bool {
    let requested = std::env::var(ENABLE_VAR).is_ok_and(|v| v.trim() == "1");
    if requested {
        return true;
    }
    let why = match crate::paths::control_plane_binaries() {
        Ok(binaries) if crate::paths::missing(&binaries).is_empty() => {
            format!("{ENABLE_VAR} is not set to 1")
        }
        Ok(binaries) => format!(
            "{ENABLE_VAR} is not set and control-plane binaries are missing ({})",
            crate::paths::missing(&binaries)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => format!("{ENABLE_VAR} is not set ({e:#})"),
    };
    if std::env::var_os("CI").is_some() {
        panic!(
            "end-to-end test {test} would be skipped ({why}) but CI is set: scripts/test-all.sh builds the control plane and sets {ENABLE_VAR}=1"
        );
    }
    say(&format!(
        "SKIPPED e2e {test}: {why} (run scripts/test-all.sh, or testenv/build-control-plane.sh then {ENABLE_VAR}=1 cargo test -p e2e)"
    ));
    false
}
