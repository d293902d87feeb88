//! `postgresql.callbacks`: the operator's scripts, run on PostgreSQL life-cycle events with
//! Patroni's arguments (spec §8.2): `<command split by shell rules> <action> <role> <scope>`.
//!
//! As in Patroni, callbacks run in the background (the HA loop never waits for one) and one at
//! a time: a new callback stops the one still running, with its children (each runs in its own
//! process group). `on_reload` has a slot of its own, so a reload never stops a role change's
//! callback. Their output goes to the agent's own output (its log); a failing callback is logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// The events Patroni defines, named as in the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    OnStart,
    OnStop,
    OnRestart,
    OnReload,
    OnRoleChange,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::OnStart => "on_start",
            Event::OnStop => "on_stop",
            Event::OnRestart => "on_restart",
            Event::OnReload => "on_reload",
            Event::OnRoleChange => "on_role_change",
        }
    }
}

/// The running callback of a slot, with its sequence number (a waiter only reaps its own).
type Slot = Arc<Mutex<Option<(u64, tokio::process::Child)>>>;

pub struct Callbacks {
    commands: BTreeMap<String, Vec<String>>,
    scope: String,
    main: Slot,
    reload: Slot,
    seq: std::sync::atomic::AtomicU64,
}

impl Callbacks {
    /// `commands`: event name → command line, as configured. A command line that does not split
    /// by shell rules is refused by the configuration loader; here it is skipped with a warning.
    pub fn new(commands: &BTreeMap<String, String>, scope: &str) -> Callbacks {
        let mut parsed = BTreeMap::new();
        for (event, line) in commands {
            match split(line) {
                Some(argv) => {
                    parsed.insert(event.clone(), argv);
                }
                None => warn!("postgresql.callbacks.{event}: cannot split {line:?} into a command and its arguments; not run"),
            }
        }
        Callbacks {
            commands: parsed,
            scope: scope.to_string(),
            main: Default::default(),
            reload: Default::default(),
            seq: Default::default(),
        }
    }

    /// Runs the callback for `event` (if one is configured) with `role`, in the background.
    pub fn fire(&self, event: Event, role: &str) {
        let Some(argv) = self.commands.get(event.name()) else {
            return;
        };
        let slot = if event == Event::OnReload {
            &self.reload
        } else {
            &self.main
        };
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .args([event.name(), role, self.scope.as_str()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::inherit())
            .stderr(std::process::Stdio::inherit())
            .process_group(0);
        let Ok(mut current) = slot.lock() else { return };
        if let Some((_, old)) = current.as_mut() {
            // Still running (not reaped, so its PID and group cannot have been reused): stop it
            // and its children.
            if matches!(old.try_wait(), Ok(None)) {
                if let Some(pid) = old.id() {
                    info!(
                        "stopping the previous callback (pid {pid}) to run {}",
                        event.name()
                    );
                    unsafe { libc::killpg(pid as i32, libc::SIGKILL) };
                }
            }
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                warn!("callback {} ({}): cannot start: {e}", event.name(), argv[0]);
                *current = None;
                return;
            }
        };
        debug!("callback {} {role} started", event.name());
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *current = Some((seq, child));
        drop(current);
        let slot = slot.clone();
        let name = event.name();
        tokio::spawn(async move {
            // Poll under the lock, so a kill above never meets a reaped (reusable) PID.
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let finished = {
                    let Ok(mut current) = slot.lock() else { return };
                    let Some(child) = current.as_mut().filter(|(s, _)| *s == seq).map(|(_, c)| c)
                    else {
                        return; // replaced by a newer callback, which stopped this one
                    };
                    match child.try_wait() {
                        Ok(None) => continue,
                        Ok(Some(status)) => {
                            *current = None;
                            Ok(status)
                        }
                        Err(e) => {
                            *current = None;
                            Err(e)
                        }
                    }
                };
                match finished {
                    Ok(status) if status.success() => debug!("callback {name} finished"),
                    Ok(status) => warn!("callback {name} failed ({status})"),
                    Err(e) => warn!("callback {name}: {e}"),
                }
                return;
            }
        });
    }
}

/// Shell-rule splitting (quotes and backslashes, no expansion), as Patroni's `shlex.split`.
pub fn split(line: &str) -> Option<Vec<String>> {
    shlex::split(line).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_by_shell_rules() {
        assert_eq!(
            split("/usr/local/bin/cb.sh --flag 'two words'").unwrap(),
            vec!["/usr/local/bin/cb.sh", "--flag", "two words"]
        );
        assert!(split("").is_none());
        assert!(split("'unclosed").is_none());
    }

    #[test]
    fn a_callback_gets_action_role_and_scope_and_a_new_one_stops_the_old() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("calls");
            let script = dir.path().join("cb.sh");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\necho \"$@\" >> {}\n[ \"$1\" = on_start ] && exec sleep 30\nexit 0\n",
                    out.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(
                &script,
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .unwrap();
            let line = script.display().to_string();
            let cmds: BTreeMap<String, String> = ["on_start", "on_role_change"]
                .iter()
                .map(|e| (e.to_string(), line.clone()))
                .collect();
            let cb = Callbacks::new(&cmds, "batman");
            cb.fire(Event::OnStart, "replica");
            cb.fire(Event::OnReload, "replica"); // not configured: nothing
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::fs::read_to_string(&out).unwrap_or_default().lines().count() < 1 {
                assert!(std::time::Instant::now() < deadline, "on_start never ran");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let sleeper = cb.main.lock().unwrap().as_ref().and_then(|(_, c)| c.id()).unwrap();
            cb.fire(Event::OnRoleChange, "primary");
            while std::fs::read_to_string(&out).unwrap_or_default().lines().count() < 2
                || cb.main.lock().unwrap().is_some()
            {
                assert!(std::time::Instant::now() < deadline, "on_role_change never finished");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                std::fs::read_to_string(&out).unwrap(),
                "on_start replica batman\non_role_change primary batman\n"
            );
            // The first callback (sleeping) was stopped, not left running.
            let alive = unsafe { libc::kill(sleeper as i32, 0) } == 0
                && !std::fs::read_to_string(format!("/proc/{sleeper}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ");
            assert!(!alive, "the previous callback still runs");
        });
    }
}
