//! What the integration-test files share: a lab cluster in a temporary directory that reports
//! and stops every process it started (by PID) when dropped, pass or fail.

#![allow(dead_code)] // each test file uses a part

pub mod venv;

use std::time::{Duration, Instant};
use tandem::config::Config;
use tandem::dcs::Dcs;
use tandem::demo::healthy_roles;
use tandem::lab::{wait_until, Lab, LabOptions};

/// A current-thread runtime for a test's own etcd client.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A client of the lab's etcd under the cluster's prefix, as node1's configuration names it.
pub fn dcs(lab: &Lab, rt: &tokio::runtime::Runtime) -> Dcs {
    let cfg = Config::load(&lab.nodes[0].config_path).expect("node1's configuration");
    rt.block_on(Dcs::connect(
        &cfg.etcd3,
        &cfg.base_path(),
        Duration::from_secs(2),
    ))
    .expect("etcd client")
}

/// Runs `tandem -c <node i's YAML> ARGS` (stdin not a terminal): success, stdout + stderr.
pub fn cli(lab: &Lab, i: usize, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("-c")
        .arg(&lab.nodes[i].config_path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tandem");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Node `i`'s REST API answers 200 on `GET path`.
pub fn answers_200(lab: &Lab, i: usize, path: &str) -> bool {
    matches!(lab.api_get(i, path), Ok((200, _)))
}

/// Node `i`'s REST API answers 200 on `GET /primary`.
pub fn is_primary(lab: &Lab, i: usize) -> bool {
    answers_200(lab, i, "/primary")
}

pub struct Cluster {
    pub lab: Lab,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Cluster {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // On a failing test: the last lines of every agent's log. Then everything stopped.
        self.lab.report_and_stop();
    }
}

/// A running cluster: who leads, who replicates, how long it took to form.
pub struct Started {
    pub cluster: Cluster,
    pub leader: usize,
    pub replicas: Vec<usize>,
    pub formed_in: Duration,
}

impl Cluster {
    /// A lab (three nodes, three etcd members unless `tune` says otherwise) in a fresh directory
    /// `/tmp/<prefix>XXXX`, with this build's `tandem`. Nothing started.
    pub fn prepare(prefix: &str, tune: impl FnOnce(&mut LabOptions)) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .expect("temp dir");
        let mut opts = LabOptions::new(dir.path());
        opts.tandem_exe = Some(env!("CARGO_BIN_EXE_tandem").into());
        // scripts/test.sh runs the core cases again on PostgreSQL 18 (scripts/install-pg18.sh).
        opts.pg_bin = std::env::var_os("TANDEM_TEST_PG_BIN").map(Into::into);
        tune(&mut opts);
        let lab = Lab::prepare(opts).expect("prepare lab");
        Cluster { lab, _dir: dir }
    }

    /// Starts etcd and every agent; returns once one leader and streaming replicas answer.
    pub fn start(mut self) -> Started {
        self.lab.start_etcd().expect("start etcd");
        let t0 = Instant::now();
        for i in 0..self.lab.nodes.len() {
            self.lab.start_agent(i).expect("start agent");
        }
        let (leader, replicas) = wait_until(
            Duration::from_secs(90),
            "1 leader + streaming replicas",
            || healthy_roles(&self.lab),
        )
        .expect("cluster forms");
        // On a chosen PostgreSQL build, prove the cluster really runs it.
        if std::env::var_os("TANDEM_TEST_PG_BIN").is_some() {
            let out = std::process::Command::new(self.lab.pg_bin.join("postgres"))
                .arg("--version")
                .output()
                .expect("postgres --version");
            let want = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_string();
            let have = self
                .lab
                .psql(leader, "SHOW server_version")
                .expect("version");
            assert_eq!(
                have,
                want,
                "the cluster does not run {}",
                self.lab.pg_bin.display()
            );
            eprintln!(
                "cluster runs PostgreSQL {have} from {}",
                self.lab.pg_bin.display()
            );
        }
        Started {
            cluster: self,
            leader,
            replicas,
            formed_in: t0.elapsed(),
        }
    }
}
