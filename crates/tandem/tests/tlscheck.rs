//! `tandem validate` on TLS files with the seed's pitfalls (issue 14 point 3): every problem
//! listed with its file and the command that fixes it, and the exit status 1; once fixed, the
//! configuration is valid (an etcd that is down is a note, not an error).

use std::path::Path;
use std::process::{Command, Output};

fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env_remove("PATRONICTL_CONFIG_FILE")
        .output()
        .expect("run tandem")
}

fn config(dir: &Path, rest_addr: &str, etcd: &str) -> String {
    let d = dir.join("ca/pg1");
    let d = d.display();
    format!(
        "scope: demo\nname: pg1\n\
         etcd3: {{hosts: '{etcd}', protocol: https, cacert: {d}/ca.crt, cert: {d}/client.crt, key: {d}/client.key}}\n\
         restapi: {{listen: '127.0.0.1:8008', connect_address: '{rest_addr}:8008', certfile: {d}/restapi.crt, keyfile: {d}/restapi.key, cafile: {d}/ca.crt}}\n\
         postgresql:\n  listen: 127.0.0.1:5432\n  connect_address: 10.0.0.1:5432\n  data_dir: {}/data\n\
         \x20 parameters: {{ssl: 'on', ssl_cert_file: {d}/postgresql.crt, ssl_key_file: {d}/postgresql.key}}\n\
         \x20 authentication:\n    superuser: {{username: postgres, password: a}}\n    replication: {{username: rep, password: b}}\n",
        dir.display()
    )
}

#[test]
fn validate_lists_each_tls_problem_with_its_file_and_fix_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = tandem(&[
        "certs",
        "issue",
        "--dir",
        ca.to_str().unwrap(),
        "--db",
        "pg1=10.0.0.1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = ca.join("pg1/postgresql.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    // A port nothing listens on: etcd is down.
    let etcd = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let etcd_addr = etcd.local_addr().unwrap().to_string();
    drop(etcd);
    let file = dir.path().join("node.yml");
    std::fs::write(&file, config(dir.path(), "10.0.0.2", &etcd_addr)).unwrap();

    let out = tandem(&["validate", "-c", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("2 TLS error(s), listed above with their fixes"),
        "{stderr}"
    );
    let k = key.display();
    assert!(
        stdout.contains(&format!("error: {k} (postgresql.parameters.ssl_key_file): mode 0644 lets group or others read it")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("\n  fix: `chmod 0600 {k}`\n")),
        "{stdout}"
    );
    let c = ca.join("pg1/restapi.crt");
    assert!(
        stdout.contains(&format!("error: {} (restapi.certfile): the certificate does not name 10.0.0.2 (restapi.connect_address)", c.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("tandem certs issue --dir <CA dir> --db pg1=10.0.0.1,10.0.0.2"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "note: etcd at {etcd_addr} (etcd3.hosts): TLS not checked"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("configuration is valid"), "{stdout}");

    // Fixed: valid, with the note about etcd left.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(&file, config(dir.path(), "10.0.0.1", &etcd_addr)).unwrap();
    let out = tandem(&["validate", "-c", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("error:"), "{stdout}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
}
