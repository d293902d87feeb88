//! Issue 14: with TLS on (the demo's layout), each component refuses a peer whose certificate
//! another CA signed: a replica's clone (pg_basebackup, `sslmode=verify-full`), an agent's etcd
//! client, and the router's REST probes and etcd client. The other direction (servers refusing
//! clients without the lab's certificates) is in tests/demo.rs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem::api::tls::{load_certs, load_roots, provider};
use tandem::lab::{wait_until, Lab};
use tokio_rustls::rustls;

/// The certificate a TLS server on 127.0.0.1:`port` presents (DER), verified against `ca`;
/// `postgres`: PostgreSQL's SSLRequest first.
fn served_certificate(port: u16, ca: &Path, postgres: bool) -> Option<Vec<u8>> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    if postgres {
        // SSLRequest: length 8, code 80877103.
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).ok()?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).ok()?;
        if answer[0] != b'S' {
            return None;
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(load_roots(ca).ok()?)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).ok()?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).ok()?;
    }
    Some(conn.peer_certificates()?.first()?.as_ref().to_vec())
}

fn file_certificate(path: &Path) -> Vec<u8> {
    load_certs(path).unwrap()[0].as_ref().to_vec()
}

/// A second CA with a client certificate, made with `tandem certs` in `dir`; returns its CA file.
fn other_ca(dir: &Path, owner: &str) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["certs", "issue", "--dir"])
        .arg(dir)
        .args(["--db", "other=127.0.0.1", "--owner", owner])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("ca.crt")
}

/// Rewrites one string value of a YAML file in place (owner and mode kept).
fn set_yaml(path: &Path, keys: &[&str], value: &Path) {
    let mut y: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut cur = &mut y;
    for k in keys {
        cur = cur
            .get_mut(*k)
            .unwrap_or_else(|| panic!("{} has no {k}", path.display()));
    }
    *cur = serde_yaml::Value::from(value.to_string_lossy().into_owned());
    std::fs::write(path, serde_yaml::to_string(&y).unwrap()).unwrap();
}

/// Waits until `log` has a line with every word of `words` (case-insensitive) written after
/// byte `from`; returns that line.
fn wait_log(log: &Path, from: usize, words: &[&str], what: &str) -> String {
    wait_until(Duration::from_secs(60), what, || {
        let text = std::fs::read_to_string(log).ok()?;
        // A process that truncates its log on start leaves it shorter than `from`.
        let from = if text.len() < from { 0 } else { from };
        text.get(from..)?
            .lines()
            .find(|l| {
                let l = l.to_lowercase();
                words.iter().all(|w| l.contains(&w.to_lowercase()))
            })
            .map(str::to_string)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}; end of {}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

fn log_len(p: &Path) -> usize {
    std::fs::metadata(p).map(|m| m.len() as usize).unwrap_or(0)
}

/// Stops node `i`'s agent unless it already exited.
fn stop_agent(lab: &mut Lab, i: usize) {
    if !lab.agent_running(i) {
        return;
    }
    lab.signal_agent(i, libc::SIGTERM).unwrap();
    wait_until(Duration::from_secs(20), "the agent to exit", || {
        (!lab.agent_running(i)).then_some(())
    })
    .unwrap();
}

#[test]
fn a_certificate_from_another_ca_is_refused_by_each_component() {
    let mut c = common::Cluster::prepare("tandem-tls-", |o| {
        o.tls = true;
        o.router = true;
        o.etcd_members = 1;
    });
    let other = other_ca(&c.dir.join("other-ca"), &c.user.name.clone());
    c.start_etcd().unwrap();
    for i in 0..2 {
        c.start_agent(i).unwrap();
    }
    let leader = wait_until(
        Duration::from_secs(60),
        "a leader and a streaming replica",
        || {
            let p = (0..2).find(|&i| common::is_primary(&c, i))?;
            common::answers_200(&c, 1 - p, "/replica?replication_state=streaming").then_some(p)
        },
    )
    .unwrap();

    // A replica whose replication connection trusts another CA: the agent's start-up check
    // refuses it, naming both files and the fix (had it started, pg_basebackup's
    // `sslmode=verify-full` would have refused the leader's certificate).
    let n3 = c.nodes[2].clone();
    set_yaml(
        &n3.config_path,
        &["postgresql", "authentication", "replication", "sslrootcert"],
        &other,
    );
    let from = log_len(&n3.log_path);
    c.start_agent(2).unwrap();
    let line = wait_log(
        &n3.log_path,
        from,
        &["not signed by the CA in", "replication.sslrootcert", "fix:"],
        "node3's agent to refuse its replication CA",
    );
    wait_until(Duration::from_secs(20), "node3's agent to exit", || {
        (!c.agent_running(2)).then_some(())
    })
    .unwrap();
    eprintln!("node3: {line}");
    assert!(!common::answers_200(
        &c,
        2,
        "/replica?replication_state=streaming"
    ));
    stop_agent(&mut c, 2);

    // An agent whose etcd client trusts another CA never joins (the start-up handshake names
    // the CA; the etcd client itself refuses the certificate too).
    let ca = c.tls.as_ref().unwrap().ca();
    set_yaml(
        &n3.config_path,
        &["postgresql", "authentication", "replication", "sslrootcert"],
        &ca,
    );
    set_yaml(&n3.config_path, &["etcd3", "cacert"], &other);
    let from = log_len(&n3.log_path);
    let t = Instant::now();
    c.start_agent(2).unwrap();
    let line = wait_log(
        &n3.log_path,
        from,
        &["certificate"],
        "node3's etcd client to refuse etcd's certificate",
    );
    eprintln!("node3 after {:?}: {line}", t.elapsed());
    let rt = common::runtime();
    let dcs = common::dcs(&c, &rt);
    let view = rt.block_on(dcs.read_cluster()).unwrap().0;
    assert!(
        !view.members.contains_key("node3"),
        "node3 joined through an etcd it cannot verify"
    );
    if c.agent_running(2) {
        stop_agent(&mut c, 2);
    }

    // The router: REST probes that trust another CA route nothing; then its etcd client.
    let router = c.router.clone().unwrap();
    set_yaml(&router.config_path, &["ctl", "cacert"], &other);
    let from = log_len(&router.log_path);
    c.start_router().unwrap();
    let line = wait_log(
        &router.log_path,
        from,
        &["certificate"],
        "the router's probe to fail on the certificate",
    );
    eprintln!("router: {line}");
    // A refused certificate counts as no answer: the leader key alone routes until FALL (3)
    // checks in a row failed (docs/proxy.md), then the leader is no longer routed.
    wait_until(
        Duration::from_secs(15),
        "the router to stop routing",
        || (!c.router_routes_primary()).then_some(()),
    )
    .unwrap();
    let pid = c.router.as_ref().unwrap().pid.unwrap();
    // SAFETY: the router this test started, by its PID.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    wait_until(Duration::from_secs(10), "the router to exit", || {
        (!Path::new(&format!("/proc/{pid}/exe")).exists()).then_some(())
    })
    .unwrap();
    set_yaml(&router.config_path, &["ctl", "cacert"], &ca);
    set_yaml(&router.config_path, &["etcd3", "cacert"], &other);
    // tandem validate knows a router's file, and names the CA that did not sign etcd's.
    let v = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("validate")
        .arg("-c")
        .arg(&router.config_path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&v.stdout);
    assert!(
        !v.status.success() && out.contains("was not signed by the CA in") && out.contains("fix:"),
        "{out}{}",
        String::from_utf8_lossy(&v.stderr)
    );
    let from = log_len(&router.log_path);
    c.start_router().unwrap();
    let line = wait_log(
        &router.log_path,
        from,
        &["certificate"],
        "the router's etcd client to fail on the certificate",
    );
    eprintln!("router: {line}");
    // The leader was never disturbed.
    assert!(common::is_primary(&c, leader));
}

/// Issue 14 point 4: the leader's certificates renewed in place (`tandem certs issue` again,
/// the CA kept) and SIGHUP: the REST API and PostgreSQL serve the new ones to new connections,
/// with no restart of the postmaster and no change of leader.
#[test]
fn renewed_certificates_are_served_after_sighup() {
    let started = common::Cluster::prepare("tandem-tls-renew-", |o| {
        o.tls = true;
        o.members = 2;
        o.etcd_members = 1;
    })
    .start();
    let leader = started.leader;
    let mut c = started.cluster;
    let tls = c.tls.clone().unwrap();
    let n = c.nodes[leader].clone();
    let (ca, rest, pg) = (
        tls.ca(),
        tls.file(&n.name, "restapi", "crt"),
        tls.file(&n.name, "postgresql", "crt"),
    );
    assert_eq!(
        served_certificate(n.api_port, &ca, false),
        Some(file_certificate(&rest))
    );
    assert_eq!(
        served_certificate(n.pg_port, &ca, true),
        Some(file_certificate(&pg))
    );
    let postmaster = c.postmaster_pid(leader).unwrap();
    let (old_rest, old_pg) = (file_certificate(&rest), file_certificate(&pg));

    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["certs", "issue", "--dir"])
        .arg(&tls.dir)
        .args(["--db", &format!("{}=127.0.0.1", n.name)])
        .args(["--owner", &c.user.name, "--etcd-owner", &c.user.name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (new_rest, new_pg) = (file_certificate(&rest), file_certificate(&pg));
    assert!(
        new_rest != old_rest && new_pg != old_pg,
        "tandem certs issued the same certificates"
    );

    let from = log_len(&n.log_path);
    c.signal_agent(leader, libc::SIGHUP).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the renewed certificates to be served",
        || {
            (served_certificate(n.api_port, &ca, false)? == new_rest
                && served_certificate(n.pg_port, &ca, true)? == new_pg)
                .then_some(())
        },
    )
    .unwrap();
    wait_log(
        &n.log_path,
        from,
        &[
            "reloaded TLS certificates for the REST API",
            "restapi.certfile",
        ],
        "the agent to log the reload",
    );
    assert_eq!(
        c.postmaster_pid(leader),
        Some(postmaster),
        "PostgreSQL was restarted"
    );
    assert!(common::is_primary(&c, leader), "the leader changed");
    assert!(common::answers_200(
        &c,
        1 - leader,
        "/replica?replication_state=streaming"
    ));
}
