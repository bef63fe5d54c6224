# shellcheck shell=bash
# Helpers shared by testenv/*.sh (sourced, not run).

# shellcheck disable=SC2034  # used by the scripts that source this file

CP_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

cp_log() { printf '[control-plane] %s\n' "$*" >&2; }
cp_die() { cp_log "ERROR: $*"; exit 1; }

# The pid of a component if it is running and really is ours (its command
# line mentions DIR, which guards against a recycled pid). Right after
# cp_launch the process is still going through its execs (setsid, env, bash,
# the binary) and /proc/PID/cmdline reads empty for an instant in each: an
# empty command line is a process in exec, not a dead one.
cp_pid() { # dir component
  local f="$1/run/$2.pid" pid cmdline
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmdline="$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
  if [[ -n "$cmdline" ]]; then
    grep -qF -- "$1" <<<"$cmdline" || return 1
  fi
  # A zombie is not alive.
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 1
  echo "$pid"
}
cp_alive() { cp_pid "$1" "$2" >/dev/null; }

# Start DIR/run/NAME.sh detached (own session, no tty, stdio to its log) and
# record its pid (setsid execs in place, so $! is the component's pid).
cp_launch() { # dir component
  local dir="$1" name="$2"
  setsid "$dir/run/$name.sh" </dev/null >/dev/null 2>&1 &
  echo $! > "$dir/run/$name.pid"
  cp_log "started $name (pid $!)"
}

# True while any thread of pid still runs. A zombie whose threads have all exited has
# closed its files and sockets, so its ports are free again; but the leader thread of
# a multi-threaded process (every Go component) turns Z as soon as it exits, while its
# other threads are still tearing down and the process's files, listening sockets
# included, are still open (seen in CI: a restarted apiserver found its port still
# taken 50 ms after the old one looked dead). /proc/PID/task lists the threads not yet
# gone: only a lone zombie leader is really finished.
cp_running_pid() { # pid
  local st threads
  st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ -n "$st" ]] || return 1
  [[ "$st" == Z || "$st" == X ]] || return 0
  threads="$(find "/proc/$1/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
  (( threads > 1 ))
}

# Stop one component: SIGTERM, then SIGKILL after a grace period (grace 0:
# SIGKILL at once). Returns once the process is really gone.
cp_stop() { # dir component [grace-seconds]
  local dir="$1" name="$2" grace="${3:-10}" pid i
  pid="$(cp_pid "$dir" "$name")" || { rm -f "$dir/run/$name.pid"; return 0; }
  if (( grace > 0 )); then
    kill -TERM "$pid" 2>/dev/null || true
    for (( i = 0; i < grace * 10; i++ )); do
      cp_running_pid "$pid" || break
      sleep 0.1
    done
  fi
  if cp_running_pid "$pid"; then
    (( grace == 0 )) || cp_log "$name (pid $pid) ignored SIGTERM for ${grace}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for (( i = 0; i < 100; i++ )); do cp_running_pid "$pid" || break; sleep 0.05; done
  fi
  cp_running_pid "$pid" && cp_log "WARNING: $name (pid $pid) still running"
  rm -f "$dir/run/$name.pid"
  cp_log "stopped $name"
}

# Print the tail of every component log to stderr.
cp_dump_logs() { # dir [lines]
  local dir="$1" lines="${2:-80}" f
  for f in "$dir"/logs/*.log; do
    [[ -f "$f" ]] || continue
    printf '\n===== %s (last %s lines) =====\n' "$f" "$lines" >&2
    tail -n "$lines" "$f" >&2
  done
}
