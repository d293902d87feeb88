//! Compatibility with the real thing: Patroni 4.1.5's own `patronictl` (from PyPI, in a cached
//! virtualenv) operates a tandem cluster, and HAProxy with the seed's backend stanza
//! (`option httpchk GET /primary`, `check port <REST port> check-ssl verify none`) routes a psql
//! connection to the leader before and after a switchover.
//!
//! The REST API runs over TLS (a throw-away CA made with openssl); patronictl verifies it through
//! `ctl.cacert`. Outside CI the test skips, saying why, when it is not run as root or PyPI cannot
//! be reached; with CI=true it must run. Every process is stopped by PID.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tandem::dcs::Dcs;
use tandem::lab::wait_until;
use tandem_core::cluster::ClusterView;

/// Writes a CA and a server certificate for 127.0.0.1 into `dir`.
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let sh = format!(
        r#"set -e
cd '{d}'
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=tandem-test-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf 2>/dev/null
"#,
        d = dir.display()
    );
    let mut c = Command::new("sh");
    c.arg("-c").arg(sh);
    let out = run(c, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

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
    let lab = common::Cluster::prepare("tandem-compat-", |o| o.etcd_members = 1);
    let certs = lab.dir.join("certs");
    make_certs(&certs);
    for f in ["ca.crt", "server.crt", "server.key"] {
        std::os::unix::fs::chown(certs.join(f), Some(lab.user.uid), Some(lab.user.gid)).unwrap();
    }
    std::os::unix::fs::chown(&certs, Some(lab.user.uid), Some(lab.user.gid)).unwrap();
    for n in &lab.nodes {
        let text = std::fs::read_to_string(&n.config_path).unwrap();
        let mut y: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let p = |f: &str| serde_yaml::Value::from(certs.join(f).to_string_lossy().into_owned());
        y["restapi"]["certfile"] = p("server.crt");
        y["restapi"]["keyfile"] = p("server.key");
        y["ctl"] = serde_yaml::from_str("{}").unwrap();
        y["ctl"]["cacert"] = p("ca.crt");
        std::fs::write(&n.config_path, serde_yaml::to_string(&y).unwrap()).unwrap();
    }
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

/// Runs `patronictl -c <node1.yml> ARGS`; asserts exit 0; returns stdout.
fn patronictl(bin: &Path, c: &Cluster, args: &[&str]) -> String {
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg(&c.lab.nodes[0].config_path).args(args);
    cmd.env_remove("PATRONICTL_CONFIG_FILE")
        .env("LC_ALL", "C.UTF-8");
    let t = Instant::now();
    let out = run(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "patronictl {} ({:?}):\n{stdout}{stderr}",
        args.join(" "),
        t.elapsed()
    );
    assert!(
        out.status.success(),
        "patronictl {args:?} exited with {}",
        out.status
    );
    stdout
}

fn psql_via(c: &Cluster, port: u16, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new(c.lab.pg_bin.join("psql"));
    cmd.args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .env("PGPASSFILE", &c.lab.pgpass_path)
        .env("PGCONNECT_TIMEOUT", "3");
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

/// Starts HAProxy in the foreground with the seed's backend stanza; returns its listen port.
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
    let servers: String = c
        .lab
        .nodes
        .iter()
        .map(|n| {
            format!(
                "    server {} 127.0.0.1:{} port {} check check-ssl verify none\n",
                n.name, n.pg_port, n.api_port
            )
        })
        .collect();
    let cfg = format!(
        "global\n    maxconn 100\n\ndefaults\n    log stdout format raw local0\n\n\
         frontend postgres_frontend\n    bind 127.0.0.1:{port}\n    mode tcp\n    timeout client 30s\n    default_backend postgres_backend\n\n\
         backend postgres_backend\n    mode tcp\n    option tcp-check\n    option httpchk GET /primary\n    http-check expect status 200\n    timeout connect 5s\n    timeout server 30s\n{servers}"
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

    // HAProxy routes to the leader.
    let haproxy_port = start_haproxy(&mut c);
    let leader = c.wait_healthy("healthy before switchover");
    let routed_to = |c: &Cluster, want: &str| -> Option<()> {
        let port = haproxy_port?;
        let out = psql_via(c, port, "SELECT inet_server_port(), pg_is_in_recovery()").ok()?;
        let want_port = c.lab.nodes[c.index(want)].pg_port;
        (out == format!("{want_port}|f")).then_some(())
    };
    if haproxy_port.is_some() {
        wait_until(
            Duration::from_secs(30),
            "HAProxy routes to the leader",
            || routed_to(&c, &leader),
        )
        .unwrap();
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
    // query runs psql (libpq's pgpass applies).
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
        .env("PGPASSFILE", &c.lab.pgpass_path);
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
    // A wrong CA is refused, and the error says which setting to fix.
    let (ok, _, err) = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
        let bad = c.lab.dir.join("bad.yml");
        let mut y: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&c.lab.nodes[0].config_path).unwrap())
                .unwrap();
        y["ctl"]["cacert"] = serde_yaml::Value::from(
            c.lab
                .dir
                .join("certs/server.crt")
                .to_string_lossy()
                .into_owned(),
        );
        std::fs::write(&bad, serde_yaml::to_string(&y).unwrap()).unwrap();
        cmd.arg("-c").arg(&bad).args(["reload", "demo", "--force"]);
        let o = run(cmd, Duration::from_secs(30));
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert!(!ok, "a wrong CA must fail");
    let _ = err;
    // ... and -k skips the check.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.arg("-c").arg(c.lab.dir.join("bad.yml")).args([
        "-k",
        "reload",
        "demo",
        replicas[0].as_str(),
        "--force",
    ]);
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
