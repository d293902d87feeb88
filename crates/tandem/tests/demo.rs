//! README command 1: `tandem demo up` starts etcd, three agents and a router, and prints the
//! `psql` lines that work; `tandem demo down` stops everything by PID and removes the directory.

use std::process::Command;
use std::time::Duration;
use tandem::lab::{wait_until, Lab};

/// Stops whatever the demo left running if the test fails half-way.
struct Guard(std::path::PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(mut lab) = Lab::load(&self.0) {
            if std::thread::panicking() {
                let log =
                    std::fs::read_to_string(self.0.join("logs/router.log")).unwrap_or_default();
                eprintln!("---- router.log ----\n{log}");
            }
            lab.stop_all();
        }
    }
}

/// Runs the `psql` command line printed by the demo (a shell line with PGPASSFILE=...).
fn run_psql_line(line: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{line} -X -A -t -c '{sql}'"))
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

#[test]
fn demo_up_starts_a_cluster_and_a_router_and_prints_lines_that_connect() {
    let tmp = tempfile::Builder::new()
        .prefix("tandem-demo-test-")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tmp.path().join("demo");
    let _guard = Guard(dir.clone());
    let bin = env!("CARGO_BIN_EXE_tandem");
    let out = Command::new(bin)
        .args(["demo", "up", "--dir", dir.to_str().unwrap()])
        .env(
            "PATH",
            format!(
                "/usr/lib/postgresql/15/bin:{}",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "demo up failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("router.yml").is_file(), "{text}");

    let line_after = |label: &str| -> String {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|r| r.trim().to_string()))
            .unwrap_or_else(|| panic!("no line '{label}' in:\n{text}"))
    };
    let rw = line_after("read-write (the leader):");
    let ro = line_after("read-only (replicas):");
    let lab = Lab::load(&dir).unwrap();
    let r = lab.router.as_ref().expect("the demo has a router");
    assert!(rw.contains(&format!("port={}", r.primary_port)), "{rw}");
    assert!(ro.contains(&format!("port={}", r.replicas_port)), "{ro}");

    // The printed lines work: the leader through the read-write listener, a replica through
    // the read-only one (replicas register with the router a moment after the leader).
    assert_eq!(
        run_psql_line(&rw, "SELECT pg_is_in_recovery()").unwrap(),
        "f"
    );
    run_psql_line(&rw, "CREATE TABLE demo_t AS SELECT 1 AS x").unwrap();
    wait_until(
        Duration::from_secs(20),
        "a replica through the read-only listener",
        || (run_psql_line(&ro, "SELECT pg_is_in_recovery()").ok()? == "t").then_some(()),
    )
    .unwrap();
    let status = Command::new(bin)
        .args(["proxy", "status", "-c", r.config_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stdout).contains("primary"));

    // Down: every process stopped, the directory gone.
    let pid = r.pid.expect("router pid recorded");
    let out = Command::new(bin)
        .args(["demo", "down", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the router (pid {pid}) still runs after demo down"
    );
}
