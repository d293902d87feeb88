//! The seed's cluster on the files of one `tandem certs issue` (issue 14, "Must show").
//!
//! As root, on network namespaces (tests/netlab): three database hosts postgres-01..03, each a
//! namespace with its own address and the usual ports, and a client namespace that plays
//! haproxy-01. The test:
//!
//! 1. runs `tandem certs issue` once for the seed's six hosts (the three database hosts at
//!    their namespace addresses; haproxy-01 at the client namespace's, haproxy-02/03 at lab
//!    addresses where nothing runs), with `--owner` and `--etcd-owner` the lab's run-as user
//!    `tandem`, which runs etcd, PostgreSQL and the agents here (the seed has `etcd` and
//!    `postgres`);
//! 2. starts etcd on each database host itself, with the seed's `/etc/etcd/etcd.env` (§6) as
//!    `ETCD_*` variables: the addresses, the data directory and the three file paths (the
//!    host's `etcd.crt`, `etcd.key` and `ca.crt` from `tandem certs`) changed, every other
//!    setting as in the seed, client and peer certificate authentication included; a router's
//!    client certificate (haproxy-01's, with etcdctl from the client namespace) checks health;
//! 3. writes each host's configuration from the seed's `config.yml` (§7, [`SEED_CONFIG`]),
//!    changing exactly what [`CHANGED`] lists, each with its reason; the certificate paths are
//!    read from the lines `tandem certs` printed for the host. Every key of each written file
//!    is compared with the seed's, and any other difference fails the test;
//! 4. starts the agents in the seed's order (§8: postgres-01, then the two others) and checks,
//!    without waiting for any timer (ttl 30 and loop_wait 10 stay; nothing fails over):
//!    - `GET /cluster` over HTTPS on each host, from the client namespace, verified against
//!      the CA with the host's address as the name: one leader, two streaming replicas;
//!    - `tandem -c <host's file> list` inside postgres-01's namespace (as the seed runs
//!      `sudo patronictl -c /etc/patroni/config.yml list`): the three members;
//!    - `psql` from the client namespace with `sslmode=verify-full` against each host (so each
//!      presents its own `postgresql.crt` with its address); on the leader, `pg_stat_ssl`
//!      shows both walsenders with `ssl = t`;
//!    - a row written on the leader is read on both replicas;
//!    - `GET /config`: the seed's ttl 30, loop_wait 10, retry_timeout 10 and
//!      maximum_lag_on_failover; on each host the seed's shared_buffers and its six `hostssl`
//!      md5 lines are in effect.
//!
//! The lab (`tandem::lab`) provides the run-as user, the directories and the agents' start and
//! stop; its own TLS is off (`LabOptions::tls` false): etcd, the REST API and PostgreSQL use only
//! the files of the one `tandem certs` command. The written files are the seed's YAML read and
//! written again (comments dropped, key order kept).
//!
//! Every process is stopped by its PID, pass or fail (the lab's agents and postmasters by
//! `Lab::stop_all`, etcd by [`Etcd`]'s `Drop`), then the namespaces are deleted (NetLab).
//! Skips when not root or without network namespaces, except with CI=true.
//! `TANDEM_KEEP_LAB=1` keeps the files (logs, configurations, certificates) in /tmp.

// The partition test's faults (cut, heal) are not used here.
#[allow(dead_code)]
mod netlab;

use netlab::NetLab;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem::lab::{in_netns, wait_until, Lab, LabOptions, NetnsHost};

/// The seed's §7 configuration (`/etc/patroni/config.yml` of postgres-01, 192.168.0.203), keys
/// and values as the seed writes them, its explanatory comments left out. The seed's hosts are
/// postgres-01..03 at 192.168.0.203..205; its members are named postgresql-01..03.
const SEED_CONFIG: &str = r#"
scope: postgresql-cluster
namespace: /service/
name: postgresql-01

etcd3:
  hosts: 192.168.0.203:2379,192.168.0.204:2379,192.168.0.205:2379
  protocol: https
  cacert: /etc/etcd/certs/ca.crt
  cert: /etc/etcd/certs/etcd-node1.crt
  key: /etc/etcd/certs/etcd-node1.key

restapi:
  listen: 0.0.0.0:8008
  connect_address: 192.168.0.203:8008
  certfile: /etc/etcd/certs/server.pem

bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      parameters:
        ssl: 'on'
        ssl_cert_file: /etc/etcd/certs/server.crt
        ssl_key_file: /etc/etcd/certs/server.key
      pg_hba:
        - hostssl replication replicator 127.0.0.1/32 md5
        - hostssl replication replicator 192.168.0.203/32 md5
        - hostssl replication replicator 192.168.0.204/32 md5
        - hostssl replication replicator 192.168.0.205/32 md5
        - hostssl all all 127.0.0.1/32 md5
        - hostssl all all 0.0.0.0/0 md5

  initdb:
    - encoding: UTF8
    - data-checksums

postgresql:
  listen: 0.0.0.0:5432
  connect_address: 192.168.0.203:5432
  data_dir: /var/lib/postgresql/data
  bin_dir: /usr/lib/postgresql/18/bin
  authentication:
    superuser:
      username: postgres
      password: strongpassword
    replication:
      username: replicator
      password: replpassword
  parameters:
    max_connections: 100
    shared_buffers: 256MB

tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false

ctl:
  insecure: true
"#;

/// Every key of a host's configuration that differs from [`SEED_CONFIG`], and why. Nothing
/// else may differ.
const CHANGED: &[(&str, &str)] = &[
    ("name", "the seed's own rule: postgresql-02 and -03 on the other hosts (not on postgres-01)"),
    ("etcd3.hosts", "addresses"),
    ("etcd3.cacert", "tandem certs: the host's ca.crt"),
    ("etcd3.cert", "tandem certs: the host's client.crt"),
    ("etcd3.key", "tandem certs: the host's client.key"),
    ("restapi.connect_address", "address"),
    ("restapi.certfile", "tandem certs: the host's restapi.crt"),
    (
        "restapi.keyfile",
        "added: tandem certs writes the key apart (restapi.key), where the seed combines both in server.pem",
    ),
    (
        "bootstrap.dcs.postgresql.parameters.ssl_cert_file",
        "tandem certs: the host's postgresql.crt",
    ),
    (
        "bootstrap.dcs.postgresql.parameters.ssl_key_file",
        "tandem certs: the host's postgresql.key",
    ),
    ("bootstrap.dcs.postgresql.pg_hba[1]", "address"),
    ("bootstrap.dcs.postgresql.pg_hba[2]", "address"),
    ("bootstrap.dcs.postgresql.pg_hba[3]", "address"),
    ("postgresql.connect_address", "address"),
    ("postgresql.data_dir", "a directory per host in the lab's directory"),
    ("postgresql.bin_dir", "PostgreSQL 15 here, 18 in the seed"),
    (
        "postgresql.pgpass",
        "added: the hosts share one filesystem and one run-as user, so the default (~/pgpass) would be one file for three agents",
    ),
    (
        "postgresql.parameters.unix_socket_directories",
        "added: the hosts share one filesystem, so three postmasters on port 5432 need a socket directory each",
    ),
    (
        "postgresql.parameters.ssl_cert_file",
        "added: on one filesystem the hosts' files have different paths, and bootstrap.dcs holds the first leader's; the local value gives each host its own certificate (on real hosts, one --target-dir path serves all)",
    ),
    (
        "postgresql.parameters.ssl_key_file",
        "added: as ssl_cert_file",
    ),
];

const HOSTS: usize = 3;
const DB: [&str; HOSTS] = ["postgres-01", "postgres-02", "postgres-03"];
const MEMBERS: [&str; HOSTS] = ["postgresql-01", "postgresql-02", "postgresql-03"];
const SEED_ADDRS: [&str; HOSTS] = ["192.168.0.203", "192.168.0.204", "192.168.0.205"];
/// The router the client namespace plays; the other two are only issued.
const CLIENT_ROUTER: &str = "haproxy-01";
const SUPERUSER_PASSWORD: &str = "strongpassword";

const ETCD_DEADLINE: Duration = Duration::from_secs(30);
/// initdb and the first leader.
const LEADER_DEADLINE: Duration = Duration::from_secs(40);
/// Two base backups and streaming.
const WHOLE_DEADLINE: Duration = Duration::from_secs(60);
const READ_DEADLINE: Duration = Duration::from_secs(20);
const LOG_TAIL: usize = 30;

#[test]
fn the_seeds_config_runs_a_cluster_on_the_files_of_one_tandem_certs_command() {
    if !netlab::can_run("seed_tls") {
        return;
    }
    let started = Instant::now();
    let mut sl = SeedLab::prepare();
    let certs = sl.issue_certs();

    // etcd with the seed's settings on tandem certs' files.
    sl.start_etcd(&certs);
    let router = certs.join(CLIENT_ROUTER);
    wait_until(ETCD_DEADLINE, "etcd healthy on all three hosts", || {
        sl.etcdctl(&router, &["endpoint", "health"]).ok()
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}; last etcdctl: {:?}",
            sl.etcdctl(&router, &["endpoint", "health"]).err()
        )
    });
    println!(
        "seed_tls: etcd healthy after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The seed's configuration on every host, then the agents in the seed's order.
    let seed: Yaml = serde_yaml::from_str(SEED_CONFIG).expect("the seed's configuration");
    for i in 0..HOSTS {
        let cfg = sl.host_config(&seed, i, &certs);
        check_only_listed_changes(&seed, &cfg, i);
        sl.write_config(i, &cfg);
    }
    sl.lab.start_agent(0).expect("start postgres-01's agent");
    let ca = certs.join(DB[0]).join("ca.crt");
    wait_until(LEADER_DEADLINE, "postgresql-01 to lead", || {
        sl.cluster(0, &ca)
            .ok()
            .filter(|c| c.leader.as_deref() == Some(MEMBERS[0]))
    })
    .unwrap_or_else(|e| panic!("{e:#}; last view: {:?}", sl.cluster(0, &ca)));
    println!(
        "seed_tls: postgresql-01 leads after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for i in 1..HOSTS {
        sl.lab.start_agent(i).expect("start an agent");
    }
    wait_until(
        WHOLE_DEADLINE,
        "one leader and two streaming replicas",
        || {
            sl.cluster(0, &ca)
                .ok()
                .filter(|c| c.members.len() == HOSTS && c.streaming.len() == HOSTS - 1)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}; last view: {:?}", sl.cluster(0, &ca)));
    println!(
        "seed_tls: one leader and two streaming replicas after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // GET /cluster on every host, over HTTPS verified with the host's address as the name.
    for (i, host) in DB.iter().enumerate() {
        let view = sl
            .cluster(i, &ca)
            .unwrap_or_else(|e| panic!("GET /cluster on {host}: {e:#}"));
        assert_eq!(view.leader.as_deref(), Some(MEMBERS[0]), "{view:?}");
        assert_eq!(view.streaming.len(), HOSTS - 1, "{view:?}");
    }

    // `tandem list` inside postgres-01, as root, with its configuration file.
    let list = sl.tandem_list(0);
    let rows: Vec<Json> =
        serde_json::from_str(&list).unwrap_or_else(|e| panic!("tandem list -f json: {e}: {list}"));
    let mut names: Vec<&str> = rows.iter().filter_map(|r| r["Member"].as_str()).collect();
    names.sort();
    assert_eq!(names, MEMBERS, "tandem list: {list}");
    assert_eq!(
        rows.iter().filter(|r| r["Role"] == "Leader").count(),
        1,
        "tandem list: {list}"
    );

    // The seed's timing is the cluster's dynamic configuration.
    let addr = SocketAddr::new(sl.net.ip(0).into(), 8008);
    let (code, body) = https_get(&sl.net.client(), &ca, addr, "/config").expect("GET /config");
    let config: Json = serde_json::from_str(&body).expect("GET /config is JSON");
    assert_eq!(code, 200, "{body}");
    for (key, value) in [
        ("ttl", 30),
        ("loop_wait", 10),
        ("retry_timeout", 10),
        ("maximum_lag_on_failover", 1048576),
    ] {
        assert_eq!(config[key], value, "GET /config: {key} in {body}");
    }

    // PostgreSQL over TLS, verified, on every host: the client's own connection over TLS, the
    // host's own certificate, the seed's parameters (max_connections is taken from the dynamic
    // configuration only, as Patroni does: the local 100 is ignored with a warning, and 100 is
    // the default) and its six hostssl md5 lines.
    for (i, host) in DB.iter().enumerate() {
        let seen = sl
            .psql(
                i,
                &ca,
                "SELECT s.ssl::text || ' ' || current_setting('ssl_cert_file') || ' ' || \
                 current_setting('shared_buffers') || ' ' || \
                 current_setting('max_connections') || ' ' || \
                 (SELECT count(*) FROM pg_hba_file_rules \
                  WHERE type = 'hostssl' AND auth_method = 'md5') \
                 FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
            )
            .unwrap_or_else(|e| panic!("psql verify-full to {host}: {e}"));
        let own_cert = certs.join(host).join("postgresql.crt");
        assert_eq!(
            seen,
            format!("true {} 256MB 100 6", own_cert.display()),
            "{host}: TLS, its own certificate, the seed's parameters and pg_hba"
        );
    }
    let walsenders = sl
        .psql(
            0,
            &ca,
            "SELECT r.application_name || ' ' || r.state || ' ' || s.ssl::text || ' ' || s.version \
             FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) ORDER BY 1",
        )
        .expect("pg_stat_replication on the leader");
    println!("seed_tls: walsenders on postgresql-01:\n{walsenders}");
    let lines: Vec<&str> = walsenders.lines().collect();
    assert_eq!(lines.len(), 2, "two walsenders: {walsenders}");
    for (l, member) in lines.iter().zip(&MEMBERS[1..]) {
        assert!(
            l.starts_with(&format!("{member} streaming true TLS")),
            "walsender of {member} not streaming over TLS: {l}"
        );
    }

    // A write on the leader, read on both replicas.
    sl.psql(
        0,
        &ca,
        "CREATE TABLE seed_tls(note text); INSERT INTO seed_tls VALUES ('written on postgresql-01')",
    )
    .expect("write on the leader");
    for (i, host) in DB.iter().enumerate().skip(1) {
        wait_until(READ_DEADLINE, "the leader's row on a replica", || {
            sl.psql(i, &ca, "SELECT note FROM seed_tls")
                .ok()
                .filter(|n| n == "written on postgresql-01")
        })
        .unwrap_or_else(|e| panic!("{host}: {e:#}"));
    }
    println!(
        "seed_tls: passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let stopping = Instant::now();
    drop(sl);
    println!(
        "seed_tls: everything stopped and removed in {:.1} s",
        stopping.elapsed().as_secs_f64()
    );
}

// --- the lab -------------------------------------------------------------------------------

/// The namespaces, the lab (run-as user, directories, agents) and etcd. Dropped pass or fail:
/// on a failure the ends of the logs are printed; then the agents and postmasters stop, then
/// etcd, then the namespaces go (field order is drop order).
struct SeedLab {
    lab: Lab,
    etcd: Etcd,
    net: NetLab,
}

impl Drop for SeedLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self
                .lab
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.log_path.clone()))
                .chain(self.etcd.logs.clone());
            for (what, path) in logs {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "---- {what} ({}), last {LOG_TAIL} lines ----\n{}",
                    path.display(),
                    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
                );
            }
        }
    }
}

impl SeedLab {
    /// Namespaces and a lab on them (creates the run-as user); starts nothing.
    fn prepare() -> SeedLab {
        let net = NetLab::new(HOSTS);
        let mut opts = LabOptions::new(net.dir.join("lab"));
        opts.tandem_exe = Some(env!("CARGO_BIN_EXE_tandem").into());
        opts.netns = (0..HOSTS)
            .map(|i| NetnsHost {
                netns: net.ns(i),
                addr: net.ip(i),
            })
            .collect();
        let lab = Lab::prepare(opts).expect("prepare the lab");
        SeedLab {
            lab,
            etcd: Etcd::default(),
            net,
        }
    }

    /// `tandem certs issue` for the seed's six hosts, once; returns the directory.
    fn issue_certs(&self) -> PathBuf {
        let dir = self.net.dir.join("certs");
        let user = self.lab.user.name.clone();
        let mut args: Vec<String> = ["certs", "issue", "--dir"]
            .map(String::from)
            .into_iter()
            .chain([dir.display().to_string()])
            .chain(["--owner".into(), user.clone(), "--etcd-owner".into(), user])
            .collect();
        for (i, h) in DB.iter().enumerate() {
            args.extend(["--db".into(), format!("{h}={}", self.net.ip(i))]);
        }
        // haproxy-01 is the client namespace; nothing runs at the other two addresses.
        let client = self.net.client_ip();
        let routers = [
            ("haproxy-01", client.to_string()),
            ("haproxy-02", format!("10.99.0.{}", client.octets()[3] + 1)),
            ("haproxy-03", format!("10.99.0.{}", client.octets()[3] + 2)),
        ];
        for (h, a) in &routers {
            args.extend(["--router".into(), format!("{h}={a}")]);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(&args)
            .output()
            .expect("run tandem certs issue");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "tandem {}: {}\n{stdout}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("seed_tls: tandem {}\n{stdout}", args.join(" "));
        std::fs::write(dir.join("issue.out"), &stdout).expect("keep the printed lines");
        dir
    }

    /// Starts etcd on each database host as the run-as user, configured as the seed's
    /// `/etc/etcd/etcd.env` (§6) does.
    fn start_etcd(&mut self, certs: &Path) {
        let ip = |i: usize| self.net.ip(i);
        let initial_cluster = (0..HOSTS)
            .map(|i| format!("{}=https://{}:2380", MEMBERS[i], ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..HOSTS {
            let m = &self.lab.etcd[i];
            let files = certs.join(DB[i]);
            let f = |n: &str| files.join(n).display().to_string();
            // The seed's §6 step 1: the data directory, owned by the user etcd runs as.
            mkdir_owned(&m.data_dir, &self.lab);
            let log = File::create(&m.log_path).expect("etcd log");
            let mut cmd = Command::new(&self.lab.etcd_bin);
            cmd.env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("HOME", &self.lab.user.home)
                .env("ETCD_NAME", MEMBERS[i])
                .env("ETCD_DATA_DIR", &m.data_dir)
                .env("ETCD_INITIAL_CLUSTER", &initial_cluster)
                .env("ETCD_INITIAL_CLUSTER_STATE", "new")
                .env("ETCD_INITIAL_CLUSTER_TOKEN", "etcd-cluster")
                .env(
                    "ETCD_INITIAL_ADVERTISE_PEER_URLS",
                    format!("https://{}:2380", ip(i)),
                )
                .env("ETCD_LISTEN_PEER_URLS", "https://0.0.0.0:2380")
                .env("ETCD_LISTEN_CLIENT_URLS", "https://0.0.0.0:2379")
                .env(
                    "ETCD_ADVERTISE_CLIENT_URLS",
                    format!("https://{}:2379", ip(i)),
                )
                .env("ETCD_CLIENT_CERT_AUTH", "true")
                .env("ETCD_TRUSTED_CA_FILE", f("ca.crt"))
                .env("ETCD_CERT_FILE", f("etcd.crt"))
                .env("ETCD_KEY_FILE", f("etcd.key"))
                .env("ETCD_PEER_CLIENT_CERT_AUTH", "true")
                .env("ETCD_PEER_TRUSTED_CA_FILE", f("ca.crt"))
                .env("ETCD_PEER_CERT_FILE", f("etcd.crt"))
                .env("ETCD_PEER_KEY_FILE", f("etcd.key"))
                .current_dir(&m.data_dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("etcd log"))
                .stderr(log);
            let user = (self.lab.user.uid, self.lab.user.gid);
            enter_on_exec(&mut cmd, &self.net.ns(i), Some(user));
            let child = cmd.spawn().expect("start etcd");
            self.etcd
                .logs
                .push((format!("etcd {}", MEMBERS[i]), m.log_path.clone()));
            self.etcd.children.push(child);
        }
    }

    /// etcdctl from the client namespace with `router`'s client certificate, against the three
    /// members: stdout, or what went wrong.
    fn etcdctl(&self, router: &Path, args: &[&str]) -> Result<String, String> {
        let endpoints = (0..HOSTS)
            .map(|i| format!("https://{}:2379", self.net.ip(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut cmd = Command::new(self.lab.etcd_bin.with_file_name("etcdctl"));
        cmd.env_clear()
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--cacert={}", router.join("ca.crt").display()))
            .arg(format!("--cert={}", router.join("client.crt").display()))
            .arg(format!("--key={}", router.join("client.key").display()))
            .args(["--dial-timeout=2s", "--command-timeout=3s"])
            .args(args);
        output(&mut cmd, &self.net.client())
    }

    /// Host `i`'s configuration: the seed's, changed as [`CHANGED`] says.
    fn host_config(&self, seed: &Yaml, i: usize, certs: &Path) -> Yaml {
        let printed = std::fs::read_to_string(certs.join("issue.out")).expect("printed lines");
        let lines = snippet(&printed, DB[i]);
        let printed_path = |keys: &[&str]| -> Yaml {
            let v = get(&lines, keys)
                .unwrap_or_else(|| panic!("{}: no {} in the printed lines", DB[i], keys.join(".")));
            let p = v.as_str().expect("a path");
            assert!(Path::new(p).is_file(), "{p} (printed for {}) exists", DB[i]);
            v.clone()
        };
        let node = &self.lab.nodes[i];
        let s = |v: String| Yaml::String(v);
        let p = |v: &Path| Yaml::String(v.display().to_string());
        let ip = self.net.ip(i);
        let mut c = seed.clone();
        set(&mut c, &["name"], s(MEMBERS[i].into()));
        let hosts = (0..HOSTS)
            .map(|k| format!("{}:2379", self.net.ip(k)))
            .collect::<Vec<_>>()
            .join(",");
        set(&mut c, &["etcd3", "hosts"], s(hosts));
        for k in ["cacert", "cert", "key"] {
            set(&mut c, &["etcd3", k], printed_path(&["etcd3", k]));
        }
        set(
            &mut c,
            &["restapi", "connect_address"],
            s(format!("{ip}:8008")),
        );
        for k in ["certfile", "keyfile"] {
            set(&mut c, &["restapi", k], printed_path(&["restapi", k]));
        }
        for k in ["ssl_cert_file", "ssl_key_file"] {
            let v = printed_path(&["postgresql", "parameters", k]);
            set(
                &mut c,
                &["bootstrap", "dcs", "postgresql", "parameters", k],
                v.clone(),
            );
            set(&mut c, &["postgresql", "parameters", k], v);
        }
        let hba = get_mut(&mut c, &["bootstrap", "dcs", "postgresql", "pg_hba"])
            .and_then(Yaml::as_sequence_mut)
            .expect("the seed's pg_hba");
        for line in hba.iter_mut() {
            let mut text = line.as_str().expect("a pg_hba line").to_string();
            for (k, seed_addr) in SEED_ADDRS.iter().enumerate() {
                text = text.replace(&format!(" {seed_addr}/"), &format!(" {}/", self.net.ip(k)));
            }
            *line = s(text);
        }
        set(
            &mut c,
            &["postgresql", "connect_address"],
            s(format!("{ip}:5432")),
        );
        set(&mut c, &["postgresql", "data_dir"], p(&node.data_dir));
        set(&mut c, &["postgresql", "bin_dir"], p(&self.lab.pg_bin));
        set(&mut c, &["postgresql", "pgpass"], p(&node.pgpass));
        set(
            &mut c,
            &["postgresql", "parameters", "unix_socket_directories"],
            p(&node.run_dir),
        );
        c
    }

    /// Writes host `i`'s configuration where the lab's agent reads it (mode 0600, owned by the
    /// run-as user).
    fn write_config(&self, i: usize, cfg: &Yaml) {
        let path = &self.lab.nodes[i].config_path;
        let text = format!(
            "# The seed's config.yml (§7) for {}, changed only as tests/seed_tls.rs CHANGED says.\n{}",
            DB[i],
            serde_yaml::to_string(cfg).expect("YAML")
        );
        std::fs::write(path, text).expect("write the configuration");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let u = &self.lab.user;
        std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)).unwrap();
    }

    /// `GET /cluster` on host `i`'s REST API from the client namespace, over HTTPS verified
    /// with `ca` and the host's address as the name.
    fn cluster(&self, i: usize, ca: &Path) -> anyhow::Result<ClusterView> {
        let addr = SocketAddr::new(self.net.ip(i).into(), 8008);
        let (code, body) = https_get(&self.net.client(), ca, addr, "/cluster")?;
        anyhow::ensure!(code == 200, "GET /cluster on {addr}: {code} {body}");
        ClusterView::parse(&serde_json::from_str(&body)?)
    }

    /// `tandem -c <host i's file> list -f json` inside host `i`'s namespace, as root.
    fn tandem_list(&self, i: usize) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.arg("-c")
            .arg(&self.lab.nodes[i].config_path)
            .args(["list", "-f", "json"]);
        let pretty = {
            let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
            c.arg("-c").arg(&self.lab.nodes[i].config_path).arg("list");
            output(&mut c, &self.net.ns(i)).unwrap_or_else(|e| panic!("tandem list: {e}"))
        };
        println!(
            "seed_tls: tandem -c {} list\n{pretty}",
            self.lab.nodes[i].config_path.display()
        );
        output(&mut cmd, &self.net.ns(i)).unwrap_or_else(|e| panic!("tandem list -f json: {e}"))
    }

    /// `psql` from the client namespace to host `i` as the seed's superuser, with
    /// `sslmode=verify-full` against `ca`: trimmed stdout, or stderr.
    fn psql(&self, i: usize, ca: &Path, sql: &str) -> Result<String, String> {
        let conninfo = format!(
            "host={} port=5432 user=postgres dbname=postgres sslmode=verify-full sslrootcert={} \
             connect_timeout=3",
            self.net.ip(i),
            ca.display()
        );
        let mut cmd = Command::new(self.lab.pg_bin.join("psql"));
        cmd.env_clear()
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env("PGOPTIONS", "-c statement_timeout=5000")
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &conninfo,
                "-c",
                sql,
            ]);
        output(&mut cmd, &self.net.client()).map(|s| s.trim().to_string())
    }
}

/// The etcd members this test started, stopped by PID when dropped, pass or fail: SIGKILL, as
/// the lab stops its own etcd (its data is thrown away; on SIGTERM the last member left without
/// quorum takes seconds to exit).
#[derive(Default)]
struct Etcd {
    children: Vec<Child>,
    logs: Vec<(String, PathBuf)>,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill(); // SIGKILL to this PID
            let _ = c.wait();
        }
    }
}

/// Who leads and who streams, as `GET /cluster` says.
#[derive(Debug)]
struct ClusterView {
    leader: Option<String>,
    streaming: Vec<String>,
    /// `name role state` of every member.
    members: Vec<String>,
}

impl ClusterView {
    fn parse(doc: &Json) -> anyhow::Result<ClusterView> {
        let members = doc["members"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no members in {doc}"))?;
        let s = |m: &Json, k: &str| m[k].as_str().unwrap_or("?").to_string();
        Ok(ClusterView {
            leader: members
                .iter()
                .find(|m| m["role"] == "leader" && m["state"] == "running")
                .map(|m| s(m, "name")),
            streaming: members
                .iter()
                .filter(|m| m["role"] != "leader" && m["state"] == "streaming")
                .map(|m| s(m, "name"))
                .collect(),
            members: members
                .iter()
                .map(|m| format!("{} {} {}", s(m, "name"), s(m, "role"), s(m, "state")))
                .collect(),
        })
    }
}

// --- the configuration ---------------------------------------------------------------------

/// Fails unless `cfg` differs from `seed` in exactly the keys [`CHANGED`] lists (host 0 keeps
/// the seed's `name`).
fn check_only_listed_changes(seed: &Yaml, cfg: &Yaml, i: usize) {
    let mut found = Vec::new();
    differences(seed, cfg, "", &mut found);
    let expected: Vec<String> = CHANGED
        .iter()
        .map(|(k, _)| k.to_string())
        .filter(|k| i > 0 || k != "name")
        .collect();
    let unlisted: Vec<&String> = found.iter().filter(|k| !expected.contains(k)).collect();
    let unchanged: Vec<&String> = expected.iter().filter(|k| !found.contains(k)).collect();
    assert!(
        unlisted.is_empty() && unchanged.is_empty(),
        "{}: differs from the seed in keys CHANGED does not list: {unlisted:?}; listed but \
         unchanged: {unchanged:?}",
        DB[i]
    );
}

/// The paths (`a.b[2].c`) where `a` and `b` differ: a value changed, or a key only on one side.
fn differences(a: &Yaml, b: &Yaml, at: &str, out: &mut Vec<String>) {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match (a, b) {
        (Yaml::Mapping(x), Yaml::Mapping(y)) => {
            let keys = x.keys().chain(y.keys().filter(|k| !x.contains_key(*k)));
            for k in keys {
                let name = join(k.as_str().unwrap_or("?"));
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => differences(u, v, &name, out),
                    _ => out.push(name),
                }
            }
        }
        (Yaml::Sequence(x), Yaml::Sequence(y)) if x.len() == y.len() => {
            for (n, (u, v)) in x.iter().zip(y).enumerate() {
                differences(u, v, &format!("{at}[{n}]"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(at.to_string()),
    }
}

fn get<'a>(v: &'a Yaml, keys: &[&str]) -> Option<&'a Yaml> {
    keys.iter().try_fold(v, |v, k| v.get(*k))
}

fn get_mut<'a>(v: &'a mut Yaml, keys: &[&str]) -> Option<&'a mut Yaml> {
    keys.iter().try_fold(v, |v, k| v.get_mut(*k))
}

/// Sets `keys` to `value`, adding the mappings on the way.
fn set(v: &mut Yaml, keys: &[&str], value: Yaml) {
    let (last, parents) = keys.split_last().expect("a key");
    let mut m = v;
    for k in parents {
        m = m
            .as_mapping_mut()
            .expect("a mapping")
            .entry(Yaml::String(k.to_string()))
            .or_insert_with(|| Yaml::Mapping(Default::default()));
    }
    m.as_mapping_mut()
        .expect("a mapping")
        .insert(Yaml::String(last.to_string()), value);
}

/// The YAML lines `tandem certs issue` printed for `host` (its `== host ==` section).
fn snippet(stdout: &str, host: &str) -> Yaml {
    let head = format!("== {host} ==");
    let body: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.starts_with("== ") && !l.starts_with("Note:"))
        .collect();
    assert!(!body.is_empty(), "no section for {host} in:\n{stdout}");
    serde_yaml::from_str(&body.join("\n")).expect("the printed lines are YAML")
}

// --- processes and clients -----------------------------------------------------------------

/// Makes `cmd` enter network namespace `ns`, then (when given) drop to `user` (uid, gid): std
/// would drop privileges before its pre_exec hooks, and setns needs them.
fn enter_on_exec(cmd: &mut Command, ns: &str, user: Option<(u32, u32)>) {
    let file = File::open(Path::new("/run/netns").join(ns))
        .unwrap_or_else(|e| panic!("network namespace {ns}: {e}"));
    // SAFETY: setns, setgroups, setgid and setuid are async-signal-safe system calls; the
    // closure owns `file`, so its fd is open in the child.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == -1 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET))?;
            if let Some((uid, gid)) = user {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            Ok(())
        });
    }
}

/// Runs `cmd` inside namespace `ns` (as root) to its end: stdout, or the status and stderr.
fn output(cmd: &mut Command, ns: &str) -> Result<String, String> {
    enter_on_exec(cmd, ns, None);
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} ({}): {}{}",
            cmd.get_program().to_string_lossy(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}

/// An HTTP/1.0 GET over TLS to `addr` from inside namespace `ns`, the server's certificate
/// verified against `ca` with the address as the name; no client certificate (the seed's
/// REST API asks for none). The status code and the body.
fn https_get(ns: &str, ca: &Path, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tandem::api::tls::{load_roots, provider};
    use tokio_rustls::rustls;
    let timeout = Duration::from_secs(2);
    let tcp = in_netns(Some(ns), || TcpStream::connect_timeout(&addr, timeout))??;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(ca)?)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    // A server may close without close_notify: what was read before counts.
    match (&mut s).take(4 << 20).read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("incomplete HTTP response from {addr}{path}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad HTTP status line from {addr}{path}"))?;
    Ok((code, body.to_string()))
}

/// `mkdir` mode 0700 owned by the lab's run-as user.
fn mkdir_owned(dir: &Path, lab: &Lab) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(dir, Some(lab.user.uid), Some(lab.user.gid)).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Yaml {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn differences_name_changed_added_and_removed_keys_and_list_items() {
        let seed = yaml(SEED_CONFIG);
        assert!({
            let mut d = Vec::new();
            differences(&seed, &seed.clone(), "", &mut d);
            d.is_empty()
        });
        let mut c = seed.clone();
        set(&mut c, &["bootstrap", "dcs", "ttl"], Yaml::from(4));
        set(&mut c, &["restapi", "keyfile"], Yaml::from("k"));
        c.as_mapping_mut().unwrap().remove("tags");
        let hba = get_mut(&mut c, &["bootstrap", "dcs", "postgresql", "pg_hba"]).unwrap();
        hba.as_sequence_mut().unwrap()[5] = Yaml::from("host all all 0.0.0.0/0 trust");
        let mut d = Vec::new();
        differences(&seed, &c, "", &mut d);
        d.sort();
        assert_eq!(
            d,
            [
                "bootstrap.dcs.postgresql.pg_hba[5]",
                "bootstrap.dcs.ttl",
                "restapi.keyfile",
                "tags"
            ]
        );
    }

    #[test]
    #[should_panic(expected = "CHANGED does not list: [\"bootstrap.dcs.loop_wait\"]")]
    fn a_change_that_changed_does_not_list_fails() {
        let seed = yaml(SEED_CONFIG);
        let mut c = seed.clone();
        for (k, _) in CHANGED {
            if let Some((list, n)) = k.strip_suffix(']').and_then(|k| k.split_once('[')) {
                let keys: Vec<&str> = list.split('.').collect();
                let items = get_mut(&mut c, &keys)
                    .and_then(Yaml::as_sequence_mut)
                    .unwrap();
                items[n.parse::<usize>().unwrap()] = Yaml::from("changed");
                continue;
            }
            let keys: Vec<&str> = k.split('.').collect();
            if let Some(v) = get_mut(&mut c, &keys) {
                *v = Yaml::from("changed");
            } else {
                set(&mut c, &keys, Yaml::from("added"));
            }
        }
        set(&mut c, &["bootstrap", "dcs", "loop_wait"], Yaml::from(1));
        check_only_listed_changes(&seed, &c, 1);
    }
}
