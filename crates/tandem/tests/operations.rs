//! Operations driven through etcd, as `patronictl` and the REST API do: planned switchover,
//! scheduled switchover, pause (no automatic promotion) and resume. Real etcd and PostgreSQL.

use std::time::{Duration, Instant};
use tandem::demo::healthy_roles;
use tandem::lab::{http_get, wait_until, Lab};

mod common;
use common::{dcs, is_primary, Cluster};

fn start() -> (Cluster, usize) {
    let s = Cluster::prepare("tandem-ops-", |_| {}).start();
    (s.cluster, s.leader)
}

fn primary(lab: &Lab) -> Option<usize> {
    let p: Vec<usize> = (0..lab.nodes.len())
        .filter(|&i| is_primary(lab, i))
        .collect();
    (p.len() == 1).then(|| p[0])
}

fn writable(lab: &Lab) -> Vec<usize> {
    (0..lab.nodes.len())
        .filter(|&i| {
            matches!(
                lab.psql(i, "SELECT pg_is_in_recovery()").as_deref(),
                Ok("f")
            )
        })
        .collect()
}

fn name(lab: &Lab, i: usize) -> String {
    lab.nodes[i].name.clone()
}

#[test]
fn switchover_scheduled_switchover_pause_and_resume() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut c, leader) = start();
    let d = dcs(&c.lab, &rt);
    let cand = (0..3).find(|&i| i != leader).unwrap();

    // A writer through a connection string that follows the primary, during the switchover:
    // every acknowledged row must survive it.
    c.lab
        .psql(leader, "CREATE TABLE acked (id int primary key)")
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let psql = c.lab.pg_bin.join("psql");
        let pgpass = c.lab.pgpass_path.clone();
        let ports: Vec<String> = c.lab.nodes.iter().map(|n| n.pg_port.to_string()).collect();
        let conninfo = format!(
            "host=127.0.0.1,127.0.0.1,127.0.0.1 port={} user=postgres dbname=postgres target_session_attrs=read-write connect_timeout=1",
            ports.join(",")
        );
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut id = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                id += 1;
                let ok = std::process::Command::new(&psql)
                    .args([
                        "-X",
                        "-q",
                        "-d",
                        &conninfo,
                        "-c",
                        &format!("INSERT INTO acked VALUES ({id})"),
                    ])
                    .env("PGPASSFILE", &pgpass)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    acked.push(id);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            acked
        })
    };
    wait_until(Duration::from_secs(10), "the writer's first rows", || {
        (c.lab
            .psql(leader, "SELECT count(*) FROM acked")
            .ok()?
            .parse::<u32>()
            .ok()?
            > 3)
        .then_some(())
    })
    .unwrap();

    // Planned switchover to a named candidate.
    let t0 = Instant::now();
    let req = format!(
        r#"{{"leader":"{}","member":"{}"}}"#,
        name(&c.lab, leader),
        name(&c.lab, cand)
    );
    rt.block_on(d.put("failover", &req, None)).unwrap();
    wait_until(
        Duration::from_secs(20),
        "candidate becomes the writable leader",
        || (writable(&c.lab) == vec![cand]).then_some(()),
    )
    .unwrap();
    eprintln!("switchover took {:?}", t0.elapsed());
    // Let the writer go on a little on the new leader, then check that nothing acknowledged is lost.
    let before = c
        .lab
        .psql(cand, "SELECT count(*) FROM acked")
        .unwrap()
        .parse::<u32>()
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "writes continue on the new leader",
        || {
            (c.lab
                .psql(cand, "SELECT count(*) FROM acked")
                .ok()?
                .parse::<u32>()
                .ok()?
                > before + 3)
                .then_some(())
        },
    )
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    let present: std::collections::BTreeSet<i64> = c
        .lab
        .psql(cand, "SELECT id FROM acked")
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost in the switchover: {lost:?}"
    );
    assert!(acked.len() > 6, "the writer barely wrote: {}", acked.len());
    wait_until(
        Duration::from_secs(30),
        "old leader streams from the new one",
        || healthy_roles(&c.lab).filter(|(l, _)| *l == cand),
    )
    .unwrap();
    let (view, _) = rt.block_on(d.read_cluster()).unwrap();
    assert!(
        view.failover_request().is_none(),
        "the new leader clears the request"
    );
    let h = view.history.expect("history written").value;
    assert_eq!(
        h.last().and_then(|e| e.new_leader.clone()),
        Some(name(&c.lab, cand))
    );

    // Scheduled switchover back: nothing happens before the time, it fires after.
    let at = chrono::Utc::now() + chrono::Duration::seconds(4);
    let req = format!(
        r#"{{"leader":"{}","member":"{}","scheduled_at":"{}"}}"#,
        name(&c.lab, cand),
        name(&c.lab, leader),
        at.to_rfc3339()
    );
    rt.block_on(d.put("failover", &req, None)).unwrap();
    while chrono::Utc::now() < at - chrono::Duration::milliseconds(500) {
        assert_eq!(
            writable(&c.lab),
            vec![cand],
            "switchover fired before its time"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_until(
        Duration::from_secs(20),
        "scheduled switchover fires",
        || (writable(&c.lab) == vec![leader]).then_some(()),
    )
    .unwrap();
    assert!(chrono::Utc::now() >= at, "fired too early");
    wait_until(Duration::from_secs(30), "healthy again", || {
        healthy_roles(&c.lab).filter(|(l, _)| *l == leader)
    })
    .unwrap();

    // Pause: kill the leader hard; nobody is promoted.
    let (view, _) = rt.block_on(d.read_cluster()).unwrap();
    let mut config = view.config.clone().unwrap();
    config.value["pause"] = serde_json::Value::Bool(true);
    assert!(rt
        .block_on(d.cas("config", &config.value.to_string(), config.mod_revision))
        .unwrap());
    wait_until(Duration::from_secs(10), "members report pause", || {
        let (v, _) = rt.block_on(d.read_cluster()).ok()?;
        v.members
            .values()
            .all(|m| m.value.pause == Some(true))
            .then_some(())
    })
    .unwrap();
    let pm = c.lab.postmaster_pid(leader).unwrap();
    c.lab.signal_agent(leader, libc::SIGKILL).unwrap();
    unsafe { libc::kill(pm as i32, libc::SIGKILL) };
    let killed = Instant::now();
    // Observe for three lease periods: no promotion while paused.
    while killed.elapsed() < Duration::from_secs(12) {
        assert!(
            writable(&c.lab).is_empty(),
            "a replica was promoted while paused"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(primary(&c.lab).is_none());

    // While paused, a manual failover to a named replica promotes it (and it keeps the key: a
    // paused holder that is not primary would otherwise release it and leave no leader).
    let named = (0..3).find(|&i| i != leader).unwrap();
    rt.block_on(d.put(
        "failover",
        &format!(r#"{{"member":"{}"}}"#, name(&c.lab, named)),
        None,
    ))
    .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the named replica promoted while paused",
        || (writable(&c.lab) == vec![named]).then_some(()),
    )
    .unwrap();
    let (view, _) = rt.block_on(d.read_cluster()).unwrap();
    assert_eq!(view.leader_name(), Some(name(&c.lab, named).as_str()));

    // Resume: a replica leads (here the one named above).
    let (view, _) = rt.block_on(d.read_cluster()).unwrap();
    let mut config = view.config.clone().unwrap();
    config.value.as_object_mut().unwrap().remove("pause");
    assert!(rt
        .block_on(d.cas("config", &config.value.to_string(), config.mod_revision))
        .unwrap());
    let w = wait_until(
        Duration::from_secs(20),
        "a replica is promoted after resume",
        || {
            let w = writable(&c.lab);
            (w.len() == 1).then(|| w[0])
        },
    )
    .unwrap();
    assert_ne!(w, leader);
}

/// A minimal HTTP/1.1 POST on loopback; returns (status, body).
fn http_post(addr: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn reinitialize_repairs_a_broken_replica() {
    let (mut c, leader) = start();
    let broken = (0..3).find(|&i| i != leader).unwrap();
    c.lab
        .psql(leader, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .unwrap();
    // Break the replica: kill its agent and postmaster, then destroy part of its data directory.
    let pm = c.lab.postmaster_pid(broken).unwrap();
    c.lab.signal_agent(broken, libc::SIGKILL).unwrap();
    unsafe { libc::kill(pm as i32, libc::SIGKILL) };
    wait_until(Duration::from_secs(10), "postmaster gone", || {
        c.lab.postmaster_pid(broken).is_none().then_some(())
    })
    .unwrap();
    std::fs::remove_dir_all(c.lab.nodes[broken].data_dir.join("base")).unwrap();
    // Its clones are throttled by postgresql.basebackup (pg_basebackup --max-rate), which
    // proves the option reaches pg_basebackup and keeps the reinitialize running long enough
    // to be asked for twice.
    let path = &c.lab.nodes[broken].config_path;
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["postgresql"]["basebackup"] = serde_yaml::from_str("[{max-rate: 4M}]").unwrap();
    std::fs::write(path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    c.lab.start_agent(broken).unwrap();
    // PostgreSQL cannot serve from this data (it fails to start, or starts and cannot open the
    // database): the node is not healthy.
    let api = format!("127.0.0.1:{}", c.lab.nodes[broken].api_port);
    wait_until(
        Duration::from_secs(30),
        "the broken replica answers on REST",
        || http_get(&api, "/patroni", Duration::from_secs(1)).ok(),
    )
    .unwrap();
    for _ in 0..5 {
        let (code, body) = http_get(&api, "/health", Duration::from_secs(1)).unwrap();
        assert_eq!(
            code, 503,
            "a replica without its base directory must not be healthy: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.lab.psql(leader, "INSERT INTO t VALUES (2)").unwrap();
    // Reinitialize from the leader through the REST API.
    let (code, body) = http_post(
        &api,
        "/reinitialize",
        r#"{"force": true, "from_leader": true}"#,
    );
    assert_eq!(code, 200, "{body}");
    // Issue 16 point 7: while it runs, more requests are refused, not queued behind it to wipe
    // the fresh copy again.
    for _ in 0..2 {
        let (code, body) = http_post(&api, "/reinitialize", r#"{"force": true}"#);
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("reinitialize already in progress"), "{body}");
    }
    wait_until(
        Duration::from_secs(60),
        "the reinitialized replica streams again",
        || healthy_roles(&c.lab).filter(|(l, _)| *l == leader),
    )
    .unwrap();
    wait_until(Duration::from_secs(20), "its data is the leader's", || {
        (c.lab.psql(broken, "SELECT count(*) FROM t").ok()? == "2").then_some(())
    })
    .unwrap();
    let log = std::fs::read_to_string(&c.lab.nodes[broken].log_path).unwrap();
    let after = log
        .split("reinitializing: stopping PostgreSQL")
        .nth(1)
        .expect("the reinitialize in the log");
    let clones: Vec<f64> = after
        .lines()
        .filter_map(|l| l.split(" cloned from ").nth(1))
        .filter_map(|rest| rest.split_whitespace().nth(2)?.parse().ok())
        .collect();
    assert_eq!(
        clones.len(),
        1,
        "one clone after the reinitialize: {clones:?}"
    );
    assert!(
        clones[0] >= 2.0,
        "a clone at --max-rate=4M took {} s: the option did not reach pg_basebackup",
        clones[0]
    );
}

/// Trust issue point 6: a leader whose PostgreSQL crashed and cannot start again (here a broken
/// `postgresql.auto.conf`, as an `ALTER SYSTEM` gone wrong leaves it) hands the leader key to a
/// healthy replica once `primary_start_timeout` has passed, instead of keeping it for ever while
/// its lease is renewed. Once repaired, it rejoins as a replica.
#[test]
fn leader_whose_postgres_cannot_start_steps_down_after_primary_start_timeout() {
    let rt = common::runtime();
    // postgresql.callbacks, checked along the way: every call is one line in `calls`.
    let c = Cluster::prepare("tandem-ops-", |_| {});
    let cb_dir = c.lab.dir.join("callbacks");
    std::fs::create_dir_all(&cb_dir).unwrap();
    let calls = cb_dir.join("calls");
    let script = cb_dir.join("cb.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display()),
    )
    .unwrap();
    std::fs::write(&calls, "").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cb_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&calls, std::fs::Permissions::from_mode(0o666)).unwrap();
    for node in &c.lab.nodes {
        let text = std::fs::read_to_string(&node.config_path).unwrap();
        let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let cbs: serde_yaml::Value = serde_yaml::from_str(&format!(
            "{{on_start: '{0}', on_role_change: '{0}', on_stop: '{0}'}}",
            script.display()
        ))
        .unwrap();
        doc["postgresql"]["callbacks"] = cbs;
        std::fs::write(&node.config_path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    }
    let s = c.start();
    let (c, leader) = (s.cluster, s.leader);
    let scope = c.lab.scope.clone();
    let called = |line: &str| {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == line)
            .count()
    };
    wait_until(
        Duration::from_secs(10),
        "on_start callbacks of the cluster",
        || {
            (called(&format!("on_start primary {scope}")) == 1
                && called(&format!("on_start replica {scope}")) == 2)
                .then_some(())
        },
    )
    .unwrap();
    let d = dcs(&c.lab, &rt);
    let out = std::process::Command::new(&c.lab.tandem_bin)
        .arg("-c")
        .arg(&c.lab.nodes[leader].config_path)
        .args(["edit-config", "-s", "primary_start_timeout=3", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_until(
        Duration::from_secs(10),
        "the leader applying primary_start_timeout=3",
        || {
            let (code, body) = c.lab.api_get(leader, "/config").ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["primary_start_timeout"] == 3).then_some(())
        },
    )
    .unwrap();

    let auto = c.lab.nodes[leader].data_dir.join("postgresql.auto.conf");
    let original = std::fs::read_to_string(&auto).unwrap();
    std::fs::write(&auto, format!("{original}shared_buffers = 'not-a-size'\n")).unwrap();
    let pid = c
        .lab
        .postmaster_pid(leader)
        .expect("the leader's postmaster");
    let crashed = Instant::now();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };

    // Until the timeout the key stays (PostgreSQL might still come back); after it, a replica
    // takes over. Never two writers.
    let new_leader = wait_until(Duration::from_secs(40), "a replica taking over", || {
        let w = writable(&c.lab);
        assert!(w.len() <= 1, "two writable nodes: {w:?}");
        match w.as_slice() {
            [n] if *n != leader => Some(*n),
            _ => None,
        }
    })
    .unwrap();
    let took = crashed.elapsed();
    eprintln!("a replica took over {took:?} after the crash");
    assert!(
        took >= Duration::from_secs(3),
        "the key moved before primary_start_timeout ({took:?})"
    );
    let (view, _) = rt.block_on(d.read_cluster()).unwrap();
    assert_eq!(view.leader_name(), Some(name(&c.lab, new_leader).as_str()));
    let log = std::fs::read_to_string(&c.lab.nodes[leader].log_path).unwrap();
    assert!(
        log.contains("past primary_start_timeout"),
        "no step-down in the log"
    );
    wait_until(Duration::from_secs(10), "role-change callbacks", || {
        (called(&format!("on_role_change demoted {scope}")) == 1
            && called(&format!("on_role_change primary {scope}")) == 1)
            .then_some(())
    })
    .unwrap();

    // Repaired, the former leader rejoins as a replica of the new one.
    std::fs::write(&auto, original).unwrap();
    wait_until(
        Duration::from_secs(60),
        "the former leader streaming from the new one",
        || match healthy_roles(&c.lab) {
            Some((l, r)) if l == new_leader && r.contains(&leader) => Some(()),
            _ => None,
        },
    )
    .unwrap();
}
