//! `tandem certs` end to end: the built binary issues the seed's six hosts in one command, a
//! real etcd member starts on those files with client and peer certificate authentication, and
//! clients holding the generated certificates (etcdctl, and tandem's own etcd client configured
//! from the printed snippet) get in while a certificate from another CA, or none, is refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use tandem::lab::{find_etcd, pick_ports, pid_alive, wait_until};

/// The seed's hosts (seed/README.md): three database hosts with etcd, three routers.
const DB: [(&str, &str); 3] = [
    ("postgres-01", "192.168.0.203"),
    ("postgres-02", "192.168.0.204"),
    ("postgres-03", "192.168.0.205"),
];
const ROUTERS: [(&str, &str); 3] = [
    ("haproxy-01", "192.168.0.200"),
    ("haproxy-02", "192.168.0.201"),
    ("haproxy-03", "192.168.0.202"),
];

fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .output()
        .expect("run tandem")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn user_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}

/// One etcd member, stopped by PID when dropped, pass or fail (its log printed on failure).
struct Etcd {
    child: Child,
    log: PathBuf,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let pid = self.child.id();
        // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        let gone = wait_until(Duration::from_secs(10), "etcd to exit", || {
            self.child.try_wait().ok().flatten()
        });
        if gone.is_err() {
            let _ = self.child.kill(); // SIGKILL, to this PID
            let _ = self.child.wait();
        }
        assert!(!pid_alive(pid), "etcd {pid} still running");
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- etcd log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

struct Etcdctl {
    bin: PathBuf,
    endpoint: String,
}

impl Etcdctl {
    /// `etcdctl` with TLS files: (cacert, cert, key), any of them left out when `None`.
    fn run(&self, ca: Option<&Path>, id: Option<(&Path, &Path)>, args: &[&str]) -> Output {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(["--dial-timeout=2s", "--command-timeout=4s"]);
        if let Some(ca) = ca {
            c.arg(format!("--cacert={}", ca.display()));
        }
        if let Some((cert, key)) = id {
            c.arg(format!("--cert={}", cert.display()))
                .arg(format!("--key={}", key.display()));
        }
        c.args(args).output().expect("run etcdctl")
    }
}

/// One etcd member on loopback with mutual TLS on both ports, from `certs`' `etcd.crt`,
/// `etcd.key` and `ca.crt` (the flags `tandem certs` prints), its data in `data` (created) and
/// its output in `log`. Returns the command, not started, and the client port.
fn etcd_command(bin: &Path, certs: &Path, data: &Path, log: &Path) -> (Command, u16) {
    let f = |n: &str| certs.join(n).display().to_string();
    let ports = pick_ports(2, None).expect("ports");
    let (client, peer) = (ports[0], ports[1]);
    std::fs::create_dir(data).unwrap();
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .args(["--name", "postgresql-01"])
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls=https://127.0.0.1:{client}"))
        .arg(format!(
            "--advertise-client-urls=https://127.0.0.1:{client}"
        ))
        .arg(format!("--listen-peer-urls=https://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=https://127.0.0.1:{peer}"
        ))
        .arg(format!(
            "--initial-cluster=postgresql-01=https://127.0.0.1:{peer}"
        ))
        .arg("--initial-cluster-state=new")
        .arg(format!("--cert-file={}", f("etcd.crt")))
        .arg(format!("--key-file={}", f("etcd.key")))
        .arg(format!("--trusted-ca-file={}", f("ca.crt")))
        .arg("--client-cert-auth")
        .arg(format!("--peer-cert-file={}", f("etcd.crt")))
        .arg(format!("--peer-key-file={}", f("etcd.key")))
        .arg(format!("--peer-trusted-ca-file={}", f("ca.crt")))
        .arg("--peer-client-cert-auth")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log).unwrap());
    (cmd, client)
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The printed configuration of `host`, as YAML (the lines between its `== host ==` heading
/// and the next heading or note).
fn snippet(stdout: &str, host: &str) -> serde_yaml::Value {
    let head = format!("== {host} ==");
    let body: Vec<&str> = stdout
        .lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.starts_with("== ") && !l.starts_with("Note:"))
        .collect();
    assert!(!body.is_empty(), "no section for {host} in:\n{stdout}");
    serde_yaml::from_str(&body.join("\n")).expect("the printed snippet is YAML")
}

#[test]
fn seed_hosts_in_one_command_then_a_real_etcd_with_client_cert_auth() {
    let tmp = tempfile::Builder::new()
        .prefix("tandem-certs")
        .tempdir_in("/tmp")
        .expect("temp dir");
    // etcd may run as another user: it must be able to reach the files below.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("certs");
    let dir_s = dir.display().to_string();

    // --- the seed's six hosts, one command ----------------------------------------------
    let with_owners = is_root() && user_exists("postgres") && user_exists("etcd");
    let mut args: Vec<String> = vec![
        "certs".into(),
        "issue".into(),
        "--dir".into(),
        dir_s.clone(),
    ];
    if with_owners {
        args.extend(["--owner", "postgres", "--etcd-owner", "etcd"].map(String::from));
    }
    for (h, ip) in DB {
        args.extend(["--db".into(), format!("{h}={ip}")]);
    }
    for (h, ip) in ROUTERS {
        args.extend(["--router".into(), format!("{h}={ip}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tandem(&args);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.starts_with("CA created"), "{stdout}");
    assert!(
        !stdout.contains("PRIVATE KEY"),
        "a key was printed:\n{stdout}"
    );
    assert_eq!(stdout.matches("\n== ").count(), 6, "{stdout}");

    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let owner = |p: &Path| std::fs::metadata(p).unwrap().uid();
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    assert_eq!(mode(&dir.join("ca.crt")), 0o644);
    for (h, _) in DB {
        for role in ["etcd", "postgresql", "restapi", "client"] {
            let key = dir.join(h).join(format!("{role}.key"));
            assert_eq!(mode(&key), 0o600, "{}", key.display());
            assert_eq!(mode(&key.with_extension("crt")), 0o644);
        }
        if with_owners {
            let pg = owner(&dir.join(h).join("postgresql.key"));
            let etcd = owner(&dir.join(h).join("etcd.key"));
            assert_ne!(pg, 0, "postgresql.key given to postgres");
            assert_ne!(etcd, 0, "etcd.key given to etcd");
            assert_ne!(pg, etcd);
            assert_eq!(owner(&dir.join(h).join("client.key")), pg);
        }
    }
    for (h, _) in ROUTERS {
        assert_eq!(mode(&dir.join(h).join("client.key")), 0o600);
        assert!(!dir.join(h).join("etcd.key").exists());
    }

    // --- a real etcd member on postgres-01's files, mutual TLS on both ports --------------
    let etcd_bin = find_etcd().expect("etcd");
    let etcdctl_bin = etcd_bin.with_file_name("etcdctl");
    assert!(
        etcdctl_bin.is_file(),
        "etcdctl beside {}",
        etcd_bin.display()
    );
    let node = dir.join("postgres-01");
    let data = tmp.path().join("etcd-data");
    let log = tmp.path().join("etcd.log");
    let (mut cmd, client) = etcd_command(&etcd_bin, &node, &data, &log);
    let etcd_key_meta = std::fs::metadata(node.join("etcd.key")).unwrap();
    if with_owners {
        // As the seed runs it: etcd as its own user, reading the key it owns (mode 0600).
        std::os::unix::fs::chown(&data, Some(etcd_key_meta.uid()), Some(etcd_key_meta.gid()))
            .unwrap();
        cmd.uid(etcd_key_meta.uid()).gid(etcd_key_meta.gid());
    }
    let _etcd = Etcd {
        child: cmd.spawn().expect("start etcd"),
        log: log.clone(),
    };

    let ctl = Etcdctl {
        bin: etcdctl_bin,
        endpoint: format!("https://127.0.0.1:{client}"),
    };
    let ca = dir.join("ca.crt");
    let router = dir.join("haproxy-01");
    let router_id = (router.join("client.crt"), router.join("client.key"));
    let router_id = (router_id.0.as_path(), router_id.1.as_path());
    wait_until(
        Duration::from_secs(30),
        "etcd healthy over mutual TLS",
        || {
            ctl.run(Some(&ca), Some(router_id), &["endpoint", "health"])
                .status
                .success()
                .then_some(())
        },
    )
    .expect("etcd answers a router's client certificate");

    // --- tandem's own etcd client, configured with the snippet printed for haproxy-01 ----
    let mut cfg = snippet(&stdout, "haproxy-01");
    let etcd3 = cfg
        .get_mut("etcd3")
        .and_then(|v| v.as_mapping_mut())
        .expect("etcd3 section in the haproxy-01 snippet");
    etcd3.insert("hosts".into(), format!("127.0.0.1:{client}").into());
    let top = cfg.as_mapping_mut().unwrap();
    top.insert("scope".into(), "certs".into());
    top.insert("namespace".into(), "/service/".into());
    let cfg_path = tmp.path().join("router.yml");
    std::fs::write(&cfg_path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let put = |path: &Path| -> anyhow::Result<()> {
        let c = tandem::config::Config::load_for_ctl(path)?;
        rt.block_on(async {
            let dcs =
                tandem::dcs::Dcs::connect(&c.etcd3, &c.base_path(), Duration::from_secs(3)).await?;
            dcs.put("written-by", "tandem over mTLS", None).await
        })
    };
    put(&cfg_path).expect("tandem's etcd client with the generated client certificate");

    // Read back with another host's certificate (postgres-02's client, by etcdctl).
    let pg2 = dir.join("postgres-02");
    let (c2, k2) = (pg2.join("client.crt"), pg2.join("client.key"));
    let got = ctl.run(
        Some(&pg2.join("ca.crt")),
        Some((&c2, &k2)),
        &["get", "--print-value-only", "/service/certs/written-by"],
    );
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        "tandem over mTLS"
    );

    // --- refused: no client certificate, another CA's certificate, another CA as trust -----
    let other = tmp.path().join("other-ca");
    let out = tandem(&[
        "certs",
        "issue",
        "--dir",
        &other.display().to_string(),
        "--host",
        "intruder=127.0.0.1",
        "--role",
        "client",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let (ic, ik) = (
        other.join("intruder/client.crt"),
        other.join("intruder/client.key"),
    );
    let refused = ctl.run(Some(&ca), None, &["get", "x"]);
    assert!(
        !refused.status.success(),
        "no client certificate: {}",
        text(&refused)
    );
    let refused = ctl.run(Some(&ca), Some((&ic, &ik)), &["get", "x"]);
    assert!(
        !refused.status.success(),
        "another CA's client certificate: {}",
        text(&refused)
    );
    let refused = ctl.run(Some(&other.join("ca.crt")), Some(router_id), &["get", "x"]);
    assert!(
        !refused.status.success(),
        "server verified against another CA: {}",
        text(&refused)
    );
    // tandem's client with the intruder's certificate is refused too.
    let mut bad = cfg.clone();
    let e3 = bad.get_mut("etcd3").unwrap().as_mapping_mut().unwrap();
    e3.insert("cert".into(), ic.display().to_string().into());
    e3.insert("key".into(), ik.display().to_string().into());
    let bad_path = tmp.path().join("intruder.yml");
    std::fs::write(&bad_path, serde_yaml::to_string(&bad).unwrap()).unwrap();
    assert!(
        put(&bad_path).is_err(),
        "tandem's client with another CA's certificate"
    );

    // --- issuing again keeps the CA: the running etcd accepts the new certificates --------
    let ca_before = std::fs::read(&ca).unwrap();
    let old_client = std::fs::read(router_id.0).unwrap();
    let out = tandem(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("CA kept"));
    assert_eq!(std::fs::read(&ca).unwrap(), ca_before, "CA unchanged");
    assert_ne!(
        std::fs::read(router_id.0).unwrap(),
        old_client,
        "leaf replaced"
    );
    let again = ctl.run(
        Some(&ca),
        Some(router_id),
        &["get", "--print-value-only", "/service/certs/written-by"],
    );
    assert!(
        again.status.success(),
        "re-issued client certificate: {}",
        text(&again)
    );
}

/// `tandem proxy` (the router), stopped by PID when dropped; its log printed on failure.
struct Router {
    child: Child,
    log: PathBuf,
}

impl Router {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let gone = wait_until(Duration::from_secs(10), "the router to exit", || {
            self.child.try_wait().ok().flatten()
        });
        if gone.is_err() {
            let _ = self.child.kill(); // SIGKILL, to this PID
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- router log ---\n{}", self.log());
        }
    }
}

/// Issue 14 point 4: `tandem proxy` takes renewed etcd client certificates on SIGHUP. etcd
/// first trusts two CAs and the router starts with the old CA's client certificate (a router
/// with a certificate etcd refuses does not start: tlscheck); the files are replaced by the
/// new CA's at the same paths, SIGHUP, and etcd restarts trusting the new CA only: the router
/// reads what was written after the restart, so it reconnected with the renewed certificate,
/// without a restart of its own. A broken file on a later SIGHUP is refused with the file
/// named, and the router keeps running on the certificates it has; settings that take a
/// restart are named as ignored.
#[test]
fn sighup_gives_the_router_renewed_etcd_client_certificates() {
    use tandem::certs::{Ca, Host, Role};
    let tmp = tempfile::Builder::new()
        .prefix("tandem-reload")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let dir = tmp.path();
    let issue = |ca: &Ca, name: &str, role: Role| {
        let host = Host::parse(&format!("{name}=127.0.0.1"), &[role], "test").unwrap();
        ca.issue(&host, role, 2).unwrap()
    };
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    let ca = Ca::create("tandem reload CA", 2).unwrap();
    let old_ca = Ca::create("the CA being retired", 2).unwrap();
    let (etcd_crt, etcd_key) = issue(&ca, "etcd-1", Role::Etcd);
    // Both CAs, while the clients move to the new one.
    write("ca.crt", &format!("{}{}", ca.cert_pem(), old_ca.cert_pem()));
    write("etcd.crt", &etcd_crt);
    write("etcd.key", &etcd_key);
    let (old_crt, old_key) = issue(&old_ca, "router-1", Role::Client);
    write("client.crt", &old_crt);
    write("client.key", &old_key);

    let etcd_bin = find_etcd().expect("etcd");
    let (mut cmd, client) = etcd_command(
        &etcd_bin,
        dir,
        &dir.join("etcd-data"),
        &dir.join("etcd.log"),
    );
    let mut etcd = Etcd {
        child: cmd.spawn().expect("start etcd"),
        log: dir.join("etcd.log"),
    };

    // A member key, written with a certificate etcd accepts (etcd's own: it is a client too).
    let admin = tandem::config::EtcdConfig {
        hosts: vec![format!("127.0.0.1:{client}")],
        protocol: "https".into(),
        cacert: Some(dir.join("ca.crt")),
        cert: Some(dir.join("etcd.crt")),
        key: Some(dir.join("etcd.key")),
        username: None,
        password: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let member = r#"{"conn_url":"postgres://127.0.0.1:1/postgres","api_url":"http://127.0.0.1:1/patroni","state":"running","role":"replica"}"#;
    wait_until(
        Duration::from_secs(30),
        "etcd to take a write over mutual TLS",
        || {
            rt.block_on(async {
                let dcs =
                    tandem::dcs::Dcs::connect(&admin, "/service/reload/", Duration::from_secs(2))
                        .await
                        .ok()?;
                dcs.put("members/pg1", member, None).await.ok()
            })
        },
    )
    .expect("etcd up");

    let status_port = pick_ports(1, None).expect("port")[0];
    let status_addr = format!("127.0.0.1:{status_port}");
    let router_yml = |hold: &str| {
        format!(
            "scope: reload\nnamespace: /service\netcd3:\n  hosts: 127.0.0.1:{client}\n  protocol: https\n  cacert: {ca}\n  cert: {crt}\n  key: {key}\nproxy:\n  primary: {{listen: 127.0.0.1:0}}\n  status_listen: {status_addr}\n  kernel_forwarding: off\n  hold_timeout: {hold}\n",
            ca = dir.join("ca.crt").display(),
            crt = dir.join("client.crt").display(),
            key = dir.join("client.key").display(),
        )
    };
    write("router.yml", &router_yml("5s"));
    let log = dir.join("router.log");
    let router = Router {
        child: Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["proxy", "-c"])
            .arg(dir.join("router.yml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tandem proxy"),
        log,
    };
    let status = || -> Option<serde_json::Value> {
        let (code, body) =
            tandem::lab::http_get(&status_addr, "/status", Duration::from_secs(2)).ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    };
    let synced = |doc: &serde_json::Value| {
        doc["etcd"]["synced"] == true && doc["members"][0]["name"] == "pg1"
    };
    wait_until(Duration::from_secs(20), "the router to read etcd", || {
        status().filter(synced)
    })
    .expect("the router reads etcd with the old CA's certificate");

    // Renewed: the new CA's certificate at the same paths, and hold_timeout edited.
    let (crt, key) = issue(&ca, "router-1", Role::Client);
    write("client.crt", &crt);
    write("client.key", &key);
    write("router.yml", &router_yml("7s"));
    router.signal(libc::SIGHUP);
    let client_crt = dir.join("client.crt").display().to_string();
    wait_until(
        Duration::from_secs(20),
        "the reload in the router's log",
        || {
            let text = router.log();
            (text.contains("reloaded TLS certificates for the etcd client (etcd3.cacert")
                && text.contains(&client_crt))
            .then_some(())
        },
    )
    .expect("the router reloads its etcd client certificates on SIGHUP");
    let text = router.log();
    assert!(
        text.contains("not applied until the router restarts: proxy.hold_timeout"),
        "{text}"
    );

    // etcd restarts trusting the new CA only; a key written after that reaches the router
    // only over a connection made with the renewed certificate.
    write("ca.crt", ca.cert_pem());
    let _ = etcd.child.kill(); // SIGKILL, to the PID of our own child
    let _ = etcd.child.wait();
    etcd.child = cmd.spawn().expect("restart etcd");
    wait_until(
        Duration::from_secs(30),
        "etcd to take a write again",
        || {
            rt.block_on(async {
                let dcs =
                    tandem::dcs::Dcs::connect(&admin, "/service/reload/", Duration::from_secs(2))
                        .await
                        .ok()?;
                dcs.put("members/pg2", member, None).await.ok()
            })
        },
    )
    .expect("etcd back");
    wait_until(
        Duration::from_secs(30),
        "the router to read the new key",
        || {
            status().filter(|d| {
                d["etcd"]["synced"] == true
                    && d["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|m| m["name"] == "pg2"))
            })
        },
    )
    .expect("the router's etcd client reconnects with the renewed certificate");
    assert!(
        text.contains("not applied until the router restarts: proxy.hold_timeout"),
        "{text}"
    );

    // A broken certificate file: refused with the file named; the router runs on.
    write(
        "client.crt",
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    router.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(10), "the refusal in the log", || {
        router
            .log()
            .lines()
            .any(|l| l.contains("etcd3.cert") && l.contains(&client_crt) && l.contains("keeping"))
            .then_some(())
    })
    .expect("a broken certificate file is refused, naming it");
    assert!(
        status().is_some_and(|d| synced(&d)),
        "the router stays up and synced"
    );
    let text = router.log();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}
