//! The lease fence: the backstop of DESIGN §4 rule 1 that nothing in the HA loop can hold up.
//!
//! The HA loop demotes a leader whose lease gets within `demote_margin` of its deadline (the
//! deadline is the send time of the last successful keepalive + TTL). That only works while the
//! loop runs: a cycle blocked in a slow `pg_ctl`, a REST probe, a filesystem call or etcd requests
//! that time out one endpoint after another could let the deadline pass with PostgreSQL still
//! writable — and once it has passed, another node may win the leader key and promote.
//!
//! The fence is an OS thread of its own (not a task of the agent's single-threaded runtime, which
//! a blocking call would stall too). While armed — the agent arms it whenever its PostgreSQL may
//! be running read-write — it watches the lease deadline; at `deadline − margin/2`, half the
//! demotion margin later than the loop should have acted, it stops PostgreSQL itself with an
//! immediate shutdown (SIGQUIT to the postmaster: every backend exits at once). A renewed lease
//! moves the deadline and the fence waits again. The HA loop then sees PostgreSQL stopped and
//! decides what comes next. Arithmetic: the other nodes can take the key only after etcd expires
//! the lease, which is no earlier than the deadline; the fence acts `margin/2` (0.5 s at the
//! defaults) before that.
//!
//! Not armed: a paused cluster (maintenance mode keeps PostgreSQL as it is) and `failsafe_mode`
//! (a primary may then outlive its lease while every member confirms it over REST).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::dcs::Lease;

#[derive(Default)]
struct State {
    armed: bool,
    stopped: bool,
    /// Half the demotion margin: how long before the deadline the fence acts.
    before: Duration,
}

/// Handle of the fence thread; dropping it stops the thread.
pub struct Fence {
    state: Arc<(Mutex<State>, Condvar)>,
}

/// How often the thread looks at the lease while armed (at most; it sleeps until the fence
/// point when that is sooner).
const POLL: Duration = Duration::from_millis(100);

impl Fence {
    /// Starts the fence thread for the PostgreSQL of `data_dir` (disarmed).
    pub fn start(lease: Lease, data_dir: PathBuf) -> Fence {
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let s = state.clone();
        let spawned = std::thread::Builder::new()
            .name("lease-fence".into())
            .spawn(move || watch(s, lease, data_dir));
        if let Err(e) = spawned {
            tracing::error!("cannot start the lease fence thread: {e}");
        }
        Fence { state }
    }

    /// Arms (PostgreSQL may be writable and must not outlive the lease) or disarms the fence;
    /// armed, it acts `demote_margin / 2` before the lease deadline.
    pub fn arm(&self, armed: bool, demote_margin: Duration) {
        let (m, cv) = &*self.state;
        if let Ok(mut s) = m.lock() {
            if s.armed != armed || s.before != demote_margin / 2 {
                s.armed = armed;
                s.before = demote_margin / 2;
                cv.notify_all();
            }
        }
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        let (m, cv) = &*self.state;
        if let Ok(mut s) = m.lock() {
            s.stopped = true;
            cv.notify_all();
        }
    }
}

/// When the fence must act, given the lease: `None` when there is no usable lease at all.
fn fence_point(lease: &Lease, before: Duration) -> Option<Instant> {
    let info = lease.info();
    if info.id == 0 {
        return None;
    }
    info.effective_deadline()
        .map(|d| d.checked_sub(before).unwrap_or(d))
}

fn watch(state: Arc<(Mutex<State>, Condvar)>, lease: Lease, data_dir: PathBuf) {
    let (m, cv) = &*state;
    let Ok(mut s) = m.lock() else { return };
    loop {
        let before = s.before;
        if s.stopped {
            return;
        }
        if !s.armed {
            s = match cv.wait(s) {
                Ok(g) => g,
                Err(_) => return,
            };
            continue;
        }
        let now = Instant::now();
        let due = fence_point(&lease, before).is_none_or(|p| p <= now);
        if !due {
            let wait = fence_point(&lease, before)
                .map(|p| p.saturating_duration_since(now))
                .unwrap_or_default()
                .min(POLL);
            s = match cv.wait_timeout(s, wait) {
                Ok((g, _)) => g,
                Err(_) => return,
            };
            continue;
        }
        // Armed and due: stop PostgreSQL now. It stays armed (the agent disarms it once it
        // sees PostgreSQL stopped or read-only): a postmaster that outlives the signal, or one
        // started meanwhile, gets it again at the next poll.
        drop(s);
        stop_postgres(&data_dir, &lease);
        s = match m.lock() {
            Ok(g) => g,
            Err(_) => return,
        };
        if s.armed && !s.stopped {
            s = match cv.wait_timeout(s, POLL) {
                Ok((g, _)) => g,
                Err(_) => return,
            };
        }
    }
}

fn stop_postgres(data_dir: &std::path::Path, lease: &Lease) {
    let Some(pid) = crate::pg::postmaster_pid_of(data_dir) else {
        return;
    };
    // A standby (read-only restart, or one that never was promoted) is not writable;
    // PostgreSQL removes standby.signal when it is promoted.
    if data_dir.join("standby.signal").exists() {
        return;
    }
    let left = lease
        .info()
        .effective_deadline()
        .map(|d| d.saturating_duration_since(Instant::now()).as_millis());
    // SAFETY: kill(2) with a PID read from postmaster.pid and checked to be that postmaster.
    let r = unsafe { libc::kill(pid, libc::SIGQUIT) };
    if r == 0 {
        tracing::error!(
            "lease fence: my leader lease is about to expire ({} ms left) and the HA loop has not demoted: stopped PostgreSQL (immediate shutdown of postmaster {pid})",
            left.map_or("none".to_string(), |l| l.to_string())
        );
    } else {
        tracing::error!(
            "lease fence: cannot signal postmaster {pid}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::LeaseInfo;
    use std::process::{Child, Command};

    /// A stand-in postmaster: a child process named in DIR/postmaster.pid, killed when dropped.
    struct Pm(Child);
    impl Drop for Pm {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    impl std::ops::Deref for Pm {
        type Target = Child;
        fn deref(&self) -> &Child {
            &self.0
        }
    }
    impl std::ops::DerefMut for Pm {
        fn deref_mut(&mut self) -> &mut Child {
            &mut self.0
        }
    }

    fn fake_postmaster(dir: &std::path::Path) -> Pm {
        let child = Command::new("sleep").arg("30").spawn().expect("sleep");
        std::fs::write(
            dir.join("postmaster.pid"),
            format!("{}\n{}\n", child.id(), dir.display()),
        )
        .unwrap();
        Pm(child)
    }

    fn exited_within(child: &mut Pm, limit: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn lease_for(left: Duration) -> Lease {
        Lease::detached(LeaseInfo {
            id: 7,
            deadline: Some(Instant::now() + left),
            ttl: Duration::from_secs(4),
            cap: None,
        })
    }

    #[test]
    fn an_armed_fence_stops_postgres_before_the_lease_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut pm = fake_postmaster(dir.path());
        let lease = lease_for(Duration::from_millis(600));
        let fence = Fence::start(lease, dir.path().to_path_buf());
        let t0 = Instant::now();
        fence.arm(true, Duration::from_millis(400)); // acts 200 ms before the deadline
        assert!(
            exited_within(&mut pm, Duration::from_secs(3)),
            "postmaster still runs"
        );
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(600),
            "acted after {took:?}, expected about 400 ms (deadline 600 ms - 200 ms)"
        );
    }

    #[test]
    fn a_disarmed_fence_or_a_renewed_lease_leaves_postgres_running() {
        let dir = tempfile::tempdir().unwrap();
        let mut pm = fake_postmaster(dir.path());
        let lease = lease_for(Duration::from_millis(300));
        let fence = Fence::start(lease.clone(), dir.path().to_path_buf());
        fence.arm(false, Duration::from_millis(200));
        assert!(
            !exited_within(&mut pm, Duration::from_millis(600)),
            "disarmed, yet it acted"
        );
        // Armed, with the lease renewed every 100 ms: nothing happens.
        lease.adopt(7, Instant::now(), Duration::from_millis(500));
        fence.arm(true, Duration::from_millis(200));
        for _ in 0..8 {
            lease.adopt(7, Instant::now(), Duration::from_millis(500));
            assert!(
                !exited_within(&mut pm, Duration::from_millis(100)),
                "renewed, yet it acted"
            );
        }
        // The renewals stop: it acts.
        assert!(
            exited_within(&mut pm, Duration::from_secs(2)),
            "postmaster still runs"
        );
    }

    #[test]
    fn a_standby_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut pm = fake_postmaster(dir.path());
        std::fs::write(dir.path().join("standby.signal"), b"").unwrap();
        let fence = Fence::start(
            lease_for(Duration::from_millis(100)),
            dir.path().to_path_buf(),
        );
        fence.arm(true, Duration::from_millis(50));
        assert!(
            !exited_within(&mut pm, Duration::from_millis(500)),
            "a standby was stopped"
        );
    }

    #[test]
    fn a_lost_lease_fences_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut pm = fake_postmaster(dir.path());
        let lease = lease_for(Duration::from_secs(60));
        let fence = Fence::start(lease.clone(), dir.path().to_path_buf());
        fence.arm(true, Duration::from_millis(200));
        assert!(!exited_within(&mut pm, Duration::from_millis(300)));
        lease.lost(7);
        assert!(
            exited_within(&mut pm, Duration::from_secs(1)),
            "postmaster still runs"
        );
    }
}
