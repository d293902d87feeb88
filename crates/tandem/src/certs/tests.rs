//! Unit tests of `tandem certs`: the certificates parsed back and verified with rustls.

use super::*;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

fn der(pem: &str) -> CertificateDer<'static> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("pem");
    CertificateDer::from(p.contents)
}

fn seed_args(dir: &Path) -> IssueArgs {
    IssueArgs {
        dir: dir.to_path_buf(),
        db: vec![
            "postgres-01=192.168.0.203".into(),
            "postgres-02=192.168.0.204".into(),
            "postgres-03=192.168.0.205".into(),
        ],
        router: vec![
            "haproxy-01=192.168.0.200".into(),
            "haproxy-02=192.168.0.201".into(),
            "haproxy-03=192.168.0.202".into(),
        ],
        ..Default::default()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Arc<rustls::RootCertStore> {
    let mut r = rustls::RootCertStore::empty();
    r.add(der(ca_pem)).expect("CA into the root store");
    Arc::new(r)
}

/// rustls' (webpki's) verdict on `cert` as a server certificate for `name`.
fn verify_server(ca_pem: &str, cert_pem: &str, name: &str) -> Result<(), rustls::Error> {
    let v = rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
        .build()
        .expect("verifier");
    let name = ServerName::try_from(name.to_string()).expect("server name");
    v.verify_server_cert(&der(cert_pem), &[], &name, &[], UnixTime::now())
        .map(|_| ())
}

fn verify_client(ca_pem: &str, cert_pem: &str) -> Result<(), rustls::Error> {
    let v = rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider())
        .build()
        .expect("verifier");
    v.verify_client_cert(&der(cert_pem), &[], UnixTime::now())
        .map(|_| ())
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn roles_parse_with_aliases_and_refuse_unknown_words() {
    assert_eq!(parse_roles("db", "t").unwrap(), Role::DB.to_vec());
    assert_eq!(parse_roles("router", "t").unwrap(), vec![Role::Client]);
    assert_eq!(
        parse_roles("restapi, pg,etcd", "t").unwrap(),
        vec![Role::Etcd, Role::Postgresql, Role::Restapi]
    );
    let e = parse_roles("etcd,haproxy", "--role")
        .unwrap_err()
        .to_string();
    assert!(e.contains("--role: unknown role 'haproxy'"), "{e}");
    assert!(parse_roles(" , ", "--role").is_err());
}

#[test]
fn host_flags_split_ips_from_dns_names_and_refuse_nonsense() {
    let h = Host::parse("db1=10.0.0.11,db1.example.org,::1", &Role::DB, "--db").unwrap();
    assert_eq!(h.name, "db1");
    assert_eq!(
        h.ips,
        vec![
            "10.0.0.11".parse::<IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
    assert_eq!(h.dns, vec!["db1.example.org"]);
    for bad in ["10.0.0.300", "db_1.example.org", "-x"] {
        let e = Host::parse(&format!("db1={bad}"), &Role::DB, "--db")
            .unwrap_err()
            .to_string();
        assert!(e.contains("neither an IP address nor a DNS name"), "{e}");
    }
    let e = Host::parse("../etc=10.0.0.1", &Role::DB, "--db")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a usable host name"), "{e}");
    let e = Host::parse("db1", &Role::DB, "--db")
        .unwrap_err()
        .to_string();
    assert!(e.contains("server roles but no address"), "{e}");
    // A client needs no address.
    assert!(Host::parse("admin", &Role::ROUTER, "--router").is_ok());
}

#[test]
fn servers_carry_loopback_names_and_clients_do_not() {
    let h = Host::parse("postgres-01=192.168.0.203", &Role::DB, "--db").unwrap();
    let (ips, dns) = h.subject_alt_names(Role::Etcd);
    assert_eq!(
        ips,
        vec![
            "192.168.0.203".parse::<IpAddr>().unwrap(),
            "127.0.0.1".parse().unwrap()
        ]
    );
    assert_eq!(dns, vec!["postgres-01", "localhost"]);
    let (ips, dns) = h.subject_alt_names(Role::Client);
    assert_eq!(ips, vec!["192.168.0.203".parse::<IpAddr>().unwrap()]);
    assert_eq!(dns, vec!["postgres-01"]);
}

#[test]
fn topology_file_gives_hosts_roles_and_owners_and_names_its_mistakes() {
    let t = parse_topology(
        "owner: postgres\netcd_owner: etcd\ndays: 30\nhosts:\n\
         - {name: postgres-01, addresses: [192.168.0.203], roles: db}\n\
         - {name: haproxy-01, addresses: [192.168.0.200], roles: [client], owner: root}\n",
        "hosts.yml",
    )
    .unwrap();
    assert_eq!(t.hosts.len(), 2);
    assert_eq!(t.hosts[0].roles, Role::DB.to_vec());
    assert_eq!(t.hosts[1].roles, vec![Role::Client]);
    assert_eq!(t.hosts[1].owner.as_deref(), Some("root"));
    assert_eq!(t.owner.as_ref().map(|o| o.0.as_str()), Some("postgres"));
    assert_eq!(t.days, Some(30));
    let e = parse_topology(
        "hosts:\n- {name: a, adresses: [10.0.0.1], roles: db}\n",
        "hosts.yml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("topology file hosts.yml") && e.contains("adresses"),
        "{e}"
    );
    let e = parse_topology(
        "hosts:\n- {name: a, addresses: [10.0.0.1], roles: dbs}\n",
        "h",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("host 'a'") && e.contains("unknown role 'dbs'"),
        "{e}"
    );
}

#[test]
fn issue_refuses_twice_the_same_host_and_no_host_at_all() {
    let mut a = seed_args(Path::new("/nonexistent"));
    a.host = vec!["postgres-01=10.0.0.1".into()];
    let e = a.topology().unwrap_err().to_string();
    assert!(e.contains("'postgres-01' is given twice"), "{e}");
    let e = IssueArgs::default().topology().unwrap_err().to_string();
    assert!(e.contains("no hosts"), "{e}");
    let mut a = seed_args(Path::new("/nonexistent"));
    a.role = Some("etcd".into());
    assert!(a.topology().unwrap_err().to_string().contains("--role"));
}

#[test]
fn a_missing_owner_is_an_error_naming_the_flag_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = seed_args(dir.path());
    a.owner = Some("no-such-user-tandem".into());
    let e = issue(&a).err().expect("refused").to_string();
    assert!(
        e.contains("--owner no-such-user-tandem") && e.contains("no user"),
        "{e}"
    );
    assert!(!dir.path().join(CA_KEY).exists(), "nothing written");
    let e = resolve_owner("root:no-such-group-tandem", "--etcd-owner")
        .unwrap_err()
        .to_string();
    assert!(e.contains("--etcd-owner") && e.contains("no group"), "{e}");
}

#[test]
fn the_seeds_six_hosts_get_valid_certificates_with_the_right_names_and_modes() {
    let dir = tempfile::tempdir().unwrap();
    let report = issue(&seed_args(dir.path())).unwrap();
    let d = dir.path();
    assert_eq!(mode(&d.join(CA_KEY)), 0o600);
    assert_eq!(mode(&d.join(CA_CERT)), 0o644);
    let ca = read(d.join(CA_CERT));
    let ca_info = CertInfo::parse(ca.as_bytes()).unwrap();
    assert!(ca_info.is_ca);
    assert_eq!(ca_info.common_name, DEFAULT_CA_NAME);

    for n in 1..=3 {
        let h = format!("postgres-0{n}");
        let ip = format!("192.168.0.{}", 202 + n);
        for role in Role::DB {
            let key = d.join(&h).join(format!("{}.key", role.name()));
            let crt = d.join(&h).join(format!("{}.crt", role.name()));
            assert_eq!(mode(&key), 0o600, "{}", key.display());
            assert_eq!(mode(&crt), 0o644, "{}", crt.display());
            assert!(read(key).contains("PRIVATE KEY"));
        }
        assert_eq!(read(d.join(&h).join(CA_CERT)), ca);

        // etcd: server and peer, for the node IP, 127.0.0.1 and localhost.
        let etcd = read(d.join(&h).join("etcd.crt"));
        for name in [ip.as_str(), "127.0.0.1", "localhost", h.as_str()] {
            verify_server(&ca, &etcd, name).unwrap_or_else(|e| panic!("{h} etcd {name}: {e}"));
        }
        verify_client(&ca, &etcd).expect("etcd peer certificate usable as a client");
        assert!(verify_server(&ca, &etcd, "192.168.0.250").is_err());

        let (_, p) = x509_parser::pem::parse_x509_pem(etcd.as_bytes()).unwrap();
        let x = p.parse_x509().unwrap();
        let sans: Vec<String> = x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|g| match g {
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
                }
                GeneralName::DNSName(s) => s.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sans,
            vec![
                ip.clone(),
                "127.0.0.1".into(),
                h.clone(),
                "localhost".into()
            ]
        );
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        assert!(!x.basic_constraints().unwrap().unwrap().value.ca);
        assert_eq!(x.issuer().to_string(), format!("CN={DEFAULT_CA_NAME}"));

        // PostgreSQL and REST: servers only.
        for role in ["postgresql", "restapi"] {
            let c = read(d.join(&h).join(format!("{role}.crt")));
            verify_server(&ca, &c, &ip).unwrap_or_else(|e| panic!("{h} {role}: {e}"));
            assert!(verify_client(&ca, &c).is_err(), "{h} {role} is no client");
        }
        // The client certificate is refused as a server one and accepted as a client.
        let c = read(d.join(&h).join("client.crt"));
        verify_client(&ca, &c).expect("client");
        assert!(verify_server(&ca, &c, &ip).is_err());
    }
    for n in 1..=3 {
        let h = d.join(format!("haproxy-0{n}"));
        verify_client(&ca, &read(h.join("client.crt"))).expect("router client");
        assert!(!h.join("etcd.crt").exists() && !h.join("restapi.crt").exists());
    }

    // Another CA's certificates do not verify against this one.
    let other = tempfile::tempdir().unwrap();
    issue(&seed_args(other.path())).unwrap();
    let foreign = read(other.path().join("postgres-01/etcd.crt"));
    assert!(verify_server(&ca, &foreign, "192.168.0.203").is_err());
    assert!(verify_client(&ca, &read(other.path().join("haproxy-01/client.crt"))).is_err());

    // The report shows every file and the configuration keys, never a key's content.
    let text = report.render();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(text.contains("CA created"));
    for key in [
        "etcd3:",
        "cacert:",
        "restapi:",
        "certfile:",
        "keyfile:",
        "cafile:",
        "ssl_cert_file:",
        "ssl_key_file:",
        "ssl_ca_file:",
        "ctl:",
        "--cert-file=",
        "--peer-key-file=",
        "--client-cert-auth",
        "--trusted-ca-file=",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    let pg_key = d.join("postgres-02/postgresql.key").display().to_string();
    assert!(text.contains(&format!("ssl_key_file: {pg_key}")), "{text}");
    assert_eq!(text.matches("== ").count(), 6);
}

#[test]
fn reissue_keeps_the_ca_and_replaces_the_host_certificates_unless_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut a = seed_args(d);
    a.router.clear();
    issue(&a).unwrap();
    let ca1 = read(d.join(CA_CERT));
    let key1 = read(d.join(CA_KEY));
    let leaf1 = read(d.join("postgres-01/restapi.crt"));

    let r = issue(&a).unwrap();
    assert_eq!(r.ca.as_ref().unwrap().0, CaOutcome::Kept);
    assert_eq!(read(d.join(CA_CERT)), ca1, "CA kept");
    assert_eq!(read(d.join(CA_KEY)), key1, "CA key kept");
    let leaf2 = read(d.join("postgres-01/restapi.crt"));
    assert_ne!(leaf1, leaf2, "host certificate replaced");
    verify_server(&ca1, &leaf2, "192.168.0.203").expect("still signed by the kept CA");
    // init on an existing CA keeps it too.
    let r = init(&InitArgs {
        dir: d.to_path_buf(),
        ca_name: "other".into(),
        days: 10,
        new_ca: false,
    })
    .unwrap();
    assert_eq!(r.ca.as_ref().unwrap().0, CaOutcome::Kept);
    assert!(r
        .render()
        .contains("--ca-name other applies to a new CA only"));
    assert_eq!(read(d.join(CA_CERT)), ca1);

    a.new_ca = true;
    a.db.truncate(1);
    let r = issue(&a).unwrap();
    assert_eq!(r.ca.as_ref().unwrap().0, CaOutcome::Replaced);
    let ca2 = read(d.join(CA_CERT));
    assert_ne!(ca1, ca2);
    verify_server(
        &ca2,
        &read(d.join("postgres-01/restapi.crt")),
        "192.168.0.203",
    )
    .unwrap();
    let text = r.render();
    assert!(
        text.contains("postgres-02, postgres-03"),
        "stale hosts named: {text}"
    );
}

#[test]
fn a_ca_with_a_missing_or_foreign_key_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let init_args = InitArgs {
        dir: d.to_path_buf(),
        ca_name: "lab-ca".into(),
        days: 100,
        new_ca: false,
    };
    let r = init(&init_args).unwrap();
    assert_eq!(r.ca.as_ref().unwrap().0, CaOutcome::Created);
    assert_eq!(mode(&d.join(CA_KEY)), 0o600);
    assert_eq!(
        CertInfo::parse(read(d.join(CA_CERT)).as_bytes())
            .unwrap()
            .common_name,
        "lab-ca"
    );
    // A key from another CA.
    let other = tempfile::tempdir().unwrap();
    init(&InitArgs {
        dir: other.path().to_path_buf(),
        ..init_args
    })
    .unwrap();
    std::fs::copy(other.path().join(CA_KEY), d.join(CA_KEY)).unwrap();
    let e = format!("{:#}", issue(&seed_args(d)).err().expect("refused"));
    assert!(
        e.contains("does not belong to") && e.contains("--new-ca"),
        "{e}"
    );
    std::fs::remove_file(d.join(CA_KEY)).unwrap();
    let e = format!("{:#}", issue(&seed_args(d)).err().expect("refused"));
    assert!(e.contains("restore the CA key"), "{e}");
}

#[test]
fn host_certificates_never_outlive_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = seed_args(dir.path());
    a.ca_days = Some(10);
    a.days = Some(400);
    let r = issue(&a).unwrap();
    let ca = CertInfo::parse(read(dir.path().join(CA_CERT)).as_bytes()).unwrap();
    let leaf = CertInfo::parse(read(dir.path().join("postgres-01/etcd.crt")).as_bytes()).unwrap();
    assert!(leaf.not_after <= ca.not_after);
    assert!(r.render().contains("end with the CA"));
}

#[test]
fn owners_are_applied_to_the_files_of_the_hosts_that_run_postgresql() {
    if !is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let (pg_uid, _) = lookup_user("nobody").unwrap().expect("nobody exists");
    let (etcd_uid, _) = lookup_user("daemon").unwrap().expect("daemon exists");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut a = seed_args(d);
    a.owner = Some("nobody".into());
    a.etcd_owner = Some("daemon".into());
    let text = issue(&a).unwrap().render();
    let uid = |p: &str| std::fs::metadata(d.join(p)).unwrap().uid();
    for f in [
        "postgresql.key",
        "postgresql.crt",
        "restapi.key",
        "client.key",
    ] {
        assert_eq!(uid(&format!("postgres-01/{f}")), pg_uid, "{f}");
    }
    assert_eq!(uid("postgres-01/etcd.key"), etcd_uid);
    assert_eq!(uid("postgres-01/etcd.crt"), etcd_uid);
    assert_eq!(mode(&d.join("postgres-01/postgresql.key")), 0o600);
    // Routers' files stay with the invoking user (root), the CA too.
    assert_eq!(uid("haproxy-01/client.key"), 0);
    assert_eq!(uid(CA_KEY), 0);
    assert!(text.contains("0600 nobody"), "{text}");
    assert!(!text.contains("PostgreSQL (running as postgres) cannot read"));
    // Without --owner, as root, the PostgreSQL key gets a note with the fix.
    let other = tempfile::tempdir().unwrap();
    let text = issue(&seed_args(other.path())).unwrap().render();
    assert!(text.contains("pass --owner postgres"), "{text}");
}

#[test]
fn the_snippet_uses_the_target_directory() {
    let h = Host::parse("postgres-01=192.168.0.203", &Role::DB, "--db").unwrap();
    let s = host_snippet(&h, Path::new("/etc/tandem/certs"));
    assert!(s.contains("  cert: /etc/tandem/certs/client.crt"), "{s}");
    assert!(
        s.contains("ssl_key_file: /etc/tandem/certs/postgresql.key"),
        "{s}"
    );
    assert!(
        s.contains("--peer-trusted-ca-file=/etc/tandem/certs/ca.crt"),
        "{s}"
    );
    let r = Host::parse("haproxy-01=192.168.0.200", &Role::ROUTER, "--router").unwrap();
    let s = host_snippet(&r, Path::new("/c"));
    assert!(s.contains("etcd3:") && s.contains("ctl:"), "{s}");
    assert!(!s.contains("restapi:") && !s.contains("ssl_cert_file") && !s.contains("--cert-file"));
}
