//! README command 1: `tandem demo up` starts etcd, three agents and a router, and prints the
//! `psql` lines that work; `tandem demo down` stops everything by PID and removes the directory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tandem::api::tls::{load_certs, load_private_key, load_roots, provider};
use tandem::lab::{http_get, wait_until, Lab};
use tokio_rustls::rustls;

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

/// `METHOD path` over TLS to 127.0.0.1:`port`, trusting only `ca`, presenting `client` (cert,
/// key) if given: the status code, or the error (handshake, verification, a closed connection).
fn tls_request(
    port: u16,
    method: &str,
    path: &str,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<u16, String> {
    let run = || -> anyhow::Result<u16> {
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(load_roots(ca)?);
        let cfg = match client {
            Some((c, k)) => b.with_client_auth_cert(load_certs(c)?, load_private_key(k)?)?,
            None => b.with_no_client_auth(),
        };
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let conn = rustls::ClientConnection::new(Arc::new(cfg), name)?;
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        text.lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no HTTP answer ({} bytes)", buf.len()))
    };
    run().map_err(|e| format!("{e:#}"))
}

/// `psql` as the superuser to 127.0.0.1:`port` with `conninfo` added; stdout or stderr.
fn psql(lab: &Lab, port: u16, conninfo: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(lab.pg_bin.join("psql"))
        .args(["-X", "-A", "-t", "-c", sql, "-d"])
        .arg(format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5 {conninfo}"
        ))
        .env("PGPASSFILE", &lab.pgpass_path)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// Issue 14: every connection of the demo is TLS with verification. Each is tried without the
/// lab's CA, or without a client certificate where one is required, and is refused.
fn every_connection_is_verified_tls(lab: &Lab, leader: usize, other: &Path) {
    let tls = lab.tls.as_ref().expect("the demo runs TLS by default");
    let ca = tls.ca();
    let other_ca = other.join("ca.crt");
    let (other_crt, other_key) = (
        other.join("other/client.crt"),
        other.join("other/client.key"),
    );
    let (crt, key) = (
        tls.file("router", "client", "crt"),
        tls.file("router", "client", "key"),
    );
    let n = &lab.nodes[leader];
    let verify = format!("sslmode=verify-full sslrootcert={}", ca.display());

    // PostgreSQL: clients and replication only over TLS, the server's certificate verified.
    assert_eq!(psql(lab, n.pg_port, &verify, "SHOW ssl").unwrap(), "on");
    let walsenders = psql(
        lab,
        n.pg_port,
        &verify,
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
    )
    .unwrap();
    assert_eq!(walsenders, "2|2", "both replicas stream over TLS");
    let e = psql(lab, n.pg_port, "sslmode=disable", "SELECT 1").unwrap_err();
    assert!(
        e.contains("no pg_hba.conf entry") && e.contains("no encryption"),
        "{e}"
    );
    let e = psql(
        lab,
        n.pg_port,
        &format!("sslmode=verify-full sslrootcert={}", other_ca.display()),
        "SELECT 1",
    )
    .unwrap_err();
    assert!(e.contains("certificate verify failed"), "{e}");
    let e = psql(
        lab,
        n.pg_port,
        "sslmode=disable replication=true",
        "IDENTIFY_SYSTEM",
    )
    .unwrap_err();
    assert!(e.contains("no pg_hba.conf entry for replication"), "{e}");

    // REST API: HTTPS only, its certificate from the lab's CA, changes need a client certificate.
    assert!(http_get(
        &format!("127.0.0.1:{}", n.api_port),
        "/health",
        Duration::from_secs(2)
    )
    .is_err());
    assert_eq!(
        tls_request(n.api_port, "GET", "/health", &ca, None),
        Ok(200)
    );
    let e = tls_request(n.api_port, "GET", "/health", &other_ca, None).unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert_eq!(
        tls_request(n.api_port, "POST", "/reload", &ca, None),
        Ok(403)
    );
    assert_eq!(
        tls_request(
            n.api_port,
            "POST",
            "/reload",
            &ca,
            Some((&other_crt, &other_key))
        )
        .map_err(|_| ()),
        Err(()),
        "a client certificate from another CA is refused"
    );

    // etcd: client certificates required on the client and the peer port.
    let m = &lab.etcd[0];
    assert_eq!(
        tls_request(m.client_port, "GET", "/health", &ca, Some((&crt, &key))),
        Ok(200)
    );
    assert!(tls_request(m.client_port, "GET", "/health", &ca, None).is_err());
    assert!(tls_request(
        m.client_port,
        "GET",
        "/health",
        &ca,
        Some((&other_crt, &other_key))
    )
    .is_err());
    let e = tls_request(
        m.client_port,
        "GET",
        "/health",
        &other_ca,
        Some((&crt, &key)),
    )
    .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
    assert!(tls_request(m.peer_port, "GET", "/members", &ca, None).is_err());
    assert!(http_get(
        &format!("127.0.0.1:{}", m.peer_port),
        "/members",
        Duration::from_secs(2)
    )
    .is_err());

    // tandem list verifies the REST certificate against ctl.cacert.
    let bin = lab.tandem_bin.to_str().unwrap();
    let cfg = n.config_path.to_str().unwrap();
    let ok = Command::new(bin)
        .args(["-c", cfg, "list"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let text = std::fs::read_to_string(&n.config_path).unwrap();
    let wrong = other.join("wrong-ca.yml");
    std::fs::write(
        &wrong,
        text.replace(
            &format!("cacert: {}", ca.display()),
            &format!("cacert: {}", other_ca.display()),
        ),
    )
    .unwrap();
    // Days to the end of every certificate in use, on the agent's and the router's /metrics.
    let (code, m) = lab.api_get(leader, "/metrics").unwrap();
    assert_eq!(code, 200);
    for role in ["restapi", "etcd3", "postgresql"] {
        assert!(
            m.lines()
                .any(|l| l.starts_with("tandem_certificate_expiry_days{")
                    && l.contains(&format!("role=\"{role}"))),
            "no {role} certificate in the agent's /metrics:\n{m}"
        );
    }
    let r = lab.router.as_ref().unwrap();
    let (_, m) = http_get(
        &format!("127.0.0.1:{}", r.status_port),
        "/metrics",
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(
        m.contains("tandem_certificate_expiry_days{") && m.contains("router/client.crt"),
        "no certificate in the router's /metrics:\n{m}"
    );
    let bad = Command::new(bin)
        .args(["-c", wrong.to_str().unwrap(), "list"])
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "tandem list trusted a server its CA did not sign: {}",
        String::from_utf8_lossy(&bad.stdout)
    );
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
    for line in [&rw, &ro] {
        assert!(line.contains("sslmode=verify-full sslrootcert="), "{line}");
    }
    let other = tmp.path().join("other-ca");
    let issued = Command::new(bin)
        .args([
            "certs",
            "issue",
            "--dir",
            other.to_str().unwrap(),
            "--db",
            "other=127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let leader = tandem::demo::healthy_roles(&lab).expect("one leader").0;
    every_connection_is_verified_tls(&lab, leader, &other);
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
