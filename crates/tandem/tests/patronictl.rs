//! Compatibility with the real thing: Patroni 4.1.5's own `patronictl` (from PyPI, in a cached
//! virtualenv) operates a tandem cluster, and HAProxy with the seed's backend stanza
//! (`option httpchk GET /primary`, `check port <REST port> check-ssl`) routes a psql connection
//! to the leader before and after a switchover.
//!
//! The cluster runs the lab's full TLS with verification everywhere (certificates from
//! `tandem certs`): patronictl reads node1's YAML as it is, so its etcd3 client uses
//! `protocol: https` with the lab's `cacert`/`cert`/`key`, and its REST client verifies against
//! `ctl.cacert` and presents `ctl.certfile`/`keyfile` (the REST API has `verify_client:
//! optional`: a change without a client certificate gets 403). HAProxy checks `/primary` with
//! `check-ssl verify required ca-file <lab CA>` and passes psql's TLS (`sslmode=verify-full`)
//! through in tcp mode. That the checks are real: a copy of the YAML whose `ctl.cacert` names
//! another CA makes patronictl's REST verbs fail on certificate verification, a copy without
//! `ctl.certfile` gets 403 on a change, and a second HAProxy backend with another CA's file
//! keeps every server down while the good one routes.
//!
//! Outside CI the test skips, saying why, when it is not run as root or PyPI cannot be reached;
//! with CI=true it must run. Every process is stopped by PID.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tandem::dcs::Dcs;
use tandem::lab::wait_until;
use tandem_core::cluster::ClusterView;

mod common;
use common::venv::{ci, patroni_venv, run};

/// The virtualenv's patronictl.
fn patronictl_venv() -> Option<PathBuf> {
    patroni_venv().map(|bin| bin.join("patronictl"))
}

struct Cluster {
    /// Stops (and on failure reports) every process of the lab when dropped, after HAProxy.
    lab: common::Cluster,
    rt: tokio::runtime::Runtime,
    dcs: Option<Dcs>,
    haproxy: Option<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut h) = self.haproxy.take() {
            // SAFETY: signal to the HAProxy child we started, by its PID.
            unsafe { libc::kill(h.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if h.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

impl Cluster {
    fn view(&self) -> ClusterView {
        self.rt
            .block_on(self.dcs.as_ref().unwrap().read_cluster())
            .unwrap()
            .0
    }
    fn index(&self, name: &str) -> usize {
        self.lab.nodes.iter().position(|n| n.name == name).unwrap()
    }
    /// The leader's name once every member runs and every replica streams from it.
    fn healthy(&self) -> Option<String> {
        let v = self.view();
        let leader = v.leader_name()?.to_string();
        let ok = v.members.len() == self.lab.nodes.len()
            && v.members.values().all(|m| {
                m.value.state == "running"
                    && (m.name == leader
                        || m.value.replication_state.as_deref() == Some("streaming"))
            });
        ok.then_some(leader)
    }
    fn wait_healthy(&self, what: &str) -> String {
        wait_until(Duration::from_secs(60), what, || self.healthy()).unwrap()
    }
}

fn start_tls_cluster() -> Cluster {
    let lab = common::Cluster::prepare("tandem-compat-", |o| {
        o.etcd_members = 1;
        o.tls = true;
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = Cluster {
        lab,
        rt,
        dcs: None,
        haproxy: None,
    };
    c.lab.start_etcd().unwrap();
    c.dcs = Some(common::dcs(&c.lab, &c.rt));
    for i in 0..c.lab.nodes.len() {
        c.lab.start_agent(i).unwrap();
    }
    c.wait_healthy("cluster forms");
    c
}

/// The lab's CA (the cluster runs TLS).
fn lab_ca(c: &Cluster) -> PathBuf {
    c.lab.tls.as_ref().expect("a TLS lab").ca()
}

/// Another CA, issued with `tandem certs` into DIR/other-ca (with a host `other`): its `ca.crt`.
fn other_ca(c: &Cluster) -> PathBuf {
    let dir = c.lab.dir.join("other-ca");
    if !dir.join("ca.crt").is_file() {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.args(["certs", "issue", "--dir"])
            .arg(&dir)
            .args(["--db", "other=127.0.0.1"]);
        let out = run(cmd, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "tandem certs issue: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir.join("ca.crt")
}

/// A copy of node1's YAML, changed by `edit`, as DIR/<name>.yml.
fn config_variant(c: &Cluster, name: &str, edit: impl FnOnce(&mut serde_yaml::Value)) -> PathBuf {
    let text = std::fs::read_to_string(&c.lab.nodes[0].config_path).unwrap();
    let mut y: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    edit(&mut y);
    let path = c.lab.dir.join(format!("{name}.yml"));
    std::fs::write(&path, serde_yaml::to_string(&y).unwrap()).unwrap();
    path
}

/// Runs `patronictl -c CONFIG ARGS` and prints what it said; returns its output.
fn patronictl_with(bin: &Path, config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(config).args(args);
    cmd.env_remove("PATRONICTL_CONFIG_FILE")
        .env("LC_ALL", "C.UTF-8");
    let t = Instant::now();
    let out = run(cmd, Duration::from_secs(120));
    eprintln!(
        "patronictl -c {} {} ({:?}, {}):\n{}{}",
        config.display(),
        args.join(" "),
        t.elapsed(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `patronictl -c CONFIG ARGS` until a line of its stderr contains `needle` or `deadline`
/// passes, then stops it (its process group, by its PID); returns whether the line came, and
/// its stdout.
fn patronictl_until_stderr(
    bin: &Path,
    config: &Path,
    args: &[&str],
    needle: &str,
    deadline: Duration,
) -> (bool, String) {
    use std::io::{BufRead, Read};
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("PATRONICTL_CONFIG_FILE")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let t = Instant::now();
    let mut seen = None;
    while let Some(left) = deadline.checked_sub(t.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => {
                seen = Some(line);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    // SAFETY: signal to the process group of the child we spawned (its PID).
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    eprintln!(
        "patronictl -c {} {} (stopped after {:?}): {}\n{stdout}",
        config.display(),
        args.join(" "),
        t.elapsed(),
        seen.as_deref().unwrap_or("(no such line)")
    );
    (seen.is_some(), stdout)
}

/// Runs `patronictl -c <node1.yml> ARGS`; asserts exit 0; returns stdout.
fn patronictl(bin: &Path, c: &Cluster, args: &[&str]) -> String {
    let out = patronictl_with(bin, &c.lab.nodes[0].config_path, args);
    assert!(
        out.status.success(),
        "patronictl {args:?} exited with {}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// psql through `port` (HAProxy), over TLS with the server's certificate and name verified
/// against the lab's CA (HAProxy in tcp mode passes the TLS through).
fn psql_via(c: &Cluster, port: u16, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new(c.lab.pg_bin.join("psql"));
    cmd.args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .env("PGPASSFILE", &c.lab.pgpass_path)
        .env("PGCONNECT_TIMEOUT", "3")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", lab_ca(c));
    let out = run(cmd, Duration::from_secs(20));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn free_port() -> u16 {
    tandem::lab::pick_ports(1, None).unwrap()[0]
}

/// The backend HAProxy routes psql through: `/primary` checked with the lab's CA.
const BACKEND: &str = "postgres_backend";
/// A backend without a frontend, the same servers checked with another CA's file: none may go up.
const WRONG_CA_BACKEND: &str = "wrong_ca_backend";

/// Starts HAProxy in the foreground with the seed's backend stanza, its `/primary` checks over
/// TLS verified against the lab's CA, plus [`WRONG_CA_BACKEND`]; returns its listen port.
fn start_haproxy(c: &mut Cluster) -> Option<u16> {
    let Some(haproxy) = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        if ci() {
            panic!("haproxy is not installed (scripts/install-deps.sh installs it)");
        }
        eprintln!("SKIPPED the HAProxy part: haproxy is not installed");
        return None;
    };
    let port = free_port();
    let backend = |name: &str, ca: &Path| -> String {
        let servers: String = c
            .lab
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "    server {} 127.0.0.1:{} port {} check check-ssl verify required ca-file {}\n",
                    n.name,
                    n.pg_port,
                    n.api_port,
                    ca.display()
                )
            })
            .collect();
        format!(
            "backend {name}\n    mode tcp\n    option tcp-check\n    option httpchk GET /primary\n    http-check expect status 200\n    timeout connect 5s\n    timeout server 30s\n{servers}\n"
        )
    };
    let good = backend(BACKEND, &lab_ca(c));
    let wrong = backend(WRONG_CA_BACKEND, &other_ca(c));
    let cfg = format!(
        "global\n    maxconn 100\n    stats socket {sock} mode 600 level operator\n\n\
         defaults\n    log stdout format raw local0\n\n\
         frontend postgres_frontend\n    bind 127.0.0.1:{port}\n    mode tcp\n    timeout client 30s\n    default_backend {BACKEND}\n\n\
         {good}{wrong}",
        sock = haproxy_socket(c).display()
    );
    let path = c.lab.dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let mut check = Command::new(&haproxy);
    check.arg("-c").arg("-f").arg(&path);
    let out = run(check, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::File::create(c.lab.dir.join("logs/haproxy.log")).unwrap();
    let child = Command::new(&haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    c.haproxy = Some(child);
    Some(port)
}

fn haproxy_socket(c: &Cluster) -> PathBuf {
    c.lab.dir.join("haproxy.sock")
}

/// One server line of HAProxy's `show stat`.
#[derive(Debug)]
struct ServerStat {
    server: String,
    /// UP, DOWN, "DOWN 1/2", ...
    status: String,
    /// The last check's result, e.g. "L7OK", "L7STS", "L6RSP".
    check_status: String,
    /// What the last check saw, e.g. "SSL handshake failure".
    last_chk: String,
}

/// The servers of `backend` as HAProxy's stats socket shows them; None while it does not answer.
fn haproxy_servers(c: &Cluster, backend: &str) -> Option<Vec<ServerStat>> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(haproxy_socket(c)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"show stat\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (px, sv, st, cs, lc) = (
        col("pxname")?,
        col("svname")?,
        col("status")?,
        col("check_status")?,
        col("last_chk")?,
    );
    let rows: Vec<ServerStat> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() == header.len() && f[px] == backend)
        .filter(|f| f[sv] != "FRONTEND" && f[sv] != "BACKEND")
        .map(|f| ServerStat {
            server: f[sv].to_string(),
            status: f[st].to_string(),
            check_status: f[cs].to_string(),
            last_chk: f[lc].to_string(),
        })
        .collect();
    (!rows.is_empty()).then_some(rows)
}

/// Every server of [`WRONG_CA_BACKEND`] is down because its certificate did not verify against
/// the other CA: HAProxy's check ended in the TLS handshake.
fn wrong_ca_servers_down(c: &Cluster) -> Option<Vec<ServerStat>> {
    let rows = haproxy_servers(c, WRONG_CA_BACKEND)?;
    rows.iter()
        .all(|r| r.status.starts_with("DOWN") && r.last_chk.contains("SSL handshake failure"))
        .then_some(rows)
}

#[test]
fn patronictl_4_1_5_operates_a_tandem_cluster_and_haproxy_routes_to_the_leader() {
    let Some(bin) = patronictl_venv() else { return };
    let started = Instant::now();
    let mut c = start_tls_cluster();
    eprintln!("cluster formed in {:?}", started.elapsed());
    let names: Vec<String> = c.lab.nodes.iter().map(|n| n.name.clone()).collect();

    // Read-only verbs.
    let out = patronictl(&bin, &c, &["list"]);
    for n in &names {
        assert!(out.contains(n.as_str()), "{out}");
    }
    assert!(out.contains("Leader") && out.contains("streaming"), "{out}");
    let out = patronictl(&bin, &c, &["topology"]);
    assert_eq!(out.matches("| + node").count(), 2, "{out}");
    let out = patronictl(&bin, &c, &["history"]);
    assert!(out.contains("| TL |"), "{out}");
    let out = patronictl(&bin, &c, &["show-config"]);
    let shown: Value =
        serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(&out).unwrap()).unwrap();
    assert_eq!(shown, c.view().config.unwrap().value);
    let out = patronictl(&bin, &c, &["version", "demo"]);
    assert_eq!(
        out.matches(": Patroni 4.1.5 PostgreSQL ").count(),
        3,
        "{out}"
    );

    // Verification is on. patronictl's REST client checks the member's certificate against
    // ctl.cacert: with another CA there, a verb that calls the REST API fails on it, while list
    // (etcd only) still works. Its etcd3 client checks etcd's against etcd3.cacert the same way.
    let other = other_ca(&c);
    let member = names[1].as_str();
    let wrong_ctl_ca = config_variant(&c, "wrong-ctl-ca", |y| {
        y["ctl"]["cacert"] = other.to_string_lossy().into_owned().into();
    });
    let out = patronictl_with(&bin, &wrong_ctl_ca, &["reload", "demo", member, "--force"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("certificate verify failed"),
        "patronictl trusted a REST API its ctl.cacert did not sign: {err}"
    );
    assert!(patronictl_with(&bin, &wrong_ctl_ca, &["list"])
        .status
        .success());
    let wrong_etcd_ca = config_variant(&c, "wrong-etcd-ca", |y| {
        y["etcd3"]["cacert"] = other.to_string_lossy().into_owned().into();
    });
    // (patronictl retries etcd without end: stopped once it has said why.)
    let (refused, stdout) = patronictl_until_stderr(
        &bin,
        &wrong_etcd_ca,
        &["list"],
        "certificate verify failed",
        Duration::from_secs(30),
    );
    assert!(
        refused && stdout.is_empty(),
        "patronictl trusted an etcd its etcd3.cacert did not sign: {stdout}"
    );
    // The REST API asks for a client certificate on changes (verify_client: optional): without
    // ctl.certfile/keyfile patronictl's reload is refused; with them (node1's YAML, every verb
    // below) it goes through.
    let no_client_cert = config_variant(&c, "no-client-cert", |y| {
        let ctl = y["ctl"].as_mapping_mut().unwrap();
        ctl.remove("certfile");
        ctl.remove("keyfile");
    });
    let out = patronictl_with(
        &bin,
        &no_client_cert,
        &["reload", "demo", member, "--force"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "Failed: reload for member {member}, status code=403, (client certificate required)"
        )),
        "{text}"
    );
    let out = patronictl(&bin, &c, &["reload", "demo", member, "--force"]);
    assert!(
        out.contains(&format!("Reload request received for member {member}")),
        "{out}"
    );

    // edit-config --set / --pg: a compare-and-set write of the config key.
    patronictl(
        &bin,
        &c,
        &[
            "edit-config",
            "--set",
            "loop_wait=2",
            "--pg",
            "work_mem=8MB",
            "--force",
        ],
    );
    let cfg = c.view().config.unwrap().value;
    assert_eq!(cfg["loop_wait"], 2);
    assert_eq!(cfg["postgresql"]["parameters"]["work_mem"], "8MB");
    assert_eq!(cfg["postgresql"]["use_pg_rewind"], true);

    // pause --wait / resume --wait: PATCH /config through the REST API, members' keys follow.
    let out = patronictl(&bin, &c, &["pause", "--wait"]);
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );
    let v = c.view();
    assert!(v.paused() && v.members.values().all(|m| m.value.pause == Some(true)));
    let out = patronictl(&bin, &c, &["resume", "--wait"]);
    assert!(
        out.contains("Success: cluster management is resumed"),
        "{out}"
    );
    let v = c.view();
    assert!(!v.paused() && v.members.values().all(|m| m.value.pause.is_none()));

    // HAProxy routes to the leader: its checks verify the REST certificates against the lab's
    // CA, and psql's own TLS to the leader (verify-full) passes through.
    let haproxy_port = start_haproxy(&mut c);
    let leader = c.wait_healthy("healthy before switchover");
    let routed_to = |c: &Cluster, want: &str| -> Option<()> {
        let port = haproxy_port?;
        let out = psql_via(
            c,
            port,
            "SELECT inet_server_port(), pg_is_in_recovery(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .ok()?;
        let want_port = c.lab.nodes[c.index(want)].pg_port;
        (out == format!("{want_port}|f|t")).then_some(())
    };
    if haproxy_port.is_some() {
        wait_until(
            Duration::from_secs(30),
            "HAProxy routes to the leader",
            || routed_to(&c, &leader),
        )
        .unwrap();
        // The checks pass with the lab's CA (the leader up, the replicas down on their 503),
        // and with another CA's file every server is down on the TLS handshake.
        let t = Instant::now();
        let res = wait_until(
            Duration::from_secs(30),
            "HAProxy: with the lab's CA the leader alone up, with another CA every server down",
            || {
                let good = haproxy_servers(&c, BACKEND)?;
                let leader_alone = good.iter().all(|r| {
                    (r.server == leader) == (r.status == "UP" && r.check_status == "L7OK")
                });
                let wrong = wrong_ca_servers_down(&c)?;
                leader_alone.then_some((good, wrong))
            },
        );
        let (good, wrong) = res.unwrap_or_else(|e| {
            panic!(
                "{e}: {BACKEND} {:?}, {WRONG_CA_BACKEND} {:?}",
                haproxy_servers(&c, BACKEND),
                haproxy_servers(&c, WRONG_CA_BACKEND)
            )
        });
        eprintln!(
            "HAProxy after {:?}: {BACKEND} {good:?}\n{WRONG_CA_BACKEND} {wrong:?}",
            t.elapsed()
        );
    }

    // switchover --candidate X --force.
    let target = names.iter().find(|n| **n != leader).unwrap().clone();
    let t = Instant::now();
    let out = patronictl(&bin, &c, &["switchover", "--candidate", &target, "--force"]);
    assert!(
        out.contains(&format!("Successfully switched over to \"{target}\"")),
        "{out}"
    );
    eprintln!("patronictl switchover took {:?}", t.elapsed());
    assert_eq!(c.view().leader_name(), Some(target.as_str()));
    assert_eq!(c.wait_healthy("healthy after switchover"), target);
    if haproxy_port.is_some() {
        let t = Instant::now();
        wait_until(
            Duration::from_secs(30),
            "HAProxy routes to the new leader",
            || routed_to(&c, &target),
        )
        .unwrap();
        eprintln!("HAProxy followed the switchover after {:?}", t.elapsed());
        // With the other CA no server came up, the new leader neither.
        assert!(
            wrong_ca_servers_down(&c).is_some(),
            "{:?}",
            haproxy_servers(&c, WRONG_CA_BACKEND)
        );
    }

    // failover --candidate Y --force.
    let target2 = names
        .iter()
        .find(|n| **n != target && **n != leader)
        .unwrap()
        .clone();
    let out = patronictl(&bin, &c, &["failover", "--candidate", &target2, "--force"]);
    assert!(
        out.contains(&format!("Successfully failed over to \"{target2}\"")),
        "{out}"
    );
    assert_eq!(c.view().leader_name(), Some(target2.as_str()));
    let leader = c.wait_healthy("healthy after failover");

    // restart <scope> <member> --force: the postmaster is a new process.
    let member = names.iter().find(|n| **n != leader).unwrap().clone();
    let i = c.index(&member);
    let pid = c.lab.postmaster_pid(i).unwrap();
    let out = patronictl(&bin, &c, &["restart", "demo", &member, "--force"]);
    assert!(
        out.contains(&format!("Success: restart on member {member}")),
        "{out}"
    );
    assert_ne!(c.lab.postmaster_pid(i), Some(pid));

    // reload <scope> --force: every member accepts.
    let out = patronictl(&bin, &c, &["reload", "demo", "--force"]);
    assert_eq!(
        out.matches("Reload request received for member").count(),
        3,
        "{out}"
    );

    // reinit <scope> <member> --force: the replica is cloned again and streams.
    let out = patronictl(&bin, &c, &["reinit", "demo", &member, "--force", "--wait"]);
    assert!(
        out.contains(&format!("Success: reinitialize for member {member}")),
        "{out}"
    );
    assert!(c.lab.postmaster_pid(i).is_some_and(|p| p != pid));
    c.wait_healthy("healthy after reinit");
    assert!(
        std::fs::read_to_string(&c.lab.nodes[i].log_path)
            .unwrap()
            .contains("reinitializing"),
        "the member's log shows the re-clone"
    );

    // Synchronous mode through patronictl: its list shows the /sync standby, and a switchover to
    // that standby goes through (issue 13).
    patronictl(
        &bin,
        &c,
        &["edit-config", "--set", "synchronous_mode=true", "--force"],
    );
    let sync = wait_until(Duration::from_secs(30), "/sync names a standby", || {
        let v = c.view();
        let s = tandem_core::sync::SyncState::parse(&v.sync?.value).ok()?;
        (s.leader.as_deref() == Some(leader.as_str()) && s.standbys.len() == 1)
            .then(|| s.standbys[0].clone())
    })
    .unwrap();
    let out = patronictl(&bin, &c, &["list"]);
    assert!(
        out.lines()
            .any(|l| l.contains(&format!("| {sync} ")) && l.contains("Sync Standby")),
        "{out}"
    );
    let out = patronictl(&bin, &c, &["switchover", "--candidate", &sync, "--force"]);
    assert!(
        out.contains(&format!("Successfully switched over to \"{sync}\"")),
        "{out}"
    );
    assert_eq!(
        c.wait_healthy("healthy after a synchronous switchover"),
        sync
    );
    eprintln!("patronictl compatibility test took {:?}", started.elapsed());
}

/// Runs `tandem -c <node1.yml> ARGS` with stdin not a terminal; returns (success, stdout, stderr).
fn tandem(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.arg("-c").arg(&c.lab.nodes[0].config_path).args(args);
    cmd.env_remove("PATRONICTL_CONFIG_FILE")
        .env_remove("TANDEM_CONFIG");
    let t = Instant::now();
    let out = run(cmd, Duration::from_secs(120));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!(
        "tandem {} ({:?}):\n{stdout}{stderr}",
        args.join(" "),
        t.elapsed()
    );
    (out.status.success(), stdout, stderr)
}

fn tandem_ok(c: &Cluster, args: &[&str]) -> String {
    let (ok, out, err) = tandem(c, args);
    assert!(ok, "tandem {args:?} failed: {err}");
    out
}

/// An error: exit 1 with `Error: <message>` on stderr; returns the message.
fn tandem_err(c: &Cluster, args: &[&str]) -> String {
    let (ok, _, err) = tandem(c, args);
    assert!(!ok, "tandem {args:?} should fail");
    let line = err
        .lines()
        .find(|l| l.starts_with("Error: "))
        .unwrap_or_else(|| panic!("{err}"));
    line.to_string()
}

#[test]
fn tandem_verbs_operate_a_tls_cluster_like_patronictl() {
    let started = Instant::now();
    let c = start_tls_cluster();
    let names: Vec<String> = c.lab.nodes.iter().map(|n| n.name.clone()).collect();
    let leader = c.wait_healthy("healthy");
    let replicas: Vec<String> = names.iter().filter(|n| **n != leader).cloned().collect();

    // Read-only verbs; the REST certificate is verified against ctl.cacert (no ctl.insecure).
    let out = tandem_ok(&c, &["list", "-t"]);
    assert!(
        out.lines().next().unwrap().len() == 19 && out.contains("Leader"),
        "{out}"
    );
    assert_eq!(tandem_ok(&c, &["topology"]).matches("| + node").count(), 2);
    assert!(tandem_ok(&c, &["history"]).contains("| TL |"));
    let shown: Value = serde_json::to_value(
        serde_yaml::from_str::<serde_yaml::Value>(&tandem_ok(&c, &["show-config"])).unwrap(),
    )
    .unwrap();
    assert_eq!(shown, c.view().config.unwrap().value);
    let out = tandem_ok(&c, &["version", "demo"]);
    assert_eq!(out.matches(" PostgreSQL ").count(), 3, "{out}");
    let li = c.index(&leader);
    assert_eq!(
        tandem_ok(&c, &["dsn"]).trim(),
        format!("host=127.0.0.1 port={}", c.lab.nodes[li].pg_port)
    );
    // query runs psql (libpq's pgpass and TLS settings apply).
    let mut q = Command::new(env!("CARGO_BIN_EXE_tandem"));
    q.arg("-c")
        .arg(&c.lab.nodes[0].config_path)
        .args([
            "query",
            "-U",
            "postgres",
            "-r",
            "replica",
            "-c",
            "SELECT pg_is_in_recovery() AS ro",
        ])
        .env("PGPASSFILE", &c.lab.pgpass_path)
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", lab_ca(&c));
    let out = run(q, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ro\nt\n");

    // Questions without a terminal and without --force: a clear error.
    let e = tandem_err(&c, &["switchover"]);
    assert!(e.contains("--force") && e.contains("terminal"), "{e}");
    let e = tandem_err(&c, &["failover", "--force"]);
    assert!(
        e.contains("Failover could be performed only to a specific candidate"),
        "{e}"
    );
    let e = tandem_err(&c, &["switchover", "--candidate", "nobody", "--force"]);
    assert!(e.contains("does not exist"), "{e}");
    // Another CA in ctl.cacert is refused, and the error says which setting to fix.
    let other = other_ca(&c);
    let bad = config_variant(&c, "bad", |y| {
        y["ctl"]["cacert"] = other.to_string_lossy().into_owned().into();
    });
    let (ok, said) = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        cmd.arg("-c").arg(&bad).args(["reload", "demo", "--force"]);
        let o = run(cmd, Duration::from_secs(30));
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    assert!(
        !ok && said.contains("ctl.cacert"),
        "a wrong CA must fail: {said}"
    );
    // ... and -k skips the check.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.arg("-c")
        .arg(&bad)
        .args(["-k", "reload", "demo", replicas[0].as_str(), "--force"]);
    assert!(run(cmd, Duration::from_secs(30)).status.success());

    // edit-config: -s, -p, --apply, --replace, no-op.
    let out = tandem_ok(
        &c,
        &[
            "edit-config",
            "-s",
            "loop_wait=2",
            "-p",
            "work_mem=8MB",
            "--force",
        ],
    );
    assert!(
        out.contains("+loop_wait: 2") && out.contains("Configuration changed"),
        "{out}"
    );
    let cfg = c.view().config.unwrap().value;
    assert_eq!(
        (
            cfg["loop_wait"].clone(),
            cfg["postgresql"]["parameters"]["work_mem"].clone()
        ),
        (2.into(), "8MB".into())
    );
    assert!(
        tandem_ok(&c, &["edit-config", "-s", "loop_wait=2", "--force"]).contains("Not changed")
    );
    let file = c.lab.dir.join("patch.yml");
    std::fs::write(&file, "postgresql:\n  parameters:\n    work_mem: null\n").unwrap();
    tandem_ok(
        &c,
        &[
            "edit-config",
            "--apply",
            file.to_str().unwrap(),
            "--force",
            "-q",
        ],
    );
    assert!(c.view().config.unwrap().value["postgresql"]["parameters"]
        .get("work_mem")
        .is_none());
    let e = tandem_err(&c, &["edit-config", "-s", "ttl=20"]);
    assert!(e.contains("--force"), "{e}");
    let mut full = c.view().config.unwrap().value;
    full["retry_timeout"] = 3.into();
    std::fs::write(&file, serde_yaml::to_string(&full).unwrap()).unwrap();
    tandem_ok(
        &c,
        &[
            "edit-config",
            "--replace",
            file.to_str().unwrap(),
            "--force",
        ],
    );
    assert_eq!(c.view().config.unwrap().value, full);

    // pause / resume.
    assert!(tandem_ok(&c, &["pause", "--wait"]).contains("Success: cluster management is paused"));
    assert!(c
        .view()
        .members
        .values()
        .all(|m| m.value.pause == Some(true)));
    assert!(tandem_err(&c, &["pause"]).contains("Cluster is already paused"));
    assert!(tandem_ok(&c, &["resume", "--wait"]).contains("Success: cluster management is resumed"));
    assert!(!c.view().paused());

    // Scheduled switchover, shown by list, then flushed.
    let at = (chrono::Utc::now() + chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:%M+00:00")
        .to_string();
    let out = tandem_ok(
        &c,
        &[
            "switchover",
            "--candidate",
            &replicas[0],
            "--scheduled",
            &at,
            "--force",
        ],
    );
    assert!(out.contains("Switchover scheduled"), "{out}");
    assert!(tandem_ok(&c, &["list"]).contains("Switchover scheduled at:"));
    assert!(tandem_ok(&c, &["flush", "demo", "switchover", "--force"])
        .contains("Success: scheduled switchover deleted"));
    assert!(c.view().failover_request().is_none());

    // Immediate switchover and failover.
    let out = tandem_ok(
        &c,
        &[
            "switchover",
            "--leader",
            &leader,
            "--candidate",
            &replicas[0],
            "--force",
        ],
    );
    assert!(
        out.contains(&format!(
            "Successfully switched over to \"{}\"",
            replicas[0]
        )),
        "{out}"
    );
    assert_eq!(c.wait_healthy("healthy after switchover"), replicas[0]);
    let out = tandem_ok(&c, &["failover", "--candidate", &replicas[1], "--force"]);
    assert!(
        out.contains(&format!("Successfully failed over to \"{}\"", replicas[1])),
        "{out}"
    );
    let leader = c.wait_healthy("healthy after failover");
    assert_eq!(leader, replicas[1]);

    // restart: scheduled then flushed; immediate.
    let member = names.iter().find(|n| **n != leader).unwrap().clone();
    let i = c.index(&member);
    let out = tandem_ok(
        &c,
        &[
            "restart",
            "demo",
            &member,
            "--scheduled",
            &at,
            "--pg-version",
            "99.0",
            "--force",
        ],
    );
    assert!(
        out.contains(&format!("Success: restart scheduled on member {member}")),
        "{out}"
    );
    // flush reads the schedule from the member key, which the agent writes on its next cycle.
    wait_until(
        Duration::from_secs(30),
        "the member key shows the scheduled restart",
        || {
            let v = c.view();
            let m = v.members.values().find(|m| m.name == member)?;
            m.value
                .extra
                .contains_key("scheduled_restart")
                .then_some(())
        },
    )
    .unwrap();
    let out = tandem_ok(&c, &["flush", "demo", &member, "restart", "--force"]);
    assert!(out.contains("Success: flush scheduled restart"), "{out}");
    let pid = c.lab.postmaster_pid(i).unwrap();
    let out = tandem_ok(
        &c,
        &["restart", "demo", &member, "--role", "replica", "--force"],
    );
    assert!(
        out.contains(&format!("Success: restart on member {member}")),
        "{out}"
    );
    assert_ne!(c.lab.postmaster_pid(i), Some(pid));
    let e = tandem_err(
        &c,
        &["restart", "demo", &leader, "--role", "replica", "--force"],
    );
    assert!(e.contains("role"), "{e}");

    // reload, reinit --wait.
    let out = tandem_ok(&c, &["reload", "demo", "--force"]);
    assert_eq!(
        out.matches("Reload request received for member").count(),
        3,
        "{out}"
    );
    let pid = c.lab.postmaster_pid(i).unwrap();
    let out = tandem_ok(&c, &["reinit", "demo", &member, "--force", "--wait"]);
    assert!(out.contains("Reinitialize is completed on"), "{out}");
    assert!(c.lab.postmaster_pid(i).is_some_and(|p| p != pid));
    c.wait_healthy("healthy after reinit");

    // remove: without a terminal it refuses; on a terminal it asks three questions.
    assert!(tandem_err(&c, &["remove", "demo"]).contains("terminal"));
    let rev_before = c.view().config.unwrap().mod_revision;
    let script = format!(
        "{} -c {} remove demo",
        env!("CARGO_BIN_EXE_tandem"),
        c.lab.nodes[0].config_path.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &script, "/dev/null"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let answers = format!("demo\nYes I am aware\n{leader}\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answers.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Cluster demo removed"), "{text}");
    // Every key went (the agents write theirs again at once: the config key is a new one).
    let after = c.view().config.map(|c| c.mod_revision);
    assert!(
        after.is_none_or(|r| r > rev_before),
        "config key not removed"
    );
    eprintln!("tandem verbs test took {:?}", started.elapsed());
}
