//! Synchronous replication (issue 13, spec §4), on a real three-node cluster: turning it on names
//! a standby in `synchronous_standby_names` and then in `/sync`; a hard crash of the primary fails
//! over to that standby with every acknowledged commit; strict mode makes a commit wait while no
//! standby is left, and return once one is back; turning it off returns to asynchronous
//! replication. Real etcd and PostgreSQL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem::lab::{wait_until, Lab};

mod common;
use common::{answers_200, cli, dcs, is_primary, runtime, Cluster};

/// `/sync` as stored: (leader, sync standbys).
fn sync_key(lab: &Lab, rt: &tokio::runtime::Runtime) -> Option<(String, Vec<String>)> {
    let (view, _) = rt.block_on(dcs(lab, rt).read_cluster()).ok()?;
    let s = tandem_core::sync::SyncState::parse(&view.sync?.value).ok()?;
    Some((s.leader?, s.standbys))
}

fn index_of(lab: &Lab, name: &str) -> usize {
    lab.nodes
        .iter()
        .position(|n| n.name == name)
        .expect("a lab member")
}

fn kill_hard(c: &mut Cluster, i: usize) {
    let pm = c.postmaster_pid(i).expect("the postmaster runs");
    c.signal_agent(i, libc::SIGKILL).expect("kill agent");
    unsafe { libc::kill(pm as i32, libc::SIGKILL) };
}

/// Turns synchronous mode on and waits until the leader names one standby in SSN and `/sync`.
/// Returns that standby.
fn enable(c: &Cluster, rt: &tokio::runtime::Runtime, leader: usize, sets: &[&str]) -> usize {
    let mut args = vec!["edit-config"];
    for s in sets {
        args.extend(["-s", s]);
    }
    args.push("--force");
    let (ok, out) = cli(c, leader, &args);
    assert!(ok, "edit-config: {out}");
    let leader_name = c.nodes[leader].name.clone();
    let (standby, took) = {
        let t0 = Instant::now();
        let s = wait_until(
            Duration::from_secs(30),
            "/sync names the leader and one standby",
            || match sync_key(c, rt) {
                Some((l, s)) if l == leader_name && s.len() == 1 => Some(s[0].clone()),
                _ => None,
            },
        )
        .unwrap();
        (s, t0.elapsed())
    };
    eprintln!("/sync names {standby} {took:?} after the change");
    // The leader's PostgreSQL waits for that standby.
    assert_eq!(
        c.psql(leader, "SHOW synchronous_standby_names").unwrap(),
        standby
    );
    let s = index_of(c, &standby);
    assert_eq!(
        c.psql(
            leader,
            &format!(
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = '{standby}'"
            )
        )
        .unwrap(),
        "sync"
    );
    s
}

/// A writer commits on the leader continuously; the leader's agent and postmaster are killed
/// with SIGKILL; returns the node that became primary, having checked that every row whose
/// commit was acknowledged is on it.
fn crash_leader_under_writes(c: &mut Cluster, leader: usize) -> usize {
    // Commits acknowledged by the primary, then a hard crash of its agent and postmaster.
    c.psql(leader, "CREATE TABLE acked (id int primary key)")
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let psql = c.pg_bin.join("psql");
        let pgpass = c.pgpass_path.clone();
        let port = c.nodes[leader].pg_port;
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let ok = std::process::Command::new(&psql)
                    .args([
                        "-X",
                        "-q",
                        "-d",
                        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=1"),
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
            }
            acked
        })
    };
    wait_until(Duration::from_secs(20), "50 acknowledged rows", || {
        (c.psql(leader, "SELECT count(*) FROM acked")
            .ok()?
            .parse::<u32>()
            .ok()?
            >= 50)
            .then_some(())
    })
    .unwrap();
    kill_hard(c, leader);
    let t0 = Instant::now();
    // The writer keeps trying the dead primary until it is told to stop.
    let new = wait_until(Duration::from_secs(60), "a new primary", || {
        (0..3).find(|&i| i != leader && is_primary(c, i))
    })
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    eprintln!(
        "{} acknowledged rows; {} promoted {:?} after the crash",
        acked.len(),
        c.nodes[new].name,
        t0.elapsed()
    );
    let have: std::collections::BTreeSet<i64> = c
        .psql(
            new,
            "SELECT coalesce(string_agg(id::text, ','), '') FROM acked",
        )
        .unwrap()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !have.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    new
}

#[test]
fn synchronous_mode_fails_over_to_the_synchronous_standby_with_every_acknowledged_commit() {
    let rt = runtime();
    let s = Cluster::prepare("tandem-sync-", |_| {}).start();
    let (mut c, leader) = (s.cluster, s.leader);
    let sync = enable(&c, &rt, leader, &["synchronous_mode=true"]);
    let other = (0..3).find(|&i| i != leader && i != sync).unwrap();

    // REST and list say who is synchronous, as Patroni's do.
    assert!(answers_200(&c, sync, "/sync"));
    assert!(!answers_200(&c, other, "/sync"));
    assert!(answers_200(&c, other, "/async"));
    let (ok, out) = cli(&c, leader, &["list"]);
    assert!(ok && out.contains("Sync Standby"), "{out}");

    let new = crash_leader_under_writes(&mut c, leader);
    assert_eq!(new, sync, "only the synchronous standby may take over");
    assert!(!is_primary(&c, other));

    // The new primary names the remaining standby once it follows.
    let other_name = c.nodes[other].name.clone();
    let new_name = c.nodes[new].name.clone();
    wait_until(
        Duration::from_secs(30),
        "/sync names the new leader and the other standby",
        || (sync_key(&c, &rt) == Some((new_name.clone(), vec![other_name.clone()]))).then_some(()),
    )
    .unwrap();

    // Off again: /sync removed, SSN back to the configuration's (empty).
    let (ok, out) = cli(
        &c,
        new,
        &["edit-config", "-s", "synchronous_mode=false", "--force"],
    );
    assert!(ok, "{out}");
    wait_until(Duration::from_secs(30), "/sync removed, SSN empty", || {
        (sync_key(&c, &rt).is_none()
            && c.psql(new, "SHOW synchronous_standby_names")
                .ok()?
                .is_empty())
        .then_some(())
    })
    .unwrap();
}

#[test]
fn strict_mode_holds_commits_while_no_standby_is_left() {
    let rt = runtime();
    let s = Cluster::prepare("tandem-strict-", |_| {}).start();
    let (mut c, leader) = (s.cluster, s.leader);
    let sync = enable(
        &c,
        &rt,
        leader,
        &["synchronous_mode=true", "synchronous_mode_strict=true"],
    );
    let other = (0..3).find(|&i| i != leader && i != sync).unwrap();
    c.psql(leader, "CREATE TABLE t (id int)").unwrap();

    // Both standbys crash.
    kill_hard(&mut c, other);
    kill_hard(&mut c, sync);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let psql = c.pg_bin.join("psql");
        let pgpass = c.pgpass_path.clone();
        let port = c.nodes[leader].pg_port;
        std::thread::spawn(move || {
            let out = std::process::Command::new(&psql)
                .args([
                    "-X",
                    "-q",
                    "-d",
                    &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
                    "-c",
                    "INSERT INTO t VALUES (1)",
                ])
                .env("PGPASSFILE", &pgpass)
                .output();
            let _ = done_tx.send(out.map(|o| o.status.success()).unwrap_or(false));
        });
    }
    // The commit is not acknowledged while no standby runs. (Waiting for something that must
    // not happen: the receive times out, which is the pass.)
    assert!(
        done_rx.recv_timeout(Duration::from_secs(5)).is_err(),
        "a commit was acknowledged with no standby left in strict mode"
    );
    assert!(!c
        .psql(leader, "SHOW synchronous_standby_names")
        .unwrap()
        .is_empty());
    // One standby back: the commit returns.
    c.start_agent(other).unwrap();
    let t0 = Instant::now();
    let ok = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the commit returns once a standby is back");
    assert!(ok, "the INSERT failed");
    eprintln!(
        "commit acknowledged {:?} after a standby came back",
        t0.elapsed()
    );
    assert!(is_primary(&c, leader));
    assert_eq!(c.psql(other, "SELECT count(*) FROM t").unwrap(), "1");
}

/// Quorum commit (spec §4.5): SSN `ANY 1 (both standbys)`, `/sync` names both as voters with
/// quorum 1; after a hard crash of the primary a standby that sees the other voter takes over,
/// with every acknowledged commit.
#[test]
fn quorum_mode_fails_over_with_every_acknowledged_commit() {
    let rt = runtime();
    let s = Cluster::prepare("tandem-quorum-", |_| {}).start();
    let (mut c, leader) = (s.cluster, s.leader);
    let (ok, out) = cli(
        &c,
        leader,
        &["edit-config", "-s", "synchronous_mode=quorum", "--force"],
    );
    assert!(ok, "edit-config: {out}");
    let leader_name = c.nodes[leader].name.clone();
    let mut standbys: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| c.nodes[i].name.clone())
        .collect();
    standbys.sort();
    let want_ssn = format!("ANY 1 ({})", standbys.join(","));
    wait_until(
        Duration::from_secs(30),
        "/sync names both standbys as voters, SSN ANY 1 of them",
        || {
            let (view, _) = rt.block_on(dcs(&c, &rt).read_cluster()).ok()?;
            let s = tandem_core::sync::SyncState::parse(&view.sync?.value).ok()?;
            (s.leader.as_deref() == Some(leader_name.as_str())
                && s.standbys == standbys
                && s.quorum == 1
                && c.psql(leader, "SHOW synchronous_standby_names").ok()? == want_ssn)
                .then_some(())
        },
    )
    .unwrap();
    for i in (0..3).filter(|&i| i != leader) {
        assert!(
            answers_200(&c, i, "/quorum"),
            "{} is a quorum standby",
            c.nodes[i].name
        );
    }
    let (ok, out) = cli(&c, leader, &["list"]);
    assert!(ok && out.matches("Quorum Standby").count() == 2, "{out}");
    let new = crash_leader_under_writes(&mut c, leader);
    assert_ne!(new, leader);
}
