//! Processes the harness starts, and the reaper that stops them when the test binary
//! exits — normally, on a panic, or killed. Statics are never dropped in Rust, so the
//! shared control plane and moto cannot be stopped by a destructor; instead a
//! detached shell (its own session, so a Ctrl-C of `cargo test` does not take it
//! down first) waits for the test process to disappear and then kills every pid
//! registered under `<world>/pids/` and stops the control plane. A command the
//! harness did not write (a replay's `--autoscaler-command`) runs in a process group of
//! its own ([`ProcessGroup`]) and is registered as that group, so whatever it starts
//! in its turn is stopped with it.

use anyhow::Context;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Registers a pid for the reaper.
pub fn register_pid(world_dir: &Path, name: &str, pid: u32) {
    register(world_dir, &format!("{name}.pid"), pid);
}

/// Forgets a pid (the process was stopped by the harness).
pub fn unregister_pid(world_dir: &Path, name: &str) {
    unregister(world_dir, &format!("{name}.pid"));
}

/// Registers a process group for the reaper: every process of it is killed.
pub fn register_group(world_dir: &Path, name: &str, pgid: u32) {
    register(world_dir, &format!("{name}.pgid"), pgid);
}

/// Forgets a process group (the harness stopped it).
pub fn unregister_group(world_dir: &Path, name: &str) {
    unregister(world_dir, &format!("{name}.pgid"));
}

/// `<world>/pids/<file>` holds the id; the reaper reads the directory.
fn register(world_dir: &Path, file: &str, id: u32) {
    let dir = world_dir.join("pids");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(file), id.to_string());
}

fn unregister(world_dir: &Path, file: &str) {
    let _ = std::fs::remove_file(world_dir.join("pids").join(file));
}

/// Starts the reaper for this test process. `keep_marker`: if that file exists when
/// the reaper runs, the world directory (logs) is kept; otherwise it is removed.
pub fn spawn_reaper(
    world_dir: &Path,
    control_plane_dir: &Path,
    keep_marker: &Path,
) -> anyhow::Result<()> {
    spawn_reaper_of(
        std::process::id(),
        world_dir,
        control_plane_dir,
        keep_marker,
    )
}

/// [`spawn_reaper`] for the process `watched` (a test stands in a process of its own
/// for the test binary, to kill it).
pub fn spawn_reaper_of(
    watched: u32,
    world_dir: &Path,
    control_plane_dir: &Path,
    keep_marker: &Path,
) -> anyhow::Result<()> {
    let stop = crate::paths::testenv().join("stop-control-plane.sh");
    // Groups first: a foreign autoscaler must not outlive its control plane either.
    // (dash's kill takes `-PGID` after the signal, and no `--`.)
    let script = format!(
        r#"while kill -0 {pid} 2>/dev/null; do sleep 0.5; done
for f in "{world}"/pids/*.pgid; do [ -f "$f" ] && kill -9 "-$(cat "$f")" 2>/dev/null; done
for f in "{world}"/pids/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
"{stop}" "{cp}" >/dev/null 2>&1
if [ ! -e "{keep}" ] && [ -z "${{KEEP_E2E_DIR:-}}" ]; then rm -rf "{world}"; fi
"#,
        pid = watched,
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

/// A command started as the leader of a process group of its own, registered with the
/// reaper as that group: stopping it stops everything it started in its turn (a
/// wrapper script's children, the processes of an `exec`ed binary), which signalling
/// the pid of `sh -c` would not. Dropped without [`ProcessGroup::stop`] (a failing
/// replay returns early), the group is killed.
#[derive(Debug)]
pub struct ProcessGroup {
    child: Option<tokio::process::Child>,
    pgid: u32,
    name: String,
    world_dir: PathBuf,
}

impl ProcessGroup {
    /// Spawns `command` in a new process group (its leader's pid is the group's id)
    /// and registers the group under `name` for the reaper of `world_dir`.
    pub fn spawn(
        mut command: tokio::process::Command,
        world_dir: &Path,
        name: &str,
    ) -> anyhow::Result<ProcessGroup> {
        let child = command
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("{name}: start"))?;
        let pgid = child
            .id()
            .with_context(|| format!("{name}: exited before it had a pid"))?;
        register_group(world_dir, name, pgid);
        Ok(ProcessGroup {
            child: Some(child),
            pgid,
            name: name.to_string(),
            world_dir: world_dir.to_path_buf(),
        })
    }

    /// The group's id (its leader's pid).
    pub fn pgid(&self) -> u32 {
        self.pgid
    }

    /// The leader's exit status once it has exited (its children may live on).
    pub fn leader_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Stops the whole group: TERM, then KILL whatever is left after `grace`; returns
    /// once no process of the group is alive (or after a bounded wait for the kernel
    /// to take the killed ones down).
    pub async fn stop(mut self, grace: Duration) {
        signal_group(self.pgid, "TERM");
        let mut child = self.child.take();
        let deadline = tokio::time::Instant::now() + grace;
        // The leader is our child: reap it, or it stays a zombie member of the group.
        while tokio::time::Instant::now() < deadline {
            if let Some(c) = child.as_mut() {
                if matches!(c.try_wait(), Ok(Some(_)) | Err(_)) {
                    child = None;
                }
            }
            if child.is_none() && group_members(self.pgid).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal_group(self.pgid, "KILL");
        if let Some(mut c) = child {
            let _ = c.wait().await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !group_members(self.pgid).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        unregister_group(&self.world_dir, &self.name);
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.child.is_some() {
            signal_group(self.pgid, "KILL");
            unregister_group(&self.world_dir, &self.name);
        }
    }
}

/// Sends a signal by name to every process of a group (kill(1) with `-- -PGID`).
pub fn signal_group(pgid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The live processes of a process group, from `/proc` (a zombie is dead: it only
/// waits for its parent to read its exit status).
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat_group(&stat))
                .is_some_and(|(state, group)| group == pgid && state != 'Z' && state != 'X')
        })
        .collect();
    members.sort_unstable();
    members
}

/// The state and process group of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself: parse after the last
/// `)`.
fn stat_group(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether a process is alive (not a zombie), from `/proc`.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_group(&stat))
        .is_some_and(|(state, _)| state != 'Z' && state != 'X')
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::{wait_until, Check};

    #[test]
    fn the_group_of_a_stat_line_is_read_after_the_command_name() {
        // A command name may hold spaces and parentheses.
        let stat = "4242 (sh (x) y) S 1 4200 4200 0 -1 4194560 95 0 0 0";
        assert_eq!(stat_group(stat), Some(('S', 4200)));
        assert_eq!(stat_group("4242 (z) Z 1 7 7 0"), Some(('Z', 7)));
        assert_eq!(stat_group("garbage"), None);
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "batch-autoscaler-process-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A command that starts a long-running child and waits for it, like a wrapper
    /// script around another autoscaler; the child's pid is written to `child.pid`.
    fn wrapper(dir: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "sleep 3600 & echo $! > {}/child.pid.tmp && mv {0}/child.pid.tmp {0}/child.pid; wait",
                dir.display()
            ))
            .stdin(Stdio::null());
        cmd
    }

    /// Waits until no live process is left in the group.
    async fn wait_gone(pgid: u32, what: &str, timeout: Duration) {
        wait_until(what, timeout, || {
            let members = group_members(pgid);
            async move {
                Ok(if members.is_empty() {
                    Check::Done(())
                } else {
                    Check::Waiting(format!("members {members:?}"))
                })
            }
        })
        .await
        .unwrap();
    }

    async fn child_pid(dir: &Path) -> u32 {
        let file = dir.join("child.pid");
        wait_until("the child's pid", Duration::from_secs(10), || {
            let pid = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok());
            async move { Ok(pid.map_or(Check::Waiting("no child.pid yet".into()), Check::Done)) }
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn stopping_a_group_stops_the_children_of_its_command() {
        let dir = scratch("stop");
        let group = ProcessGroup::spawn(wrapper(&dir), &dir, "wrapper").unwrap();
        let pgid = group.pgid();
        let child = child_pid(&dir).await;
        assert_eq!(group_members(pgid), {
            let mut m = vec![pgid, child];
            m.sort_unstable();
            m
        });
        assert!(
            dir.join("pids/wrapper.pgid").exists(),
            "registered for the reaper"
        );
        group.stop(Duration::from_secs(5)).await;
        assert!(
            !alive(child),
            "the wrapper's child {child} outlived the stop"
        );
        assert!(group_members(pgid).is_empty(), "{:?}", group_members(pgid));
        assert!(!dir.join("pids/wrapper.pgid").exists(), "unregistered");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_group_dropped_without_a_stop_is_killed() {
        let dir = scratch("drop");
        let group = ProcessGroup::spawn(wrapper(&dir), &dir, "wrapper").unwrap();
        let pgid = group.pgid();
        let child = child_pid(&dir).await;
        drop(group);
        wait_gone(pgid, "the dropped group gone", Duration::from_secs(10)).await;
        assert!(!alive(child));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_reaper_kills_a_registered_group_when_its_process_dies() {
        let dir = scratch("reaper");
        // Stands in for the test binary: the reaper waits for it to disappear.
        let mut watched = Command::new("sleep").arg("3600").spawn().unwrap();
        spawn_reaper_of(
            watched.id(),
            &dir,
            &dir.join("no-control-plane"),
            &dir.join("KEEP"),
        )
        .unwrap();
        let group = ProcessGroup::spawn(wrapper(&dir), &dir, "wrapper").unwrap();
        let pgid = group.pgid();
        let child = child_pid(&dir).await;
        // A crash: nothing of ours runs to stop the group.
        std::mem::forget(group);
        watched.kill().unwrap();
        watched.wait().unwrap();
        wait_gone(pgid, "the reaper kills the group", Duration::from_secs(20)).await;
        assert!(!alive(child));
    }
}
