//! Integration tests of `tandem proxy` on a real etcd cluster, real PostgreSQL servers and
//! tandem agents, on loopback. The router runs in this process (`tandem::proxy::start` on a
//! tokio runtime); clients are psql and tokio-postgres. Each test builds its own lab; the lab's
//! Drop stops every process it started, by PID. Run them one at a time (`--test-threads=1`).

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem::config::Config;
use tandem::lab::{http_get, wait_until, Lab, LabOptions};
use tandem::proxy::{ProxyHandle, Role, RouterConfig};

mod common;
use common::{dcs, is_primary, Cluster};

fn start_cluster(tune: impl FnOnce(&mut LabOptions)) -> (Cluster, usize, Vec<usize>) {
    let s = Cluster::prepare("tandem-proxy-", tune).start();
    (s.cluster, s.leader, s.replicas)
}

/// The router, running in this process on its own runtime.
struct Proxy {
    handle: Option<ProxyHandle>,
    rt: tokio::runtime::Runtime,
    password: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(h) = &self.handle {
                eprintln!(
                    "---- router status ----\n{}",
                    tandem::proxy::status::render(&h.status())
                );
            }
        }
        drop(self.handle.take());
    }
}

/// `proxy:` lines for a test router (listeners on free ports).
const LISTENERS: &str = "  primary: {listen: 127.0.0.1:0, max_connections: 200}
  replicas: {listen: 127.0.0.1:0, max_lag: 1MB}
  read_only_any: {listen: 127.0.0.1:0}
  status_listen: 127.0.0.1:0
  health_interval: 250ms
";

fn start_proxy(lab: &Lab, extra: &str) -> Proxy {
    let node = Config::load(&lab.nodes[0].config_path).expect("node config");
    let yaml = format!(
        "scope: {}\nnamespace: {}\netcd3:\n  hosts: {}\nproxy:\n{LISTENERS}{extra}",
        node.scope,
        node.namespace,
        lab.etcd_hosts()
    );
    let cfg = RouterConfig::from_yaml_str(&yaml, "router.yml").expect("router config");
    // The router's log goes to the test output (shown for failing tests); RUST_LOG to change.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt
        .block_on(tandem::proxy::start(cfg))
        .expect("router starts");
    Proxy {
        handle: Some(handle),
        rt,
        password: lab.secrets().superuser.password.clone(),
    }
}

impl Proxy {
    fn h(&self) -> &ProxyHandle {
        self.handle.as_ref().unwrap()
    }
    fn port(&self, role: Role) -> u16 {
        self.h().addr(role).unwrap().port()
    }
    fn status(&self) -> Value {
        self.h().status()
    }
    fn backends(&self, role: Role) -> Vec<String> {
        let st = self.status();
        st["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == role.key())
            .unwrap()["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_string())
            .collect()
    }
    fn pg_config(&self, port: u16) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1")
            .port(port)
            .user("postgres")
            .password(&self.password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(20));
        c
    }
    /// One connection, one statement; the first column of the first row.
    fn query(&self, port: u16, sql: &str) -> Result<String, String> {
        let cfg = self.pg_config(port);
        self.rt.block_on(query_once(cfg, sql.to_string()))
    }
    /// An open session.
    fn session(&self, port: u16) -> tokio_postgres::Client {
        let cfg = self.pg_config(port);
        self.rt.block_on(async move {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            client
        })
    }
    fn run(&self, c: &tokio_postgres::Client, sql: &str) -> Result<String, String> {
        self.rt.block_on(first_value(c, sql))
    }
}

/// An error with its causes (tokio-postgres says only "db error" at the top).
fn pg_error(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        s.push_str(&format!(": {x}"));
        src = x.source();
    }
    s
}

async fn first_value(c: &tokio_postgres::Client, sql: &str) -> Result<String, String> {
    let msgs = c.simple_query(sql).await.map_err(|e| pg_error(&e))?;
    for m in msgs {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or("").to_string());
        }
    }
    Ok(String::new())
}

async fn query_once(cfg: tokio_postgres::Config, sql: String) -> Result<String, String> {
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("connect: {}", pg_error(&e)))?;
    let task = tokio::spawn(conn);
    let r = first_value(&client, &sql).await;
    drop(client);
    let _ = task.await;
    r
}

/// psql through a router port, with the lab's pgpass file.
fn psql_via(lab: &Lab, port: u16, sql: &str, extra_conninfo: &str) -> Result<String, String> {
    psql_with(&lab.pg_bin, &lab.pgpass_path, port, sql, extra_conninfo)
}

fn psql_at(
    pg_bin: &std::path::Path,
    pgpass: &std::path::Path,
    port: u16,
    sql: &str,
) -> Result<String, String> {
    psql_with(pg_bin, pgpass, port, sql, "")
}

fn psql_with(
    pg_bin: &std::path::Path,
    pgpass: &std::path::Path,
    port: u16,
    sql: &str,
    extra_conninfo: &str,
) -> Result<String, String> {
    let out = Command::new(pg_bin.join("psql"))
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=20 {extra_conninfo}"
        ))
        .args(["-c", sql])
        .env("PGPASSFILE", pgpass)
        .env_remove("PGPASSWORD")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn node_by_port(lab: &Lab, port: &str) -> usize {
    lab.nodes
        .iter()
        .position(|n| n.pg_port.to_string() == port)
        .unwrap_or_else(|| panic!("no node has port {port}"))
}

// ---------------------------------------------------------------------------------------------

#[test]
fn writes_reach_the_leader_and_reads_spread_over_replicas_within_max_lag() {
    let (c, leader, replicas) = start_cluster(|_| {});
    let p = start_proxy(&c, "");
    let pri = p.port(Role::Primary);

    // psql through the primary listener reaches the leader.
    let out = psql_via(
        &c,
        pri,
        "SELECT pg_is_in_recovery(), inet_server_port()",
        "",
    )
    .unwrap();
    assert_eq!(out, format!("f|{}", c.nodes[leader].pg_port));
    psql_via(&c, pri, "CREATE TABLE t (id int)", "").unwrap();

    // /status says how bytes move, and the connections above went that way.
    let st = p.status();
    let mode = st["forwarding"].as_str().unwrap_or_default().to_string();
    assert!(mode.starts_with("kernel") || mode == "user space", "{st}");
    let l = st["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == Role::Primary.key())
        .unwrap()
        .clone();
    let (kernel, user) = (
        l["kernel_forwarded"].as_u64().unwrap_or(0),
        l["user_space_forwarded"].as_u64().unwrap_or(0),
    );
    assert!(kernel + user >= 2, "{mode}: {l}");
    assert!((kernel >= 1) == (mode != "user space"), "{mode}: {l}");
    eprintln!("forwarding: {mode}");

    // SSLRequest is passed through: the server (no SSL in the lab) answers, not the router.
    let e = psql_via(&c, pri, "SELECT 1", "sslmode=require").unwrap_err();
    assert!(e.contains("does not support SSL"), "{e}");
    // Answered 'N' by the server, psql's default sslmode=prefer goes on in plain text.
    assert_eq!(
        psql_via(&c, pri, "SELECT 1", "sslmode=prefer").unwrap(),
        "1"
    );

    // The replicas listener spreads over both replicas once their checks pass.
    wait_until(Duration::from_secs(10), "both replicas routed", || {
        (p.backends(Role::Replicas).len() == 2).then_some(())
    })
    .unwrap();
    let rep = p.port(Role::Replicas);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..10 {
        let out = p
            .query(
                rep,
                "SELECT pg_is_in_recovery()::text || ' ' || inet_server_port()",
            )
            .unwrap();
        let (rec, port) = out.split_once(' ').unwrap();
        assert_eq!(rec, "true");
        *seen.entry(node_by_port(&c, port)).or_insert(0) += 1;
    }
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), {
        let mut r = replicas.clone();
        r.sort();
        r
    });
    assert!(seen.values().all(|&n| n == 5), "round robin: {seen:?}");

    // read_only_any covers the leader too.
    let any = p.port(Role::ReadOnlyAny);
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..6 {
        nodes.insert(node_by_port(
            &c,
            &p.query(any, "SELECT inet_server_port()").unwrap(),
        ));
    }
    assert_eq!(nodes.len(), 3, "{nodes:?}");

    // max_lag: a replica that stops replaying falls out of the replicas listener.
    let (lagging, other) = (replicas[0], replicas[1]);
    c.psql(lagging, "SELECT pg_wal_replay_pause()").unwrap();
    p.query(pri, "INSERT INTO t SELECT generate_series(1, 100000)")
        .unwrap();
    let names = |i: usize| vec![c.nodes[i].name.clone()];
    wait_until(
        Duration::from_secs(10),
        "the lagging replica leaves",
        || (p.backends(Role::Replicas) == names(other)).then_some(()),
    )
    .unwrap();
    for _ in 0..4 {
        let port = p.query(rep, "SELECT inet_server_port()").unwrap();
        assert_eq!(node_by_port(&c, &port), other);
    }
    c.psql(lagging, "SELECT pg_wal_replay_resume()").unwrap();
    wait_until(Duration::from_secs(10), "the replica comes back", || {
        (p.backends(Role::Replicas).len() == 2).then_some(())
    })
    .unwrap();

    // Status and metrics.
    let st = p.status();
    assert_eq!(st["primary"]["name"], json!(c.nodes[leader].name));
    assert_eq!(st["etcd"]["synced"], json!(true));
    let text = tandem::proxy::status::render(&st);
    assert!(
        text.contains(&format!("Primary: {}", c.nodes[leader].name)),
        "{text}"
    );
    let addr = p.h().status_addr.unwrap().to_string();
    let (code, body) = http_get(&addr, "/metrics", Duration::from_secs(2)).unwrap();
    assert_eq!(code, 200);
    let line = format!(
        "tandem_proxy_backend_connections_total{{scope=\"demo\",listener=\"primary\",backend=\"{}\"}}",
        c.nodes[leader].name
    );
    assert!(body.contains(&line), "{body}");
    assert!(body.contains("tandem_proxy_backend_bytes_total"));
    let (code, body) = http_get(&addr, "/status", Duration::from_secs(2)).unwrap();
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["primary"]["name"], json!(c.nodes[leader].name));
    // `tandem proxy status -c router.yml` asks that endpoint.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("router.yml");
    std::fs::write(
        &f,
        format!(
            "scope: demo\nnamespace: /service/\netcd3:\n  hosts: {}\nproxy:\n  primary: {{listen: 127.0.0.1:1}}\n  status_listen: {addr}\n",
            c.etcd_hosts()
        ),
    )
    .unwrap();
    tandem::proxy::status_entry(&f).unwrap();

    // CancelRequest through a read listener reaches the server running the query.
    let s = p.session(rep);
    let token = s.cancel_token();
    let sleeper = {
        let s = Arc::new(s);
        let s2 = s.clone();
        let h =
            p.rt.spawn(async move { first_value(&s2, "SELECT pg_sleep(30)").await });
        (s, h)
    };
    wait_until(Duration::from_secs(5), "the query runs", || {
        replicas
            .iter()
            .any(|&i| {
                c.psql(
                    i,
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
                )
                .ok()
                    .as_deref() == Some("1")
            })
            .then_some(())
    })
    .unwrap();
    let t = Instant::now();
    p.rt.block_on(token.cancel_query(tokio_postgres::NoTls))
        .unwrap();
    let r = p.rt.block_on(sleeper.1).unwrap();
    assert!(
        r.as_ref().is_err_and(|e| e.contains("canceling statement")),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// Runs `f` on a thread until `stop` is set.
fn background(
    stop: &Arc<AtomicBool>,
    f: impl FnMut() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let stop = stop.clone();
    let mut f = f;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            f();
        }
    })
}

#[test]
fn after_a_hard_kill_of_the_leader_writes_resume_right_after_the_promotion() {
    let (mut c, leader, replicas) = start_cluster(|_| {});
    // With in-kernel forwarding where the machine allows it (root): fencing and the hold must
    // work the same for sockets in the BPF map.
    let p = Arc::new(start_proxy(
        &c,
        "  hold_timeout: 15s\n  kernel_forwarding: auto\n",
    ));
    eprintln!("forwarding: {}", p.status()["forwarding"]);
    let pri = p.port(Role::Primary);
    p.query(pri, "CREATE TABLE t (id int)").unwrap();

    // Watch the replicas directly: the moment one of them accepts writes is the promotion.
    let stop = Arc::new(AtomicBool::new(false));
    let promoted: Arc<Mutex<Option<(Instant, usize)>>> = Arc::default();
    let watchers: Vec<_> = replicas
        .iter()
        .map(|&r| {
            let (p2, promoted) = (p.clone(), promoted.clone());
            let port = c.nodes[r].pg_port;
            let session = p.session(port);
            background(&stop, move || {
                if p2.run(&session, "SELECT pg_is_in_recovery()").as_deref() == Ok("f") {
                    let mut g = promoted.lock().unwrap();
                    if g.is_none() {
                        *g = Some((Instant::now(), r));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            })
        })
        .collect();
    // A writer through the router: psql, a new connection per write (libpq's authentication
    // is fast; tokio-postgres' is slow in a debug build). During the outage each one waits in
    // the router for the new leader.
    type Attempt = (Instant, Result<String, (Instant, String)>);
    let writes: Arc<Mutex<Vec<Attempt>>> = Arc::default();
    let writer = {
        let writes = writes.clone();
        let lab_pg = c.pg_bin.clone();
        let pgpass = c.pgpass_path.clone();
        background(&stop, move || {
            let began = Instant::now();
            let r = psql_at(
                &lab_pg,
                &pgpass,
                pri,
                "INSERT INTO t VALUES (1) RETURNING inet_server_port()",
            );
            writes
                .lock()
                .unwrap()
                .push((Instant::now(), r.map_err(|e| (began, e))));
        })
    };
    wait_until(Duration::from_secs(5), "writes flow", || {
        (writes.lock().unwrap().len() > 20).then_some(())
    })
    .unwrap();

    // And etcd: the moment another member's key says it runs as primary.
    let member_key_primary: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let cfg = Config::load(&c.nodes[0].config_path).unwrap();
        let old = c.nodes[leader].name.clone();
        let seen = member_key_primary.clone();
        p.rt.block_on(async move {
            let dcs =
                tandem::dcs::Dcs::connect(&cfg.etcd3, &cfg.base_path(), Duration::from_secs(2))
                    .await
                    .unwrap();
            let mut rx = dcs.spawn_cache();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let (view, _) = rx.borrow_and_update().view();
                    if view.members.values().any(|m| {
                        m.name != old && m.value.role() == "primary" && m.value.state == "running"
                    }) {
                        let mut g = seen.lock().unwrap();
                        if g.is_none() {
                            eprintln!(
                                "test: member key primary seen at {}",
                                chrono::Utc::now().format("%H:%M:%S%.6f")
                            );
                            *g = Some(Instant::now());
                        }
                    }
                }
            });
        });
    }
    let killed = Instant::now();
    let pm = c.postmaster_pid(leader).expect("leader's postmaster runs");
    c.signal_agent(leader, libc::SIGKILL).unwrap();
    unsafe { libc::kill(pm as i32, libc::SIGKILL) };

    let old_port = c.nodes[leader].pg_port.to_string();
    let first_new = wait_until(Duration::from_secs(40), "a write on the new leader", || {
        writes
            .lock()
            .unwrap()
            .iter()
            .find(|(t, r)| *t > killed && r.as_ref().is_ok_and(|port| *port != old_port))
            .map(|(t, r)| (*t, r.clone().unwrap()))
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    for w in watchers {
        w.join().unwrap();
    }
    let (t_promoted, new_leader) = promoted.lock().unwrap().expect("a replica was promoted");
    let t_key = member_key_primary
        .lock()
        .unwrap()
        .expect("the new leader's member key");
    let after_key = first_new.0.saturating_duration_since(t_key);
    assert_eq!(node_by_port(&c, &first_new.1), new_leader);
    let after_promotion = first_new.0.saturating_duration_since(t_promoted);
    // Attempts begun once the old leader was dead (its session and connections being set up at
    // that moment may fail) all succeeded: they waited in the router for the new leader.
    let settled = killed + Duration::from_millis(200);
    let errors: Vec<String> = writes
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .filter(|(began, _)| *began > settled)
        .map(|(_, e)| e.clone())
        .collect();
    eprintln!(
        "leader killed; promotion after {:?}; the new leader's member key said primary {:?} later; \
         first write through the router {after_promotion:?} after the promotion, {after_key:?} after the member key; errors: {errors:?}",
        t_promoted - killed,
        t_key.saturating_duration_since(t_promoted),
    );
    // The router's own part: from the member key to routing (the rest is PostgreSQL and psql).
    let st = p.status();
    let routed =
        Instant::now() - Duration::from_secs_f64(st["primary"]["for_seconds"].as_f64().unwrap());
    let reaction = routed.saturating_duration_since(t_key);
    eprintln!("the router routed the new leader {reaction:?} after the test saw its member key");
    // Generous bounds (CI machines are loaded): the figures themselves come from bench/proxy.
    // These only catch a router that waits for a timer instead of following etcd.
    assert!(reaction < Duration::from_secs(1), "{reaction:?}");
    assert!(
        after_key < Duration::from_secs(3),
        "first write {after_key:?} after the member key said primary"
    );
    assert!(
        after_promotion < Duration::from_secs(5),
        "first write {after_promotion:?} after the promotion"
    );
    assert!(errors.is_empty(), "{errors:?}");
    let st = p.status();
    assert_eq!(st["primary"]["name"], json!(c.nodes[new_leader].name));
    assert!(st["last_reroute_seconds"].as_f64().is_some());
}

#[test]
fn a_switchover_under_continuous_connections_refuses_none_and_cuts_old_sessions() {
    let (c, leader, replicas) = start_cluster(|_| {});
    // In-kernel forwarding where the machine allows it (root): the hold and the fencing must
    // work the same for sockets in the BPF map.
    let p = Arc::new(start_proxy(
        &c,
        "  hold_timeout: 15s\n  kernel_forwarding: auto\n",
    ));
    let pri = p.port(Role::Primary);
    p.query(pri, "CREATE TABLE t (id int)").unwrap();
    let old_session = p.session(pri);
    assert_eq!(
        p.run(&old_session, "SELECT inet_server_port()").unwrap(),
        c.nodes[leader].pg_port.to_string()
    );

    // A client opening a new connection for every write.
    let stop = Arc::new(AtomicBool::new(false));
    type Outcome = (Instant, Result<String, String>);
    let results: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let opener = {
        let results = results.clone();
        let lab_pg = c.pg_bin.clone();
        let pgpass = c.pgpass_path.clone();
        background(&stop, move || {
            let r = psql_at(
                &lab_pg,
                &pgpass,
                pri,
                "INSERT INTO t VALUES (1) RETURNING inet_server_port()",
            );
            results.lock().unwrap().push((Instant::now(), r));
        })
    };
    wait_until(Duration::from_secs(5), "connections flow", || {
        (results.lock().unwrap().len() > 10).then_some(())
    })
    .unwrap();

    let cand = replicas[0];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dcs = dcs(&c, &rt);
    let asked = Instant::now();
    rt.block_on(dcs.put(
        "failover",
        &format!(
            r#"{{"leader":"{}","member":"{}"}}"#,
            c.nodes[leader].name, c.nodes[cand].name
        ),
        None,
    ))
    .unwrap();
    let new_port = c.nodes[cand].pg_port.to_string();
    let done = wait_until(Duration::from_secs(30), "writes on the candidate", || {
        results
            .lock()
            .unwrap()
            .iter()
            .find(|(t, r)| *t > asked && r.as_deref() == Ok(new_port.as_str()))
            .map(|(t, _)| *t)
    })
    .unwrap();
    // Keep going a little after the switchover, then stop.
    let n = results.lock().unwrap().len();
    wait_until(Duration::from_secs(10), "more connections", || {
        (results.lock().unwrap().len() > n + 10).then_some(())
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    opener.join().unwrap();

    // The session opened on the old leader is gone.
    let r = p.run(&old_session, "SELECT 1");
    assert!(r.is_err(), "the old session still works: {r:?}");
    let all = results.lock().unwrap();
    let errors: Vec<&String> = all.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    let old_port = c.nodes[leader].pg_port.to_string();
    let late_old = all
        .iter()
        .filter(|(t, r)| *t > done && r.as_deref() == Ok(old_port.as_str()))
        .count();
    eprintln!(
        "switchover: {} connections, first write on the new leader {:?} after the request, errors: {errors:?}",
        all.len(),
        done - asked
    );
    assert_eq!(
        late_old, 0,
        "writes reached the old leader after the switchover"
    );
    // No connection was refused or failed: waits stayed within hold_timeout. (A statement
    // already running when the old primary shut down may fail: its session is cut.)
    // (psql says "connection to server at ... failed" when it cannot connect.)
    assert!(
        errors
            .iter()
            .all(|e| !e.contains("connection to server at")),
        "connection errors: {errors:?}"
    );
    assert!(errors.len() <= 2, "{errors:?}");
}

#[test]
fn sessions_are_cut_when_the_leader_loses_its_agent() {
    let (mut c, leader, _) = start_cluster(|_| {});
    let p = start_proxy(&c, "  hold_timeout: 15s\n");
    let pri = p.port(Role::Primary);
    let through_router = p.session(pri);
    let direct = p.session(c.nodes[leader].pg_port);
    assert_eq!(
        p.run(&through_router, "SELECT inet_server_port()").unwrap(),
        c.nodes[leader].pg_port.to_string()
    );
    // The agent dies; PostgreSQL keeps running as a primary, but nobody vouches for it.
    let killed = Instant::now();
    c.signal_agent(leader, libc::SIGKILL).unwrap();
    let cut = wait_until(Duration::from_secs(6), "the routed session is cut", || {
        p.run(&through_router, "SELECT 1")
            .is_err()
            .then(|| killed.elapsed())
    })
    .unwrap();
    eprintln!("session through the router cut {cut:?} after the agent died");
    // It was the router, not PostgreSQL: the direct session still works.
    assert_eq!(p.run(&direct, "SELECT 1").unwrap(), "1");
    let m = p.h().metrics();
    assert!(
        m.lines().any(|l| l.starts_with(&format!(
            "tandem_proxy_backend_fenced_connections_total{{scope=\"demo\",listener=\"primary\",backend=\"{}\"}} 1",
            c.nodes[leader].name
        ))),
        "{m}"
    );
    // New connections wait for the new leader (after the old lease expires), then go there.
    let out = p.query(pri, "SELECT inet_server_port()").unwrap();
    let new_leader = node_by_port(&c, &out);
    assert_ne!(new_leader, leader);
    assert!(is_primary(&c, new_leader));
}

#[test]
fn with_etcd_down_the_router_follows_the_health_checks() {
    // A longer ttl: the leader keeps its role for several seconds without etcd.
    let (mut c, leader, _) = start_cluster(|o| {
        o.dcs = json!({"ttl": 12, "loop_wait": 1, "retry_timeout": 4,
                       "maximum_lag_on_failover": 1048576, "postgresql": {"use_pg_rewind": true}});
    });
    let p = start_proxy(&c, "  hold_timeout: 1s\n");
    let pri = p.port(Role::Primary);
    assert_eq!(p.query(pri, "SELECT pg_is_in_recovery()").unwrap(), "f");

    for i in 0..c.etcd.len() {
        c.stop_etcd_member(i).unwrap();
    }
    let etcd_down = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the router notices etcd is gone",
        || (p.status()["etcd"]["synced"] == json!(false)).then_some(()),
    )
    .unwrap();
    // Still routed to the leader, on its health check alone.
    let mut routed = 0;
    while is_primary(&c, leader) && routed < 5 {
        match p.query(
            pri,
            "SELECT pg_is_in_recovery()::text || ' ' || inet_server_port()",
        ) {
            Ok(out) => {
                assert_eq!(out, format!("false {}", c.nodes[leader].pg_port));
                routed += 1;
            }
            Err(e) => {
                // Only acceptable once the leader itself says it is no longer the leader.
                assert!(!is_primary(&c, leader), "{e}");
            }
        }
    }
    assert!(routed >= 1, "nothing routed while etcd was down");
    assert_eq!(p.status()["source"], json!("health checks only"));
    eprintln!(
        "routed {routed} connections {:?} into the etcd outage",
        etcd_down.elapsed()
    );

    // Without etcd the leader steps down; its REST API says 503 and the router stops at once.
    wait_until(Duration::from_secs(20), "the leader to step down", || {
        (!is_primary(&c, leader)).then_some(())
    })
    .unwrap();
    wait_until(Duration::from_secs(3), "no primary routed", || {
        p.status()["primary"].is_null().then_some(())
    })
    .unwrap();
    let e = p.query(pri, "SELECT 1").unwrap_err();
    assert!(
        e.contains("no primary available for cluster demo, retry"),
        "{e}"
    );
    // Plain sockets: SSLRequest is answered 'N' (no backend), then the ErrorResponse.
    let mut s = TcpStream::connect(("127.0.0.1", pri)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"N");
    let mut startup = vec![0, 0, 0, 0, 0, 3, 0, 0];
    startup.extend(b"user\0postgres\0\0");
    let len = startup.len() as u32;
    startup[..4].copy_from_slice(&len.to_be_bytes());
    s.write_all(&startup).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    assert_eq!(reply[0], b'E');
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("57P03") && text.contains("no primary available"),
        "{text}"
    );

    // etcd back: a leader again, routed again.
    for i in 0..c.etcd.len() {
        c.start_etcd_member(i).unwrap();
    }
    wait_until(
        Duration::from_secs(40),
        "writes through the router again",
        || {
            p.query(pri, "SELECT pg_is_in_recovery()")
                .ok()
                .filter(|o| o == "f")
        },
    )
    .unwrap();
}

/// An HTTP server answering 200 on `/replica*` and 503 elsewhere, and a "PostgreSQL" that
/// accepts connections and never answers.
fn ghost_node() -> (SocketAddr, SocketAddr, Arc<AtomicBool>) {
    let stop = Arc::new(AtomicBool::new(false));
    let api = TcpListener::bind("127.0.0.1:0").unwrap();
    let pg = TcpListener::bind("127.0.0.1:0").unwrap();
    let (api_addr, pg_addr) = (api.local_addr().unwrap(), pg.local_addr().unwrap());
    api.set_nonblocking(true).unwrap();
    pg.set_nonblocking(true).unwrap();
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !s.load(Ordering::Relaxed) {
            let mut idle = true;
            if let Ok((mut conn, _)) = api.accept() {
                idle = false;
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut buf = [0u8; 2048];
                let n = conn.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let code = if req.starts_with("GET /replica") {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
            }
            if let Ok((conn, _)) = pg.accept() {
                idle = false;
                held.push(conn);
            }
            if idle {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    (api_addr, pg_addr, stop)
}

#[test]
fn bad_clients_floods_and_hanging_backends_do_not_stall_others() {
    let (c, leader, replicas) = start_cluster(|_| {});
    let p = start_proxy(
        &c,
        "  connect_timeout: 1s\n  client_timeout: 4s\n  hold_timeout: 2s\n",
    );
    // start_proxy's primary listener allows 200 connections.
    let max = 200;
    let pri = p.port(Role::Primary);
    let session = p.session(pri);
    assert_eq!(p.run(&session, "SELECT 1").unwrap(), "1");
    let healthy = |what: &str| {
        let t = Instant::now();
        for _ in 0..20 {
            assert_eq!(p.run(&session, "SELECT 1").unwrap(), "1", "{what}");
        }
        let per = t.elapsed() / 20;
        assert!(per < Duration::from_secs(1), "{what}: {per:?} per query");
    };

    // Garbage: closed at once, nothing else disturbed.
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xffu8; 64][..],
        &[0u8; 8][..],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", pri)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(junk);
        let t = Instant::now();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "garbage got an answer");
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    healthy("after garbage");

    // Slowloris (one byte of a length) and silent clients fill the listener up to its limit.
    let mut idle = Vec::new();
    for i in 0..(max - 1) {
        let mut s = TcpStream::connect(("127.0.0.1", pri)).unwrap();
        if i % 2 == 0 {
            s.write_all(&[0]).unwrap();
        }
        idle.push(s);
    }
    healthy("with the listener full of idle clients");
    wait_until(Duration::from_secs(3), "listener full", || {
        let st = p.status();
        let l = st["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "primary")
            .unwrap()
            .clone();
        (l["active"] == json!(max)).then_some(())
    })
    .unwrap();
    let e = psql_via(&c, pri, "SELECT 1", "").unwrap_err();
    assert!(e.contains("too many connections to the tandem proxy primary listener of cluster demo (max_connections 200)"), "{e}");
    // A burst well beyond the limit: refused, no stall.
    let burst: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", pri)).ok())
        .collect();
    healthy("during a burst of 1000 connections over the limit");
    drop(burst);
    // The idle clients are dropped after client_timeout; the listener serves again.
    wait_until(Duration::from_secs(10), "the listener serves again", || {
        p.query(pri, "SELECT 1").ok()
    })
    .unwrap();
    drop(idle);

    // A backend that accepts and hangs (a fake replica registered in etcd) costs the clients
    // that land on it one connect_timeout, not their connection.
    let (api, pg, stop) = ghost_node();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dcs = dcs(&c, &rt);
    let ghost = json!({"conn_url": format!("postgres://{pg}/postgres"), "api_url": format!("http://{api}/patroni"),
                       "state": "running", "role": "replica", "version": "4.1.4"});
    rt.block_on(dcs.put("members/ghost", &ghost.to_string(), None))
        .unwrap();
    wait_until(Duration::from_secs(10), "the ghost is routed", || {
        p.backends(Role::Replicas)
            .contains(&"ghost".to_string())
            .then_some(())
    })
    .unwrap();
    let rep = p.port(Role::Replicas);
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let t = Instant::now();
        let port = p.query(rep, "SELECT inet_server_port()").unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        ports.insert(node_by_port(&c, &port));
    }
    assert!(ports.iter().all(|i| replicas.contains(i)), "{ports:?}");
    healthy("with a hanging backend");
    rt.block_on(dcs.delete("members/ghost")).unwrap();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        p.query(pri, "SELECT inet_server_port()").unwrap(),
        c.nodes[leader].pg_port.to_string()
    );
}

/// Issue 16 point 10: a connection that arrives while the router process is stopped (SIGSTOP;
/// the kernel completes the handshake and queues it) is routed once the router runs again, not
/// reset.
#[test]
fn a_connection_made_while_the_router_was_stopped_is_routed_when_it_resumes() {
    let (mut c, leader, _) = start_cluster(|o| o.router = true);
    let pid = c.start_router().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the router routing the leader",
        || c.router_routes_primary().then_some(()),
    )
    .unwrap();
    let port = c.router.as_ref().unwrap().primary_port;
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
    let (pg_bin, pgpass) = (c.pg_bin.clone(), c.pgpass_path.clone());
    let client =
        std::thread::spawn(move || psql_at(&pg_bin, &pgpass, port, "SELECT inet_server_port()"));
    // The handshake completes in the kernel while the router is stopped.
    let queued = |port: u16| {
        let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        text.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&format!(":{port:04X}")) && f[3] == "01"
            // ESTABLISHED
        })
    };
    wait_until(
        Duration::from_secs(10),
        "the connection queued in the kernel",
        || queued(port).then_some(()),
    )
    .unwrap();
    // The fault: the router stays stopped for a while (its view of the cluster goes stale).
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGCONT) }, 0);
    let out = client.join().unwrap();
    assert_eq!(
        out,
        Ok(c.nodes[leader].pg_port.to_string()),
        "the connection made during the stop was not routed"
    );
}
