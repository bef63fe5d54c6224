//! Processes the harness starts, and the reaper that stops them when the test binary
//! exits — normally, on a panic, or killed. Statics are never dropped in Rust, so the
//! shared control plane and moto cannot be stopped by a destructor; instead a
//! detached shell (its own session, so a Ctrl-C of `cargo test` does not take it
//! down first) waits for the test process to disappear and then kills every pid
//! registered under `<world>/pids/` and stops the control plane.

use anyhow::Context;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Registers a pid for the reaper.
pub fn register_pid(world_dir: &Path, name: &str, pid: u32) {
    let dir = world_dir.join("pids");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{name}.pid")), pid.to_string());
}

/// Forgets a pid (the process was stopped by the harness).
pub fn unregister_pid(world_dir: &Path, name: &str) {
    let _ = std::fs::remove_file(world_dir.join("pids").join(format!("{name}.pid")));
}

/// Starts the reaper for this test process. `keep_marker`: if that file exists when
/// the reaper runs, the world directory (logs) is kept; otherwise it is removed.
pub fn spawn_reaper(
    world_dir: &Path,
    control_plane_dir: &Path,
    keep_marker: &Path,
) -> anyhow::Result<()> {
    let stop = crate::paths::testenv().join("stop-control-plane.sh");
    let script = format!(
        r#"while kill -0 {pid} 2>/dev/null; do sleep 0.5; done
for f in "{world}"/pids/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
"{stop}" "{cp}" >/dev/null 2>&1
if [ ! -e "{keep}" ] && [ -z "${{KEEP_E2E_DIR:-}}" ]; then rm -rf "{world}"; fi
"#,
        pid = std::process::id(),
        world = world_dir.display(),
        stop = stop.display(),
        cp = control_plane_dir.display(),
        keep = keep_marker.display(),
    );
    Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn the reaper (setsid sh)")?;
    Ok(())
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`) with kill(1): no unsafe code.
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last `max_bytes` of a file, from a line start, or a note why not.
pub fn tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("({} does not exist)\n", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    let _ = file.seek(SeekFrom::Start(start));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        let cut = text.find('\n').map_or(0, |i| i + 1);
        format!("[... {start} bytes before ...]\n{}", &text[cut..])
    } else {
        text
    }
}

/// Every regular file under `dir` (not recursive), sorted.
pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}
