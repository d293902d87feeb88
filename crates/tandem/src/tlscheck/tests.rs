//! Unit tests of the start-up TLS checks: certificates made with rcgen in a temporary
//! directory, each broken in one way, and the finding that names it.

use super::*;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;
use tokio_rustls::rustls;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(cn: &str) -> Ca {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    let key = KeyPair::generate().unwrap();
    let pem = p.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(p, key),
    }
}

/// A certificate for `names` (IPs or DNS names) valid from `from` to `to` days from now.
fn leaf(ca: &Ca, cn: &str, names: &[&str], from: i64, to: i64) -> (String, String) {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*n).try_into().unwrap()),
        })
        .collect();
    let now = OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from);
    p.not_after = now + time::Duration::days(to);
    p.is_ca = IsCa::ExplicitNoCa;
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, data: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// A node with every TLS file in place and right: restapi, etcd3, ctl and PostgreSQL.
struct Node {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("test-ca");
        let d = dir.path();
        write(d, "ca.crt", &ca.pem, 0o644);
        for (role, names) in [
            ("restapi", &["10.0.0.1", "127.0.0.1", "localhost"][..]),
            ("postgresql", &["10.0.0.1", "pg1.example.org"][..]),
            ("client", &["pg1"][..]),
        ] {
            let (c, k) = leaf(&ca, "pg1", names, -1, 800);
            write(d, &format!("{role}.crt"), &c, 0o644);
            write(d, &format!("{role}.key"), &k, 0o600);
        }
        Node { dir, ca }
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn yaml(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "scope: demo\nname: pg1\n\
             etcd3: {{hosts: '127.0.0.1:1', protocol: https, cacert: {d}/ca.crt, cert: {d}/client.crt, key: {d}/client.key}}\n\
             restapi: {{listen: '127.0.0.1:8008', connect_address: '10.0.0.1:8008', certfile: {d}/restapi.crt, keyfile: {d}/restapi.key, cafile: {d}/ca.crt, verify_client: optional}}\n\
             ctl: {{cacert: {d}/ca.crt, certfile: {d}/client.crt, keyfile: {d}/client.key}}\n\
             postgresql:\n  listen: 127.0.0.1:5432\n  connect_address: 10.0.0.1:5432\n  data_dir: {d}/data\n\
             \x20 parameters: {{ssl: 'on', ssl_cert_file: {d}/postgresql.crt, ssl_key_file: {d}/postgresql.key, ssl_ca_file: {d}/ca.crt}}\n\
             \x20 authentication:\n    superuser: {{username: postgres, password: a}}\n    replication: {{username: rep, password: b}}\n"
        )
    }

    fn config(&self) -> Config {
        Config::from_yaml_str(&self.yaml(), &BTreeMap::new(), "node.yml").unwrap()
    }

    /// Replaces `role`'s certificate (and key) with one for `names`, valid `from`..`to` days.
    fn reissue(&self, role: &str, ca: &Ca, names: &[&str], from: i64, to: i64) {
        let (c, k) = leaf(ca, "pg1", names, from, to);
        write(self.dir.path(), &format!("{role}.crt"), &c, 0o644);
        write(self.dir.path(), &format!("{role}.key"), &k, 0o600);
    }

    fn check(&self) -> Vec<Finding> {
        check_files_at(&self.config(), unix_now(), &RunAs::current())
    }
}

fn only<'a>(findings: &'a [Finding], file: &Path) -> Vec<&'a Finding> {
    let file = file.display().to_string();
    findings.iter().filter(|f| f.file == file).collect()
}

fn text(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_node_with_right_files_has_no_findings() {
    let n = Node::new();
    let f = n.check();
    assert!(f.is_empty(), "{}", text(&f));
}

#[test]
fn every_file_is_listed_with_its_key_and_role() {
    let n = Node::new();
    let mut cfg = n.config();
    cfg.postgresql
        .parameters
        .insert("ssl_key_file".into(), "server.key".into());
    cfg.postgresql.authentication.replication.sslrootcert =
        Some(n.path("ca.crt").display().to_string());
    cfg.postgresql.authentication.replication.sslcert = Some("/x/rep.crt".into());
    cfg.postgresql.authentication.replication.sslkey = Some("/x/rep.key".into());
    let files = tls_files(&cfg);
    let has = |key: &str, path: &Path, role: &str, kind: Kind| {
        assert!(
            files
                .iter()
                .any(|f| f.key == key && f.path == path && f.role == role && f.kind == kind),
            "{key} {} in {files:#?}",
            path.display()
        )
    };
    has(
        "restapi.certfile",
        &n.path("restapi.crt"),
        "restapi",
        Kind::Certificate,
    );
    has(
        "restapi.keyfile",
        &n.path("restapi.key"),
        "restapi",
        Kind::Key(KeyRule::Agent),
    );
    has("restapi.cafile", &n.path("ca.crt"), "restapi", Kind::Ca);
    has("etcd3.cacert", &n.path("ca.crt"), "etcd3", Kind::Ca);
    has(
        "etcd3.cert",
        &n.path("client.crt"),
        "etcd3",
        Kind::Certificate,
    );
    has(
        "etcd3.key",
        &n.path("client.key"),
        "etcd3",
        Kind::Key(KeyRule::Agent),
    );
    has("ctl.cacert", &n.path("ca.crt"), "ctl", Kind::Ca);
    has(
        "ctl.certfile",
        &n.path("client.crt"),
        "ctl",
        Kind::Certificate,
    );
    has(
        "ctl.keyfile",
        &n.path("client.key"),
        "ctl",
        Kind::Key(KeyRule::Agent),
    );
    has(
        "postgresql.parameters.ssl_cert_file",
        &n.path("postgresql.crt"),
        "postgresql",
        Kind::Certificate,
    );
    // Relative PostgreSQL paths are in the data directory.
    has(
        "postgresql.parameters.ssl_key_file",
        &n.path("data/server.key"),
        "postgresql",
        Kind::Key(KeyRule::PostgresServer),
    );
    has(
        "postgresql.parameters.ssl_ca_file",
        &n.path("ca.crt"),
        "postgresql",
        Kind::Ca,
    );
    has(
        "postgresql.authentication.replication.sslcert",
        Path::new("/x/rep.crt"),
        "replication",
        Kind::Certificate,
    );
    has(
        "postgresql.authentication.replication.sslkey",
        Path::new("/x/rep.key"),
        "replication",
        Kind::Key(KeyRule::Libpq),
    );
    has(
        "postgresql.authentication.replication.sslrootcert",
        &n.path("ca.crt"),
        "replication",
        Kind::Ca,
    );
}

#[test]
fn the_seeds_ssl_in_bootstrap_dcs_is_checked_with_defaults_in_the_data_dir() {
    let n = Node::new();
    let yaml = n
        .yaml()
        .replace(
            &format!(
                "\x20 parameters: {{ssl: 'on', ssl_cert_file: {d}/postgresql.crt, ssl_key_file: {d}/postgresql.key, ssl_ca_file: {d}/ca.crt}}\n",
                d = n.dir.path().display()
            ),
            "",
        )
        .replace("scope: demo\n", "scope: demo\nbootstrap: {dcs: {postgresql: {parameters: {ssl: 'on'}}}}\n");
    let cfg = Config::from_yaml_str(&yaml, &BTreeMap::new(), "node.yml").unwrap();
    let files = tls_files(&cfg);
    assert!(files.iter().any(|f| f.path == n.path("data/server.crt")
        && f.key == "postgresql.parameters.ssl_cert_file (default)"));
    // The data directory is not initialized: a note, not an error.
    let f = check_files_at(&cfg, unix_now(), &RunAs::current());
    let mine = only(&f, &n.path("data/server.crt"));
    assert_eq!(mine.len(), 1, "{}", text(&f));
    assert_eq!(mine[0].severity, Severity::Note);
    assert!(
        mine[0].problem.contains("not initialized yet"),
        "{}",
        mine[0]
    );
    // Initialized: a missing server.crt is an error.
    std::fs::create_dir_all(n.path("data")).unwrap();
    std::fs::write(n.path("data/PG_VERSION"), "16\n").unwrap();
    let f = check_files_at(&cfg, unix_now(), &RunAs::current());
    let mine = only(&f, &n.path("data/server.crt"));
    assert_eq!(mine[0].severity, Severity::Error, "{}", text(&f));
    assert!(mine[0].problem.contains("does not exist"), "{}", mine[0]);
}

#[test]
fn a_missing_file_is_an_error_naming_every_key_that_uses_it() {
    let n = Node::new();
    std::fs::remove_file(n.path("ca.crt")).unwrap();
    let f = n.check();
    let mine = only(&f, &n.path("ca.crt"));
    assert_eq!(mine.len(), 1, "{}", text(&f));
    let m = mine[0];
    assert_eq!(m.severity, Severity::Error);
    assert!(m.problem.contains("does not exist"), "{m}");
    for k in [
        "restapi.cafile",
        "etcd3.cacert",
        "ctl.cacert",
        "postgresql.parameters.ssl_ca_file",
    ] {
        assert!(m.keys.iter().any(|x| x == k), "{k} in {m}");
    }
    assert!(
        m.fix
            .contains("tandem certs issue --dir <CA dir> --db pg1=10.0.0.1"),
        "{m}"
    );
}

#[test]
fn an_unreadable_file_names_owner_mode_and_the_acl_fix() {
    // Root reads everything, so the refusal is handed in as the error open() gives others.
    let n = Node::new();
    let key = n.path("client.key");
    let uses = vec![use_of(
        &key,
        "etcd3.key",
        "etcd3",
        Kind::Key(KeyRule::Agent),
    )];
    let run = RunAs {
        uid: 4242,
        name: "postgres".into(),
    };
    let err = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    let f = unreadable(&key, &["etcd3.key".into()], &uses, &err, &run, "X");
    assert_eq!(f.severity, Severity::Error);
    assert!(
        f.problem
            .contains("postgres (the agent's user) cannot read it: owner root, mode 0600"),
        "{f}"
    );
    assert!(
        f.fix
            .contains(&format!("`chown postgres {}`", key.display())),
        "{f}"
    );
    assert!(
        f.fix
            .contains(&format!("setfacl -m u:postgres:r {}", key.display())),
        "{f}"
    );
    // PostgreSQL's own key: chown, since PostgreSQL does not honour ACLs for its key.
    let uses = vec![use_of(
        &key,
        "k",
        "postgresql",
        Kind::Key(KeyRule::PostgresServer),
    )];
    let f = unreadable(&key, &["k".into()], &uses, &err, &run, "X");
    assert!(f.fix.contains("chmod 0600"), "{f}");
}

#[test]
fn postgresql_key_owner_and_mode_follow_postgresqls_rule() {
    let p = Path::new("/k");
    let pg = RunAs {
        uid: 4242,
        name: "postgres".into(),
    };
    let rule = KeyRule::PostgresServer;
    assert_eq!(key_mode_problem(rule, p, 4242, 0o600, &pg), None);
    assert_eq!(key_mode_problem(rule, p, 4242, 0o400, &pg), None);
    assert_eq!(key_mode_problem(rule, p, 0, 0o640, &pg), None);
    let (sev, problem, fix) = key_mode_problem(rule, p, 4242, 0o644, &pg).unwrap();
    assert_eq!(sev, Severity::Error);
    assert!(
        problem.contains("mode 0644") && problem.contains("PostgreSQL refuses"),
        "{problem}"
    );
    assert_eq!(fix, "`chmod 0600 /k`");
    assert!(key_mode_problem(rule, p, 4242, 0o640, &pg).is_some());
    let (_, problem, fix) = key_mode_problem(rule, p, 0, 0o644, &pg).unwrap();
    assert!(problem.contains("root's with mode 0644"), "{problem}");
    assert_eq!(fix, "`chown postgres /k && chmod 0600 /k`");
    let (_, problem, fix) = key_mode_problem(rule, p, 4343, 0o600, &pg).unwrap();
    assert!(problem.contains("owned by 4343"), "{problem}");
    assert!(problem.contains("running as postgres"), "{problem}");
    assert_eq!(fix, "`chown postgres /k && chmod 0600 /k`");
}

#[test]
fn libpq_keys_and_the_agents_keys_have_their_own_rules() {
    let p = Path::new("/k");
    let me = RunAs {
        uid: 4242,
        name: "postgres".into(),
    };
    let (sev, problem, _) = key_mode_problem(KeyRule::Libpq, p, 4242, 0o640, &me).unwrap();
    assert_eq!(sev, Severity::Error);
    assert!(problem.contains("libpq refuses"), "{problem}");
    assert_eq!(key_mode_problem(KeyRule::Libpq, p, 4343, 0o644, &me), None);
    assert_eq!(key_mode_problem(KeyRule::Libpq, p, 0, 0o640, &me), None);
    assert!(key_mode_problem(KeyRule::Libpq, p, 0, 0o644, &me).is_some());
    // The agent's own keys: world-readable is a warning; group (an ACL mask) is fine.
    assert_eq!(key_mode_problem(KeyRule::Agent, p, 0, 0o640, &me), None);
    let (sev, _, fix) = key_mode_problem(KeyRule::Agent, p, 4242, 0o644, &me).unwrap();
    assert_eq!(sev, Severity::Warning);
    assert!(fix.starts_with("`chmod 0600 /k`"), "{fix}");
}

#[test]
fn a_postgresql_key_readable_by_others_or_owned_by_someone_else_is_an_error() {
    let n = Node::new();
    let key = n.path("postgresql.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let f = n.check();
    let mine = only(&f, &key);
    assert_eq!(mine.len(), 1, "{}", text(&f));
    assert_eq!(mine[0].severity, Severity::Error);
    assert_eq!(mine[0].fix, format!("`chmod 0600 {}`", key.display()));
    // Owned by another user (the tests run as root, who may chown).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if std::os::unix::fs::chown(&key, Some(4343), None).is_ok() && RunAs::current().uid != 4343 {
        let f = n.check();
        let mine = only(&f, &key);
        assert_eq!(mine.len(), 1, "{}", text(&f));
        assert!(mine[0].problem.contains("owned by 4343"), "{}", mine[0]);
    }
}

#[test]
fn expired_and_not_yet_valid_certificates_are_errors_naming_the_date() {
    let n = Node::new();
    n.reissue("restapi", &n.ca, &["10.0.0.1"], -100, -2);
    let f = n.check();
    let mine = only(&f, &n.path("restapi.crt"));
    assert_eq!(mine.len(), 1, "{}", text(&f));
    assert_eq!(mine[0].severity, Severity::Error);
    let day = (OffsetDateTime::now_utc() - time::Duration::days(2)).date();
    assert!(
        mine[0].problem.contains(&format!("expired on {day}")),
        "{}",
        mine[0]
    );
    assert!(mine[0].fix.contains("tandem certs issue"), "{}", mine[0]);

    n.reissue("restapi", &n.ca, &["10.0.0.1"], 3, 100);
    let f = n.check();
    let mine = only(&f, &n.path("restapi.crt"));
    assert_eq!(mine.len(), 1, "{}", text(&f));
    let day = (OffsetDateTime::now_utc() + time::Duration::days(3)).date();
    assert!(
        mine[0].problem.contains(&format!("not valid before {day}")),
        "{}",
        mine[0]
    );
}

#[test]
fn a_certificate_ending_within_30_days_is_a_warning_with_the_days_left() {
    let n = Node::new();
    n.reissue("client", &n.ca, &["pg1"], -1, 12);
    let f = n.check();
    let mine = only(&f, &n.path("client.crt"));
    assert_eq!(mine.len(), 1, "{}", text(&f));
    assert_eq!(mine[0].severity, Severity::Warning);
    // 12 days less the moments since it was made: 11 or 12 whole days.
    let p = &mine[0].problem;
    assert!(
        p.contains("expires in 11 days") || p.contains("expires in 12 days"),
        "{p}"
    );
    assert!(!has_errors(&f));
    n.reissue("client", &n.ca, &["pg1"], -1, 31);
    assert!(only(&n.check(), &n.path("client.crt")).is_empty());
}

#[test]
fn a_certificate_from_another_ca_is_reported_against_the_ca_that_verifies_it() {
    let n = Node::new();
    let other = new_ca("other-ca");
    n.reissue("restapi", &other, &["10.0.0.1"], -1, 100);
    let f = n.check();
    let mine = only(&f, &n.path("restapi.crt"));
    assert_eq!(mine.len(), 1, "{}", text(&f));
    let m = mine[0];
    assert_eq!(m.severity, Severity::Error);
    assert!(m.problem.contains("issued by CN=other-ca"), "{m}");
    assert!(
        m.problem.contains(&format!(
            "not signed by the CA in {} (ctl.cacert, CN=test-ca)",
            n.path("ca.crt").display()
        )),
        "{m}"
    );
    // A client certificate from another CA: etcd's own trust decides, so a warning.
    n.reissue("client", &other, &["pg1"], -1, 100);
    let f = n.check();
    let mine = only(&f, &n.path("client.crt"));
    assert!(!mine.is_empty(), "{}", text(&f));
    assert!(
        mine.iter().all(|m| m.severity == Severity::Warning),
        "{}",
        text(&f)
    );
}

#[test]
fn a_certificate_chains_through_the_intermediates_bundled_with_it() {
    let root = new_ca("root");
    // An intermediate CA signed by the root.
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "intermediate");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ikey = KeyPair::generate().unwrap();
    let ipem = p.signed_by(&ikey, &root.issuer).unwrap().pem();
    let inter = Ca {
        pem: ipem.clone(),
        issuer: Issuer::new(p, ikey),
    };
    let (c, _) = leaf(&inter, "pg1", &["10.0.0.1"], -1, 10);
    let facts = |pem: &str| parse_pem_certs(pem.as_bytes()).unwrap();
    let bundle = facts(&format!("{c}{ipem}"));
    assert!(chains_to(&bundle, &facts(&root.pem)));
    assert!(!chains_to(&facts(&c), &facts(&root.pem)));
    assert!(chains_to(&facts(&c), &facts(&ipem)));
    assert!(!chains_to(&bundle, &facts(&new_ca("x").pem)));
}

#[test]
fn a_ca_file_that_holds_no_ca_is_an_error() {
    let n = Node::new();
    let yaml = n.yaml().replace(
        &format!("cafile: {}/ca.crt", n.dir.path().display()),
        &format!("cafile: {}/client.crt", n.dir.path().display()),
    );
    let cfg = Config::from_yaml_str(&yaml, &BTreeMap::new(), "node.yml").unwrap();
    let f = check_files_at(&cfg, unix_now(), &RunAs::current());
    let m = only(&f, &n.path("client.crt"))
        .into_iter()
        .find(|m| m.problem.contains("not a CA certificate"))
        .unwrap_or_else(|| panic!("{}", text(&f)));
    assert_eq!(m.severity, Severity::Error);
    assert!(
        m.fix.contains("point restapi.cafile at the CA certificate"),
        "{m}"
    );
}

#[test]
fn a_certificate_without_the_connect_address_names_it_and_lists_what_it_has() {
    let n = Node::new();
    n.reissue("restapi", &n.ca, &["10.0.0.2", "pg1"], -1, 100);
    let f = n.check();
    let mine = only(&f, &n.path("restapi.crt"));
    assert_eq!(mine.len(), 1, "{}", text(&f));
    let m = mine[0];
    assert_eq!(m.severity, Severity::Error);
    assert!(
        m.problem
            .contains("does not name 10.0.0.1 (restapi.connect_address)"),
        "{m}"
    );
    assert!(m.problem.contains("it has: IP:10.0.0.2, DNS:pg1"), "{m}");
    assert!(m.problem.contains("the common name does not count"), "{m}");
    assert!(m.fix.contains("IP:10.0.0.1"), "{m}");
    // A wildcard connect address names nothing to check.
    let mut cfg = n.config();
    cfg.restapi.connect_address = "0.0.0.0:8008".into();
    let f = check_files_at(&cfg, unix_now(), &RunAs::current());
    assert!(only(&f, &n.path("restapi.crt")).is_empty(), "{}", text(&f));
    // PostgreSQL's: a warning while nothing connects with verify-full ...
    n.reissue("postgresql", &n.ca, &["10.0.0.2"], -1, 100);
    let mut cfg = n.config();
    let f = check_files_at(&cfg, unix_now(), &RunAs::current());
    let mine = only(&f, &n.path("postgresql.crt"));
    assert_eq!(mine.len(), 1, "{}", text(&f));
    assert_eq!(mine[0].severity, Severity::Warning);
    // ... an error when the standbys do.
    cfg.postgresql.authentication.replication.sslmode = Some("verify-full".into());
    let f = check_files_at(&cfg, unix_now(), &RunAs::current());
    assert_eq!(
        only(&f, &n.path("postgresql.crt"))[0].severity,
        Severity::Error
    );
}

#[test]
fn names_match_ip_to_ip_and_dns_to_dns_with_one_label_wildcards() {
    let ca = new_ca("c");
    let (c, _) = leaf(
        &ca,
        "10.0.0.9",
        &["10.0.0.1", "*.example.org", "db.local"],
        -1,
        1,
    );
    let f = &parse_pem_certs(c.as_bytes()).unwrap()[0];
    assert!(f.covers("10.0.0.1"));
    assert!(!f.covers("10.0.0.9"), "the common name does not count");
    assert!(f.covers("pg1.example.org"));
    assert!(f.covers("PG1.Example.org."));
    assert!(!f.covers("a.b.example.org"));
    assert!(!f.covers("example.org"));
    assert!(f.covers("db.local"));
    assert!(!f.covers("db.local.evil"));
    assert_eq!(host_of("[::1]:8008"), "::1");
    assert_eq!(host_of("pg1.example.org:5432"), "pg1.example.org");
    assert_eq!(host_of("10.0.0.1"), "10.0.0.1");
}

#[test]
fn a_key_that_does_not_belong_to_its_certificate_is_an_error() {
    let n = Node::new();
    let (_, other_key) = leaf(&n.ca, "x", &["x"], -1, 10);
    write(n.dir.path(), "postgresql.key", &other_key, 0o600);
    let f = n.check();
    let mine = only(&f, &n.path("postgresql.key"));
    assert_eq!(mine.len(), 1, "{}", text(&f));
    assert!(
        mine[0]
            .problem
            .contains("does not belong to the certificate"),
        "{}",
        mine[0]
    );
    write(n.dir.path(), "postgresql.key", "not a key", 0o600);
    let f = n.check();
    assert!(only(&f, &n.path("postgresql.key"))[0]
        .problem
        .contains("no private key"));
    // A combined certfile (Patroni's server.pem): the key is found in it.
    n.reissue("postgresql", &n.ca, &["10.0.0.1"], -1, 100);
    let (c, k) = leaf(&n.ca, "pg1", &["10.0.0.1"], -1, 100);
    write(n.dir.path(), "server.pem", &format!("{c}{k}"), 0o600);
    let mut cfg = n.config();
    cfg.restapi.certfile = Some(n.path("server.pem"));
    cfg.restapi.keyfile = None;
    let f = check_files_at(&cfg, unix_now(), &RunAs::current());
    assert!(f.is_empty(), "{}", text(&f));
}

#[test]
fn a_file_that_is_not_a_certificate_is_an_error() {
    let n = Node::new();
    write(n.dir.path(), "client.crt", "hello", 0o644);
    let f = n.check();
    let mine = only(&f, &n.path("client.crt"));
    assert_eq!(mine.len(), 1, "{}", text(&f));
    assert!(
        mine[0].problem.contains("cannot be read as a certificate"),
        "{}",
        mine[0]
    );
    assert!(
        mine[0].keys.contains(&"etcd3.cert".to_string())
            && mine[0].keys.contains(&"ctl.certfile".to_string())
    );
}

#[test]
fn expiry_metrics_and_warnings_come_from_the_registered_files() {
    let n = Node::new();
    n.reissue("client", &n.ca, &["pg1"], -1, 10);
    register(&n.config());
    let now = unix_now();
    let certs = in_use();
    let client = certs
        .iter()
        .find(|c| c.key == "etcd3.cert")
        .expect("etcd3.cert registered");
    assert!((client.days_left(now) - 10.0).abs() < 0.01, "{client:?}");
    assert!(
        !certs.iter().any(|c| c.key.ends_with("key")),
        "keys are not certificates"
    );
    let text = expiry_metrics(&certs, "scope=\"demo\",name=\"pg1\"", now);
    assert!(
        text.starts_with("# HELP tandem_certificate_expiry_days "),
        "{text}"
    );
    assert!(
        text.contains("# TYPE tandem_certificate_expiry_days gauge\n"),
        "{text}"
    );
    let line = format!(
        "tandem_certificate_expiry_days{{scope=\"demo\",name=\"pg1\",file=\"{}\",key=\"etcd3.cert\",role=\"etcd3\"}} 10.00\n",
        n.path("client.crt").display()
    );
    assert!(text.contains(&line), "{text}");
    let w = expiry_warning(client, now).unwrap();
    assert!(
        w.contains("expires in 9 days") || w.contains("expires in 10 days"),
        "{w}"
    );
    assert!(w.contains("tandem certs issue"), "{w}");
    // Renewed on disk: read again.
    n.reissue("client", &n.ca, &["pg1"], -1, 400);
    let certs = in_use();
    let client = certs.iter().find(|c| c.key == "etcd3.cert").unwrap();
    assert!(client.days_left(now) > 399.0, "{client:?}");
    assert_eq!(expiry_warning(client, now), None);
    assert_eq!(expiry_metrics(&[], "x", now), "");
}

// --- handshakes ------------------------------------------------------------------------------

fn der_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// A TLS server on 127.0.0.1 with `cert`; with `client_ca`, client certificates are required.
async fn tls_server(cert: (String, String), client_ca: Option<&str>) -> String {
    let provider = crate::api::tls::provider();
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        None => b.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in der_certs(ca) {
                roots.add(c).unwrap();
            }
            b.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap(),
            )
        }
    };
    let key = rustls_pemfile::private_key(&mut cert.1.as_bytes())
        .unwrap()
        .unwrap();
    let config = b.with_single_cert(der_certs(&cert.0), key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    let _ = s.write_all(b"hello").await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    });
    addr
}

fn etcd_config(n: &Node, hosts: &[&str], client: bool) -> crate::config::EtcdConfig {
    let mut e = n.config().etcd3;
    e.hosts = hosts.iter().map(|h| h.to_string()).collect();
    if !client {
        e.cert = None;
        e.key = None;
    }
    e
}

#[tokio::test]
async fn etcd_handshake_accepts_the_right_certificates() {
    let n = Node::new();
    let server = tls_server(
        leaf(&n.ca, "etcd1", &["127.0.0.1"], -1, 10),
        Some(&n.ca.pem),
    )
    .await;
    let f = check_etcd(&etcd_config(&n, &[&server], true), HANDSHAKE_TIMEOUT).await;
    assert!(f.is_empty(), "{}", text(&f));
}

#[tokio::test]
async fn etcd_handshake_names_another_ca_a_missing_name_and_an_expired_certificate() {
    let n = Node::new();
    let other = new_ca("other-ca");
    let ca_file = n.path("ca.crt").display().to_string();
    let s1 = tls_server(leaf(&other, "etcd1", &["127.0.0.1"], -1, 10), None).await;
    let s2 = tls_server(leaf(&n.ca, "etcd2", &["10.9.9.9", "etcd2"], -1, 10), None).await;
    let s3 = tls_server(leaf(&n.ca, "etcd3", &["127.0.0.1"], -10, -1), None).await;
    let f = check_etcd(&etcd_config(&n, &[&s1, &s2, &s3], true), HANDSHAKE_TIMEOUT).await;
    assert_eq!(f.len(), 3, "{}", text(&f));
    assert!(f.iter().all(|x| x.severity == Severity::Error));
    let find = |s: &str| {
        f.iter()
            .find(|x| x.file == format!("etcd at {s}"))
            .unwrap_or_else(|| panic!("{s}: {}", text(&f)))
    };
    let m = find(&s1);
    assert!(
        m.problem.contains(&format!("the certificate presented by etcd at {s1} (CN=etcd1, issued by CN=other-ca) was not signed by the CA in {ca_file}")),
        "{m}"
    );
    let m = find(&s2);
    assert!(
        m.problem
            .contains("does not include 127.0.0.1 (it has: IP:10.9.9.9, DNS:etcd2"),
        "{m}"
    );
    let m = find(&s3);
    assert!(m.problem.contains("expired on"), "{m}");
}

#[tokio::test]
async fn etcd_handshake_reports_a_refused_or_missing_client_certificate() {
    let n = Node::new();
    let other = new_ca("other-ca");
    let s = tls_server(
        leaf(&n.ca, "etcd1", &["127.0.0.1"], -1, 10),
        Some(&other.pem),
    )
    .await;
    let f = check_etcd(&etcd_config(&n, &[&s], true), HANDSHAKE_TIMEOUT).await;
    assert_eq!(f.len(), 1, "{}", text(&f));
    assert_eq!(f[0].file, n.path("client.crt").display().to_string());
    assert!(
        f[0].problem
            .contains(&format!("etcd at {s} refused this client certificate")),
        "{}",
        f[0]
    );
    let f = check_etcd(&etcd_config(&n, &[&s], false), HANDSHAKE_TIMEOUT).await;
    assert_eq!(f.len(), 1, "{}", text(&f));
    assert!(
        f[0].problem.contains("requires a client certificate"),
        "{}",
        f[0]
    );
    assert_eq!(f[0].keys, vec!["etcd3.cert", "etcd3.key"]);
}

#[tokio::test]
async fn an_etcd_that_is_down_is_a_note_not_a_tls_finding() {
    let n = Node::new();
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let f = check_etcd(&etcd_config(&n, &[&addr], true), HANDSHAKE_TIMEOUT).await;
    assert_eq!(f.len(), 1, "{}", text(&f));
    assert_eq!(f[0].severity, Severity::Note);
    assert!(!has_errors(&f));
    // Plain http etcd: no handshake at all.
    let mut e = etcd_config(&n, &[&addr], true);
    e.protocol = "http".into();
    e.cacert = None;
    e.cert = None;
    e.key = None;
    assert!(check_etcd(&e, HANDSHAKE_TIMEOUT).await.is_empty());
}

/// PostgreSQL never runs as root: run as root (`tandem validate` often is), the checks judge
/// the keys for the owner of the data directory (or of its nearest existing parent).
#[test]
fn as_root_the_data_directorys_owner_is_who_runs_postgresql() {
    let n = Node::new();
    let cfg = n.config();
    if RunAs::current().uid != 0 {
        assert_eq!(RunAs::for_config(&cfg).uid, RunAs::current().uid);
        return;
    }
    // No data directory yet: its parent (the temp dir) is root's, so root it is.
    assert_eq!(RunAs::for_config(&cfg).uid, 0);
    std::fs::create_dir(n.path("data")).unwrap();
    std::os::unix::fs::chown(n.path("data"), Some(65534), None).unwrap();
    let run = RunAs::for_config(&cfg);
    assert_eq!(run.uid, 65534);
    // A PostgreSQL key owned by a third user: the finding names the user PostgreSQL runs as.
    std::os::unix::fs::chown(n.path("postgresql.key"), Some(4242), None).unwrap();
    let f = check_files_at(&cfg, unix_now(), &run);
    let t = text(
        &only(&f, &n.path("postgresql.key"))
            .into_iter()
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert!(t.contains("nobody") || t.contains("65534"), "{t}");
}
