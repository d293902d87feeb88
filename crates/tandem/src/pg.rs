//! PostgreSQL control: the data directory, configuration files, pg_ctl, initdb, pg_basebackup,
//! pg_rewind and the one status query per HA cycle. Every function does one thing and reports
//! what went wrong; deciding what to do is `tandem_core::ha::decide`'s job.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

use crate::config::Config;
use tandem_core::lsn::slot_name;

/// Parameters tandem manages; passed on the postmaster command line (they win over ALTER SYSTEM).
pub const PROTECTED: &[(&str, &str)] = &[
    ("max_connections", "100"),
    ("max_locks_per_transaction", "64"),
    ("max_worker_processes", "8"),
    ("max_prepared_transactions", "0"),
    ("wal_level", "replica"),
    ("track_commit_timestamp", "off"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("wal_log_hints", "on"),
    ("hot_standby", "on"),
];

/// Where a replica streams from.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    pub member: String,
    pub host: String,
    pub port: u16,
}

/// What the status query returns.
#[derive(Clone, Debug, Default)]
pub struct PgStatus {
    pub in_recovery: bool,
    pub wal_position: u64,
    pub receive_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
    pub timeline: Option<u64>,
    pub streaming: bool,
    pub postmaster_start_time: Option<String>,
    pub server_version: Option<u32>,
    pub replayed_timestamp: Option<String>,
    pub replay_paused: bool,
    pub replication: Vec<crate::status::ReplicationRow>,
    /// Parameters changed in the configuration that need a restart: name → current value.
    pub pending_restart: BTreeMap<String, String>,
    /// `synchronous_standby_names` in effect.
    pub ssn: String,
    /// Replica: the timeline of its last restartpoint and of its minimum recovery point (the
    /// replay timeline is at least both).
    pub checkpoint_tli: Option<u64>,
    pub min_recovery_tli: Option<u64>,
}

pub struct Postgres {
    pub name: String,
    pub scope: String,
    pub data_dir: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub host: String,
    pub port: u16,
    pub listen_addresses: String,
    pub socket_dir: String,
    pub superuser: (String, String),
    pub replication: (String, String),
    pub rewind: (String, String),
    /// libpq TLS options of the replication role's TCP connections (primary_conninfo,
    /// pg_basebackup), from `postgresql.authentication.replication`: [`libpq_tls`].
    pub replication_tls: String,
    /// The same for the rewind role (the superuser's when there is no rewind role).
    pub rewind_tls: String,
    pub pgpass: PathBuf,
    pub database: String,
    pub pg_ctl_timeout: u64,
    pub local_parameters: Map<String, Value>,
    pub local_hba: Vec<String>,
    pub initdb_args: Vec<String>,
    /// `postgresql.basebackup`: extra pg_basebackup options, after tandem's own (so they win).
    pub basebackup_args: Vec<String>,
    /// `synchronous_standby_names` as tandem manages it in synchronous mode (`None`: the
    /// configuration's). Read back from postgresql.conf at start, so an agent restart keeps it.
    pub ssn: Option<String>,
    client: tokio::sync::Mutex<Option<std::sync::Arc<tokio_postgres::Client>>>,
}

/// The line before a `synchronous_standby_names` that tandem manages (synchronous mode).
const SSN_MARKER: &str =
    "# synchronous_standby_names below is managed by tandem (synchronous_mode)";

/// The managed `synchronous_standby_names` in a postgresql.conf tandem wrote, if any.
pub fn managed_ssn(conf: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(conf).ok()?;
    if !text.lines().any(|l| l == SSN_MARKER) {
        return None;
    }
    let value = text.lines().find_map(|l| {
        l.strip_prefix("synchronous_standby_names = '")
            .and_then(|v| v.strip_suffix('\''))
    })?;
    Some(value.replace("''", "'"))
}

/// A role's libpq TLS options for a connection string (`sslmode=verify-full sslrootcert=...`),
/// from its `postgresql.authentication` entry; `sslmode`, `gssencmode` and `channel_binding`
/// default to `prefer` (libpq's own default, written out so the environment cannot change it).
/// Relative file names are libpq's business: they are passed as given.
pub fn libpq_tls(c: &crate::config::PgCredentials) -> String {
    let mut opts: Vec<(&str, String)> = vec![
        (
            "sslmode",
            c.sslmode.clone().unwrap_or_else(|| "prefer".into()),
        ),
        (
            "gssencmode",
            c.extra
                .get("gssencmode")
                .cloned()
                .unwrap_or_else(|| "prefer".into()),
        ),
        (
            "channel_binding",
            c.extra
                .get("channel_binding")
                .cloned()
                .unwrap_or_else(|| "prefer".into()),
        ),
    ];
    for (k, v) in [
        ("sslrootcert", &c.sslrootcert),
        ("sslcert", &c.sslcert),
        ("sslkey", &c.sslkey),
    ] {
        if let Some(v) = v {
            opts.push((k, v.clone()));
        }
    }
    for (k, v) in &c.extra {
        if !matches!(k.as_str(), "gssencmode" | "channel_binding") {
            opts.push((k.as_str(), v.clone()));
        }
    }
    opts.iter()
        .map(|(k, v)| format!("{k}={}", quote_conn(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `remove_dir_all` on the blocking pool, so the runtime's thread goes on (keepalives).
async fn remove_dir_off_runtime(dir: PathBuf) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| anyhow!("removing the data directory: {e}"))?
}

fn secret(p: &Option<crate::config::Secret>) -> String {
    p.as_ref()
        .map(|s| s.expose().to_string())
        .unwrap_or_default()
}

impl Postgres {
    pub fn new(cfg: &Config) -> Postgres {
        let pg = &cfg.postgresql;
        let auth = &pg.authentication;
        let su = (
            auth.superuser.username.clone(),
            secret(&auth.superuser.password),
        );
        let rep = (
            auth.replication.username.clone(),
            secret(&auth.replication.password),
        );
        let rew = auth
            .rewind
            .as_ref()
            .map(|r| (r.username.clone(), secret(&r.password)))
            .unwrap_or_else(|| su.clone());
        let rewind_tls = libpq_tls(auth.rewind.as_ref().unwrap_or(&auth.superuser));
        let listen_addresses = pg
            .listen
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or_else(|| "localhost".into());
        let socket_dir = pg
            .parameters
            .get("unix_socket_directories")
            .and_then(|v| v.as_str())
            .and_then(|s| s.split(',').next())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "/tmp".into());
        Postgres {
            name: cfg.name.clone(),
            scope: cfg.scope.clone(),
            data_dir: pg.data_dir.clone(),
            bin_dir: pg.bin_dir.clone(),
            host: pg.local_host(),
            port: pg.listen_port(),
            listen_addresses,
            socket_dir,
            superuser: su,
            replication: rep,
            rewind: rew,
            replication_tls: libpq_tls(&auth.replication),
            rewind_tls,
            pgpass: pg.pgpass.clone(),
            database: pg.database.clone(),
            pg_ctl_timeout: pg.pg_ctl_timeout,
            local_parameters: pg.parameters.clone(),
            local_hba: pg.pg_hba.clone(),
            initdb_args: cfg.bootstrap.initdb_args.clone(),
            basebackup_args: pg.basebackup_args.clone(),
            ssn: managed_ssn(&pg.data_dir.join("postgresql.conf")),
            client: tokio::sync::Mutex::new(None),
        }
    }

    pub fn bin(&self, tool: &str) -> PathBuf {
        match &self.bin_dir {
            Some(d) => d.join(tool),
            None => PathBuf::from(tool),
        }
    }

    async fn run(&self, tool: &str, args: &[String], timeout: Duration) -> Result<String> {
        let mut cmd = Command::new(self.bin(tool));
        // libpq and the server read PG* variables (PGPASSWORD, PGHOST, PGPORT, PGSSLMODE,
        // PGSERVICE, PGDATA, ...) and prefer some of them to our pgpass and arguments: a user's
        // `export PGPASSWORD=...` must not reach the agent's children. Only the configuration
        // decides how they connect.
        // (PG_OOM_ADJUST_FILE / _VALUE, set by service managers for the postmaster, stay.)
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("PG") && !n.starts_with("PG_") {
                cmd.env_remove(&name);
            }
        }
        cmd.args(args)
            .env("PGPASSFILE", &self.pgpass)
            .env("PGCONNECT_TIMEOUT", "3")
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .map_err(|_| anyhow!("{tool} did not finish within {timeout:?}"))?
            .with_context(|| {
                format!(
                    "cannot run {} (set postgresql.bin_dir)",
                    self.bin(tool).display()
                )
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            bail!("{tool} failed ({}): {}", out.status, err.trim());
        }
        Ok(stdout)
    }

    fn data_arg(&self) -> String {
        self.data_dir.display().to_string()
    }

    /// The data directory holds an initialized cluster.
    pub fn has_data(&self) -> bool {
        self.data_dir.join("PG_VERSION").exists()
            && self.data_dir.join("global/pg_control").exists()
    }

    pub async fn controldata(&self) -> Result<BTreeMap<String, String>> {
        let out = self
            .run(
                "pg_controldata",
                &[self.data_arg()],
                Duration::from_secs(10),
            )
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect())
    }

    /// PID of a live postmaster on this data directory, from postmaster.pid.
    pub fn postmaster_pid(&self) -> Option<i32> {
        postmaster_pid_of(&self.data_dir)
    }

    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    pub fn write_pgpass(&self, hosts: &[(String, u16)]) -> Result<()> {
        let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        let mut text = String::new();
        for (user, pw) in [&self.superuser, &self.replication, &self.rewind] {
            if pw.is_empty() {
                continue;
            }
            text.push_str(&format!("*:*:*:{}:{}\n", esc(user), esc(pw)));
        }
        let _ = hosts;
        write_private(&self.pgpass, &text)
    }

    /// Writes postgresql.conf (including the original as postgresql.base.conf), pg_hba.conf and the
    /// recovery settings. `upstream`: `None` = primary; `Some(None)` = standby with no upstream.
    pub fn write_config(
        &self,
        dynamic: &tandem_core::dynamic::DynamicConfig,
        upstream: Option<Option<&Upstream>>,
    ) -> Result<()> {
        let d = &self.data_dir;
        let conf = d.join("postgresql.conf");
        let base = d.join("postgresql.base.conf");
        if !base.exists() {
            if conf.exists() {
                std::fs::rename(&conf, &base)
                    .context("cannot rename postgresql.conf to postgresql.base.conf")?;
            } else {
                write_private(&base, "")?;
            }
        }
        let params = self.parameters(dynamic);
        let mut text = String::from("# Written by tandem. Do not edit: change the cluster configuration (`tandem edit-config`) or the node's YAML.\ninclude 'postgresql.base.conf'\n\n");
        if self.ssn.is_some() {
            text.push_str(SSN_MARKER);
            text.push('\n');
        }
        for (k, v) in &params {
            text.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
        }
        if let Some(up) = upstream {
            text.push_str("recovery_target_timeline = 'latest'\n");
            if let Some(u) = up {
                let conninfo = format!(
                    "host={} port={} user={} passfile={} application_name={} {}",
                    quote_conn(&u.host),
                    u.port,
                    quote_conn(&self.replication.0),
                    quote_conn(&self.pgpass.display().to_string()),
                    quote_conn(&self.name),
                    self.replication_tls
                );
                text.push_str(&format!(
                    "primary_conninfo = '{}'\n",
                    conninfo.replace('\'', "''")
                ));
                if dynamic.use_slots {
                    text.push_str(&format!(
                        "primary_slot_name = '{}'\n",
                        slot_name(&self.name)
                    ));
                }
            }
        }
        write_private(&conf, &text)?;
        let hba = self.hba(dynamic);
        write_private(&d.join("pg_hba.conf"), &(hba.join("\n") + "\n"))?;
        let signal = d.join("standby.signal");
        if upstream.is_some() {
            write_private(&signal, "")?;
        } else if signal.exists() {
            std::fs::remove_file(&signal)?;
        }
        let _ = std::fs::remove_file(d.join("recovery.signal"));
        strip_auto_conf(d)?;
        Ok(())
    }

    /// All parameters: protected defaults ← dynamic ← local, then the ones tandem owns.
    pub fn parameters(
        &self,
        dynamic: &tandem_core::dynamic::DynamicConfig,
    ) -> BTreeMap<String, String> {
        let mut p: BTreeMap<String, String> = PROTECTED
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        p.insert("wal_keep_size".into(), "128MB".into());
        let as_text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => {
                if *b {
                    "on".into()
                } else {
                    "off".into()
                }
            }
            other => other.to_string(),
        };
        for (k, v) in &dynamic.parameters {
            p.insert(k.clone(), as_text(v));
        }
        for (k, v) in &self.local_parameters {
            if PROTECTED.iter().any(|(pk, _)| pk == k) {
                continue; // protected parameters come only from the dynamic configuration
            }
            p.insert(k.clone(), as_text(v));
        }
        p.insert("hot_standby".into(), "on".into());
        p.insert("listen_addresses".into(), self.listen_addresses.clone());
        p.insert("port".into(), self.port.to_string());
        p.insert("cluster_name".into(), self.scope.clone());
        p.entry("unix_socket_directories".into())
            .or_insert_with(|| self.socket_dir.clone());
        if let Some(ssn) = &self.ssn {
            p.insert("synchronous_standby_names".into(), ssn.clone());
        }
        for k in [
            "primary_conninfo",
            "primary_slot_name",
            "recovery_target_timeline",
            "restore_command",
        ] {
            p.remove(k);
        }
        p
    }

    /// pg_hba: tandem's own lines first (the local socket for the superuser, so `psql` on the node works
    /// and the agent can connect), then the configured lines (local config wins over dynamic).
    pub fn hba(&self, dynamic: &tandem_core::dynamic::DynamicConfig) -> Vec<String> {
        let mut lines = vec![
            "# Written by tandem.".to_string(),
            format!("local all {} scram-sha-256", hba_user(&self.superuser.0)),
            format!(
                "local replication {} scram-sha-256",
                hba_user(&self.replication.0)
            ),
        ];
        let configured = if !self.local_hba.is_empty() {
            &self.local_hba
        } else {
            &dynamic.pg_hba
        };
        if configured.is_empty() {
            lines.push("local all all peer".into());
            lines.push(format!(
                "host replication {} 127.0.0.1/32 scram-sha-256",
                hba_user(&self.replication.0)
            ));
            lines.push("host all all 127.0.0.1/32 scram-sha-256".into());
        }
        lines.extend(configured.iter().cloned());
        lines
    }

    fn protected_args(&self, dynamic: &tandem_core::dynamic::DynamicConfig) -> String {
        let p = self.parameters(dynamic);
        PROTECTED
            .iter()
            .filter_map(|(k, _)| p.get(*k).map(|v| format!("-c {k}={v}")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub async fn initdb(&self) -> Result<()> {
        if let Some(parent) = self.data_dir.parent() {
            std::fs::create_dir_all(parent).ok();
        }
        let pwfile = self.data_dir.with_extension("pwfile");
        write_private(&pwfile, &format!("{}\n", self.superuser.1))?;
        let mut args = vec![
            format!("--pgdata={}", self.data_arg()),
            format!("--username={}", self.superuser.0),
            format!("--pwfile={}", pwfile.display()),
            "--auth=scram-sha-256".into(),
        ];
        args.extend(self.initdb_args.iter().cloned());
        let r = self.run("initdb", &args, Duration::from_secs(300)).await;
        let _ = std::fs::remove_file(&pwfile);
        r.map(|_| ())
    }

    pub async fn start(&self, dynamic: &tandem_core::dynamic::DynamicConfig) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.socket_dir).ok();
        let log = self.data_dir.join("log").join("postmaster.log");
        std::fs::create_dir_all(log.parent().unwrap_or(&self.data_dir)).ok();
        let args = vec![
            "start".to_string(),
            "-w".into(),
            "-t".into(),
            self.pg_ctl_timeout.to_string(),
            "-D".into(),
            self.data_arg(),
            "-l".into(),
            log.display().to_string(),
            "-o".into(),
            self.protected_args(dynamic),
        ];
        // pg_ctl starts the postmaster in its own session; it outlives the agent by design.
        match self
            .run(
                "pg_ctl",
                &args,
                Duration::from_secs(self.pg_ctl_timeout + 10),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                // pg_ctl only says "Examine the log output": quote the log's last lines.
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(4).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(e.context(format!(
                    "PostgreSQL did not start; end of {}:\n{}",
                    log.display(),
                    tail.join("\n")
                )))
            }
        }
    }

    /// mode: smart | fast | immediate. Signals the postmaster directly (as pg_ctl does) and polls
    /// every 10 ms for its exit, which saves pg_ctl's 100 ms polling on every hand-over; on timeout
    /// it escalates to an immediate shutdown, then SIGKILL.
    pub async fn stop(&self, mode: &str) -> Result<()> {
        *self.client.lock().await = None;
        let Some(pid) = self.postmaster_pid() else {
            return Ok(());
        };
        let sig = match mode {
            "smart" => libc::SIGTERM,
            "fast" => libc::SIGINT,
            _ => libc::SIGQUIT,
        };
        let gone = |deadline: std::time::Instant| async move {
            while std::time::Instant::now() < deadline {
                if self.postmaster_pid().is_none() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.postmaster_pid().is_none()
        };
        unsafe { libc::kill(pid, sig) };
        if gone(std::time::Instant::now() + Duration::from_secs(self.pg_ctl_timeout)).await {
            return Ok(());
        }
        tracing::warn!(
            "PostgreSQL did not stop ({mode}) within {} s: sending an immediate shutdown",
            self.pg_ctl_timeout
        );
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        if gone(std::time::Instant::now() + Duration::from_secs(10)).await {
            return Ok(());
        }
        unsafe { libc::kill(pid, libc::SIGKILL) };
        if gone(std::time::Instant::now() + Duration::from_secs(5)).await {
            return Ok(());
        }
        bail!("PostgreSQL (pid {pid}) does not stop")
    }

    /// Ends recovery: `pg_promote(false)` then a 10 ms poll of `pg_is_in_recovery()` (pg_ctl and
    /// `pg_promote(true)` poll every 100 ms); falls back to `pg_ctl promote`.
    /// Promotes the server; `_held` is the proof, from an etcd transaction made just before, that
    /// this node holds the leader key under a live lease (there is no other way to promote).
    pub async fn promote(&self, _held: &crate::dcs::LeaderProof) -> Result<()> {
        if let Ok(c) = self.client().await {
            if c.query_one("SELECT pg_promote(false)", &[]).await.is_ok() {
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while std::time::Instant::now() < deadline {
                    match c.query_one("SELECT pg_is_in_recovery()", &[]).await {
                        Ok(row) if !row.get::<_, bool>(0) => return Ok(()),
                        Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        Err(_) => break,
                    }
                }
            }
        }
        let args = vec![
            "promote".to_string(),
            "-w".into(),
            "-t".into(),
            "60".into(),
            "-D".into(),
            self.data_arg(),
        ];
        self.run("pg_ctl", &args, Duration::from_secs(70))
            .await
            .map(|_| ())
    }

    pub async fn reload(&self) -> Result<()> {
        let args = vec!["reload".to_string(), "-D".into(), self.data_arg()];
        self.run("pg_ctl", &args, Duration::from_secs(10))
            .await
            .map(|_| ())
    }

    /// Crash recovery in single-user mode, so pg_rewind finds a cleanly shut down cluster.
    /// A standby's signal file must go first: a single-user server refuses standby mode (the
    /// next start as a replica writes it again).
    pub async fn single_user_recovery(&self) -> Result<()> {
        for signal in ["standby.signal", "recovery.signal"] {
            match std::fs::remove_file(self.data_dir.join(signal)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(anyhow::anyhow!("cannot remove {signal}: {e}")),
            }
        }
        let args = vec![
            "--single".to_string(),
            "-F".into(),
            "-D".into(),
            self.data_arg(),
            "-c".into(),
            "archive_mode=off".into(),
            "template1".into(),
        ];
        self.run("postgres", &args, Duration::from_secs(600))
            .await
            .map(|_| ())
    }

    pub async fn basebackup(&self, from: &Upstream) -> Result<()> {
        self.wipe_data().await?;
        let dsn = format!(
            "host={} port={} user={} dbname={} application_name={} {}",
            quote_conn(&from.host),
            from.port,
            quote_conn(&self.replication.0),
            quote_conn(&self.database),
            quote_conn(&format!("{} clone", self.name)),
            self.replication_tls
        );
        let args = vec![
            format!("--pgdata={}", self.data_arg()),
            "-X".into(),
            "stream".into(),
            "--checkpoint=fast".into(),
            format!("--dbname={dsn}"),
        ];
        let args = [args, self.basebackup_args.clone()].concat();
        let r = self
            .run("pg_basebackup", &args, Duration::from_secs(24 * 3600))
            .await;
        if r.is_err() {
            let _ = self.wipe_data().await;
        }
        r.map(|_| ())
    }

    fn rewind_dsn(&self, from: &Upstream) -> String {
        format!(
            "host={} port={} user={} dbname={} target_session_attrs=read-write {}",
            quote_conn(&from.host),
            from.port,
            quote_conn(&self.rewind.0),
            quote_conn(&self.database),
            self.rewind_tls
        )
    }

    /// Before anything is stopped or rewound: the source answers, with the rewind user's
    /// connection, as a writable primary. `Err` says why not (nothing was touched).
    pub async fn check_rewind_source(&self, from: &Upstream) -> Result<()> {
        let dsn = format!("{} connect_timeout=3", self.rewind_dsn(from));
        let args = vec![
            "-X".to_string(),
            "-A".into(),
            "-t".into(),
            "-d".into(),
            dsn,
            "-c".into(),
            "SELECT pg_is_in_recovery()".into(),
        ];
        let out = self.run("psql", &args, Duration::from_secs(10)).await?;
        match out.trim() {
            "f" => Ok(()),
            other => Err(anyhow!("it answers pg_is_in_recovery() = {other:?}")),
        }
    }

    pub async fn rewind(&self, from: &Upstream) -> Result<()> {
        let dsn = self.rewind_dsn(from);
        let args = vec![
            format!("--target-pgdata={}", self.data_arg()),
            format!("--source-server={dsn}"),
        ];
        self.run("pg_rewind", &args, Duration::from_secs(3600))
            .await
            .map(|_| ())
    }

    /// Removes the data directory (before a clone, or after a failed rewind). On the blocking
    /// pool: removing a large data directory takes seconds, and the agent's runtime (one thread)
    /// also runs the lease keepalive.
    pub async fn wipe_data(&self) -> Result<()> {
        remove_dir_off_runtime(self.data_dir.clone()).await
    }

    /// Moves a broken data directory aside instead of deleting it.
    pub fn move_data_aside(&self) -> Result<PathBuf> {
        let aside = PathBuf::from(format!(
            "{}.failed-{}",
            self.data_dir.display(),
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        ));
        std::fs::rename(&self.data_dir, &aside)?;
        Ok(aside)
    }

    /// The agent's connection settings (local socket, superuser).
    fn conn_config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&self.socket_dir)
            .port(self.port)
            .user(&self.superuser.0)
            .dbname(&self.database)
            .application_name("tandem")
            // The agent's own writes (slots, roles, checkpoints) never wait for a standby: in
            // strict synchronous mode with none left they would hang the HA loop.
            .options("-c synchronous_commit=local")
            .connect_timeout(Duration::from_secs(3));
        if !self.superuser.1.is_empty() {
            cfg.password(&self.superuser.1);
        }
        cfg
    }

    /// Runs `CHECKPOINT` on a connection of its own, in the background (the agent's connection
    /// stays free); `done` is called with whether it completed. A checkpoint requested after a reload
    /// was signalled starts only once the checkpointer has processed that reload: PostgreSQL's
    /// backends learn from the checkpointer whether commits wait for synchronous standbys.
    pub fn checkpoint_in_background(&self, done: impl FnOnce(bool) + Send + 'static) {
        let cfg = self.conn_config();
        tokio::spawn(async move {
            let run = async {
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                client.batch_execute("CHECKPOINT").await
            };
            match tokio::time::timeout(Duration::from_secs(600), run).await {
                Ok(Ok(())) => done(true),
                Ok(Err(e)) => {
                    tracing::warn!(
                        "CHECKPOINT after a synchronous_standby_names change failed: {e}"
                    );
                    done(false)
                }
                Err(_) => {
                    tracing::warn!(
                        "CHECKPOINT after a synchronous_standby_names change took over 600 s"
                    );
                    done(false)
                }
            }
        });
    }

    pub async fn client(&self) -> Result<std::sync::Arc<tokio_postgres::Client>> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let cfg = self.conn_config();
        let (client, conn) =
            tokio::time::timeout(Duration::from_secs(5), cfg.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| anyhow!("connecting to PostgreSQL timed out"))??;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let client = std::sync::Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }

    pub async fn drop_client(&self) {
        *self.client.lock().await = None;
    }

    /// One combined status query per cycle.
    pub async fn status(&self) -> Result<PgStatus> {
        let c = self.client().await?;
        let q = "SELECT pg_is_in_recovery(),
                  CASE WHEN pg_is_in_recovery() THEN 0 ELSE pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint END,
                  pg_wal_lsn_diff(pg_last_wal_receive_lsn(), '0/0')::bigint,
                  pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint,
                  CASE WHEN pg_is_in_recovery() THEN (SELECT received_tli::bigint FROM pg_stat_wal_receiver)
                       ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END,
                  (SELECT status FROM pg_stat_wal_receiver),
                  to_char(pg_postmaster_start_time(), 'YYYY-MM-DD HH24:MI:SS.US') || to_char(pg_postmaster_start_time(), 'OF'),
                  current_setting('server_version_num')::int,
                  to_char(pg_last_xact_replay_timestamp(), 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF'),
                  CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
                  (SELECT timeline_id::bigint FROM pg_control_checkpoint()),
                  (SELECT coalesce(json_object_agg(name, setting), '{}')::text FROM pg_settings WHERE pending_restart AND name NOT LIKE 'recovery_target%' AND name NOT IN ('primary_conninfo', 'primary_slot_name', 'restore_command')),
                  current_setting('synchronous_standby_names'),
                  (SELECT min_recovery_end_timeline::bigint FROM pg_control_recovery())";
        let row = tokio::time::timeout(Duration::from_secs(5), c.query_one(q, &[]))
            .await
            .map_err(|_| anyhow!("status query timed out"))??;
        let in_recovery: bool = row.get(0);
        let flush: i64 = row.get(1);
        let recv: Option<i64> = row.get(2);
        let replay: Option<i64> = row.get(3);
        let tli: Option<i64> = row.get(4);
        let wr_status: Option<String> = row.get(5);
        let checkpoint_tli: Option<i64> = row.get(10);
        let pending: Option<String> = row.get(11);
        let mut st = PgStatus {
            pending_restart: pending
                .and_then(|p| serde_json::from_str(&p).ok())
                .unwrap_or_default(),
            in_recovery,
            receive_lsn: recv.map(|v| v as u64),
            replay_lsn: replay.map(|v| v as u64),
            timeline: tli.or(checkpoint_tli).map(|v| v as u64),
            streaming: wr_status.as_deref() == Some("streaming"),
            postmaster_start_time: row.get(6),
            server_version: row.get::<_, Option<i32>>(7).map(|v| v as u32),
            replayed_timestamp: row.get(8),
            replay_paused: row.get::<_, Option<bool>>(9).unwrap_or(false),
            ssn: row.get::<_, Option<String>>(12).unwrap_or_default(),
            checkpoint_tli: checkpoint_tli.map(|v| v as u64),
            min_recovery_tli: row
                .get::<_, Option<i64>>(13)
                .filter(|v| *v > 0)
                .map(|v| v as u64),
            ..Default::default()
        };
        st.wal_position = if in_recovery {
            st.receive_lsn.unwrap_or(0).max(st.replay_lsn.unwrap_or(0))
        } else {
            flush as u64
        };
        if !in_recovery {
            let rows = c
                .query("SELECT usename::text, application_name, client_addr::text, state, sync_state, sync_priority, pg_wal_lsn_diff(write_lsn, '0/0')::bigint, pg_wal_lsn_diff(flush_lsn, '0/0')::bigint, pg_wal_lsn_diff(replay_lsn, '0/0')::bigint FROM pg_stat_replication", &[])
                .await
                .unwrap_or_default();
            st.replication = rows
                .iter()
                .map(|r| crate::status::ReplicationRow {
                    usename: r.get::<_, Option<String>>(0).unwrap_or_default(),
                    application_name: r.get::<_, Option<String>>(1).unwrap_or_default(),
                    client_addr: r.get(2),
                    state: r.get::<_, Option<String>>(3).unwrap_or_default(),
                    sync_state: r.get::<_, Option<String>>(4).unwrap_or_default(),
                    sync_priority: r.get::<_, Option<i32>>(5).unwrap_or(0),
                    write_lsn: r.get::<_, Option<i64>>(6).map(|v| v as u64),
                    flush_lsn: r.get::<_, Option<i64>>(7).map(|v| v as u64),
                    replay_lsn: r.get::<_, Option<i64>>(8).map(|v| v as u64),
                })
                .collect();
        }
        Ok(st)
    }

    /// Runs SQL that must not be logged (it carries a password).
    pub async fn execute_quiet(&self, sql: &str) -> Result<()> {
        let c = self.client().await?;
        c.batch_execute("SET log_statement TO 'none'; SET log_min_duration_statement TO -1; SET log_min_error_statement TO panic; SET synchronous_commit TO local").await?;
        c.batch_execute(sql).await.map_err(|e| {
            anyhow!(
                "{}",
                e.as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string())
            )
        })
    }

    /// Creates or updates the replication role (and the rewind role when it differs from the superuser).
    pub async fn post_bootstrap(&self) -> Result<()> {
        let (ru, rp) = &self.replication;
        self.execute_quiet(&format!(
            "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {u}) THEN CREATE ROLE {i} REPLICATION LOGIN; END IF; END$$; ALTER ROLE {i} WITH REPLICATION LOGIN PASSWORD {p};",
            u = quote_literal(ru),
            i = quote_ident(ru),
            p = quote_literal(rp)
        ))
        .await?;
        let (wu, wp) = &self.rewind;
        if wu != &self.superuser.0 {
            self.execute_quiet(&format!(
                "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {u}) THEN CREATE ROLE {i} LOGIN; END IF; END$$; ALTER ROLE {i} WITH LOGIN PASSWORD {p};
                 GRANT EXECUTE ON function pg_catalog.pg_ls_dir(text, boolean, boolean) TO {i};
                 GRANT EXECUTE ON function pg_catalog.pg_stat_file(text, boolean) TO {i};
                 GRANT EXECUTE ON function pg_catalog.pg_read_binary_file(text) TO {i};
                 GRANT EXECUTE ON function pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {i};",
                u = quote_literal(wu),
                i = quote_ident(wu),
                p = quote_literal(wp)
            ))
            .await?;
        }
        Ok(())
    }

    /// Keeps one physical slot per other member (a primary's job); drops slots of members that left.
    pub async fn sync_slots(&self, members: &[String]) -> Result<()> {
        let c = self.client().await?;
        let want: Vec<String> = members
            .iter()
            .filter(|m| **m != self.name)
            .map(|m| slot_name(m))
            .collect();
        let rows = c.query("SELECT slot_name::text, active FROM pg_replication_slots WHERE slot_type = 'physical'", &[]).await?;
        let have: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for w in &want {
            if !have.iter().any(|(h, _)| h == w) {
                c.execute("SELECT pg_create_physical_replication_slot($1, true)", &[w])
                    .await
                    .map(|_| ())
                    .or_else(|e| {
                        if e.to_string().contains("already exists") {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })?;
            }
        }
        for (h, active) in have {
            if !active && !want.contains(&h) {
                let _ = c
                    .execute("SELECT pg_drop_replication_slot($1)", &[&h])
                    .await;
            }
        }
        Ok(())
    }

    /// Timeline history of the current timeline: (parent timeline, switch LSN, reason) per line.
    pub fn timeline_history(&self, timeline: u64) -> Vec<(u64, u64, String)> {
        let path = self
            .data_dir
            .join("pg_wal")
            .join(format!("{:08X}.history", timeline));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, '\t');
                let tli = parts.next()?.trim().parse().ok()?;
                let lsn = tandem_core::lsn::Lsn::parse(parts.next()?)?.0;
                Some((tli, lsn, parts.next().unwrap_or("").trim().to_string()))
            })
            .collect()
    }
}

/// State `Z` (zombie) or `X` (dead) in /proc/PID/stat.
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|st| st == "Z" || st == "X")
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tandem-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Recovery settings must not linger in postgresql.auto.conf (they would override ours).
fn strip_auto_conf(dir: &Path) -> Result<()> {
    let p = dir.join("postgresql.auto.conf");
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(());
    };
    let keep: Vec<&str> = text
        .lines()
        .filter(|l| {
            let k = l.split('=').next().unwrap_or("").trim();
            !matches!(
                k,
                "primary_conninfo"
                    | "primary_slot_name"
                    | "recovery_target_timeline"
                    | "standby_mode"
                    | "restore_command"
            )
        })
        .collect();
    if keep.len() != text.lines().count() {
        write_private(&p, &(keep.join("\n") + "\n"))?;
    }
    Ok(())
}

fn quote_conn(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c))
    {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

fn hba_user(u: &str) -> String {
    if u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        u.to_string()
    } else {
        format!("\"{}\"", u.replace('"', "\"\""))
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// PID of a live postmaster on `data_dir`, from its postmaster.pid (a zombie does not count).
pub fn postmaster_pid_of(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let dir = lines.next()?.trim();
    if pid <= 0
        || Path::new(dir) != data_dir
            && std::fs::canonicalize(dir).ok() != std::fs::canonicalize(data_dir).ok()
    {
        return None;
    }

    // kill(pid, 0): exists (EPERM also means it exists, under another user) — but a zombie
    // (a dead postmaster nobody reaped yet) is not a running server.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if exists && !is_zombie(pid) {
        Some(pid)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {

    /// Trust issue point 9: removing a large data directory must not stop the agent's
    /// single-threaded runtime, which also sends the lease keepalives.
    #[test]
    fn removing_a_data_directory_leaves_the_runtime_running() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        for d in 0..40 {
            let sub = data.join(format!("base/{d}"));
            std::fs::create_dir_all(&sub).unwrap();
            for f in 0..1500 {
                std::fs::write(sub.join(f.to_string()), b"x").unwrap();
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (took, worst_gap) = rt.block_on(async {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let ticker = {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut worst = Duration::ZERO;
                    let mut last = std::time::Instant::now();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        worst = worst.max(last.elapsed());
                        last = std::time::Instant::now();
                    }
                    worst
                })
            };
            tokio::task::yield_now().await;
            let t0 = std::time::Instant::now();
            remove_dir_off_runtime(data.clone()).await.unwrap();
            let took = t0.elapsed();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            (took, ticker.await.unwrap())
        });
        assert!(!data.exists());
        // The removal itself takes far longer than the ticker's worst gap: the thread was free.
        assert!(
            worst_gap < Duration::from_millis(250) || worst_gap < took / 3,
            "the runtime stalled {worst_gap:?} during a {took:?} removal"
        );
    }

    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_conn("127.0.0.1"), "127.0.0.1");
        assert_eq!(quote_conn("a b'c"), "'a b\\'c'");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(hba_user("post-gres"), "\"post-gres\"");
    }

    /// A role's TLS settings reach its connection strings; without any, libpq's defaults are
    /// written out (so PGSSLMODE in the agent's environment cannot change them).
    #[test]
    fn a_roles_tls_settings_reach_its_connection_strings() {
        let mut c = crate::config::PgCredentials {
            username: "replicator".into(),
            password: None,
            sslmode: None,
            sslcert: None,
            sslkey: None,
            sslrootcert: None,
            sslpassword: None,
            extra: Default::default(),
        };
        assert_eq!(
            libpq_tls(&c),
            "sslmode=prefer gssencmode=prefer channel_binding=prefer"
        );
        c.sslmode = Some("verify-full".into());
        c.sslrootcert = Some("/etc/tandem/certs/ca.crt".into());
        c.sslcert = Some("/etc/my certs/client.crt".into());
        c.extra.insert("channel_binding".into(), "require".into());
        c.extra.insert("sslcrl".into(), "/crl.pem".into());
        assert_eq!(
            libpq_tls(&c),
            "sslmode=verify-full gssencmode=prefer channel_binding=require \
             sslrootcert=/etc/tandem/certs/ca.crt sslcert='/etc/my certs/client.crt' sslcrl=/crl.pem"
        );
    }
}
