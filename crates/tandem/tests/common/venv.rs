//! Patroni 4.1.5 from PyPI for the tests that run it or patronictl against a tandem cluster
//! (patronictl.rs, interop.rs): a virtualenv made once and reused, and a command runner with a
//! deadline.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const VENV: &str = "/var/tmp/tandem-patronictl-venv";
pub const PATRONI: &str = "patroni[etcd3]==4.1.5";

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (prints why and returns `None`) outside CI; fails under CI=true.
pub fn skip(why: &str) -> Option<PathBuf> {
    if ci() {
        panic!("a test with Patroni 4.1.5 cannot run: {why}");
    }
    eprintln!("SKIPPED a test with Patroni 4.1.5: {why}");
    None
}

/// Runs `cmd` with a deadline, in its own process group; on expiry kills that group (by the
/// child's PID). Output is captured.
pub fn run(mut cmd: Command, deadline: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill on the process group of the child we spawned (its PID).
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            let out = rx.recv_timeout(Duration::from_secs(10));
            panic!("{cmd:?} did not finish within {deadline:?}: {out:?}");
        }
    }
}

/// The virtualenv's bin directory with `patroni` and `patronictl`, made once and reused (marker
/// file written last).
pub fn patroni_venv() -> Option<PathBuf> {
    if !is_root() {
        return skip("it runs a lab cluster, which needs root (to run PostgreSQL as its own user)");
    }
    let dir = PathBuf::from(VENV);
    let marker = dir.join(".tandem-ready");
    let bin = dir.join("bin");
    if marker.is_file() && bin.join("patronictl").is_file() && bin.join("patroni").is_file() {
        // The cache is good only if it still runs (its Python may have gone away).
        let mut v = Command::new(bin.join("patronictl"));
        v.arg("version");
        let out = run(v, Duration::from_secs(60));
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("4.1.5") {
            return Some(bin);
        }
        eprintln!("the cached virtualenv in {VENV} does not run: making it again");
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Debian's python3 first: scripts/install-deps.sh makes sure it has venv.
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(python) = python else {
        return skip("python3 is not installed (scripts/install-deps.sh installs it)");
    };
    let mut c = Command::new(python);
    c.args(["-m", "venv"]).arg(&dir);
    let out = run(c, Duration::from_secs(120));
    if !out.status.success() {
        return skip(&format!(
            "cannot create a virtualenv (python3-venv missing?): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut c = Command::new(dir.join("bin/pip"));
    c.args([
        "install",
        "-q",
        "--disable-pip-version-check",
        PATRONI,
        "psycopg2-binary",
    ]);
    let out = run(c, Duration::from_secs(600));
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        return skip(&format!(
            "pip install {PATRONI} failed (is PyPI reachable?): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::write(&marker, PATRONI).unwrap();
    Some(bin)
}
