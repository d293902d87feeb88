//! Integration tests of `tandem agent` on a real etcd cluster and real PostgreSQL servers, on
//! loopback. Each test builds its own lab in a temporary directory; the lab's Drop stops every
//! process it started, by PID, pass or fail. Run them one at a time (`--test-threads=1`).

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};
use tandem::demo::healthy_roles;
use tandem::lab::{http_get, wait_until, Lab, LabOptions};

mod common;
use common::{answers_200, is_primary, Cluster};

/// Starts etcd and three agents; returns once one leader and two streaming replicas answer.
fn start_cluster(tune: impl FnOnce(&mut LabOptions)) -> (Cluster, usize, Duration) {
    let s = Cluster::prepare("tandem-it-", tune).start();
    (s.cluster, s.leader, s.formed_in)
}

fn is_streaming_replica(lab: &Lab, i: usize) -> bool {
    answers_200(lab, i, "/replica?replication_state=streaming")
}

/// Index of the node that accepts writes, if exactly one does among `candidates`.
fn writable(lab: &Lab, candidates: &[usize]) -> Vec<usize> {
    candidates
        .iter()
        .copied()
        .filter(|&i| {
            matches!(
                lab.psql(i, "SELECT pg_is_in_recovery()").as_deref(),
                Ok("f")
            )
        })
        .collect()
}

/// Runs the `tandem` CLI with no configuration file in reach (only what `args` give) and parses
/// its JSON output; Err(stderr) when it fails.
fn tandem_json(lab: &Lab, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = Command::new(&lab.tandem_bin)
        .env_remove("TANDEM_CONFIG")
        .env_remove("PATRONICTL_CONFIG_FILE")
        .env("HOME", &lab.dir)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn log_of(lab: &Lab, i: usize) -> String {
    std::fs::read_to_string(&lab.nodes[i].log_path).unwrap_or_default()
}

fn kill_leader_hard(c: &mut Cluster, leader: usize) {
    let pm = c.postmaster_pid(leader).expect("leader's postmaster runs");
    c.signal_agent(leader, libc::SIGKILL).expect("kill agent");
    unsafe { libc::kill(pm as i32, libc::SIGKILL) };
}

#[test]
fn bootstrap_replicate_failover_and_rejoin_with_rewind() {
    let (mut c, leader, took) = start_cluster(|_| {});
    eprintln!("cluster formed in {took:?}");
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // Exactly one writable node.
    assert_eq!(writable(&c, &[0, 1, 2]), vec![leader]);

    // A row written on the leader reaches both replicas.
    c.psql(
        leader,
        "CREATE TABLE t (id int primary key, note text); INSERT INTO t VALUES (1, 'before')",
    )
    .unwrap();
    for &r in &others {
        wait_until(Duration::from_secs(20), "row 1 on replica", || {
            (c.psql(r, "SELECT note FROM t WHERE id = 1").ok()? == "before").then_some(())
        })
        .unwrap();
        // Replicas refuse writes.
        assert!(
            c.psql(r, "INSERT INTO t VALUES (99, 'x')").is_err(),
            "replica {r} accepted a write"
        );
    }

    // The DCS holds Patroni's keys: `tandem list -f json` shows one Leader and two streaming replicas.
    let cfg = c.nodes[leader].config_path.to_str().unwrap().to_string();
    let rows = tandem_json(&c, &["-c", &cfg, "list", "-f", "json"]).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().filter(|r| r["Role"] == "Leader").count(), 1);
    assert_eq!(rows.iter().filter(|r| r["State"] == "streaming").count(), 2);
    // The same through patronictl's `--dcs-url`, with no configuration file at all.
    let url = format!("etcd3://127.0.0.1:{}/service", c.etcd[0].client_port);
    let rows = tandem_json(&c, &["-d", &url, "list", "demo", "-f", "json"]).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");
    // Without a cluster name there is nothing to list: the error says how to name it.
    let e = tandem_json(&c, &["-d", &url, "list"]).unwrap_err();
    assert!(e.contains("which cluster?"), "{e}");

    // SIGKILL of the leader's agent and postmaster: the lease is not released.
    let t0 = Instant::now();
    kill_leader_hard(&mut c, leader);
    let new_leader = wait_until(Duration::from_secs(30), "a new writable leader", || {
        let w = writable(&c, &others);
        (w.len() == 1).then(|| w[0])
    })
    .unwrap();
    let failover = t0.elapsed();
    eprintln!("failover after SIGKILL took {failover:?}");
    c.psql(new_leader, "INSERT INTO t VALUES (2, 'after failover')")
        .unwrap();
    assert!(log_of(&c, new_leader).contains("promoted self to leader"));
    // Only one primary among the survivors.
    assert_eq!(writable(&c, &others), vec![new_leader]);
    let survivor = others.iter().copied().find(|&i| i != new_leader).unwrap();
    wait_until(
        Duration::from_secs(30),
        "surviving replica follows the new leader",
        || {
            (c.psql(survivor, "SELECT note FROM t WHERE id = 2").ok()? == "after failover")
                .then_some(())
        },
    )
    .unwrap();

    // The old leader rejoins as a replica, through pg_rewind, and receives the new row.
    c.start_agent(leader).unwrap();
    wait_until(
        Duration::from_secs(60),
        "old leader streams from the new one",
        || is_streaming_replica(&c, leader).then_some(()),
    )
    .unwrap();
    wait_until(Duration::from_secs(20), "row 2 on the old leader", || {
        (c.psql(leader, "SELECT note FROM t WHERE id = 2").ok()? == "after failover").then_some(())
    })
    .unwrap();
    assert!(
        log_of(&c, leader).contains("pg_rewind"),
        "the former primary should have been rewound"
    );
    assert_eq!(writable(&c, &[0, 1, 2]), vec![new_leader]);
    assert!(is_primary(&c, new_leader) && !is_primary(&c, leader));
}

#[test]
fn sigterm_of_the_leader_hands_over_within_seconds() {
    let (mut c, leader, _) = start_cluster(|_| {});
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    c.psql(leader, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .unwrap();
    let t0 = Instant::now();
    c.signal_agent(leader, libc::SIGTERM).unwrap();
    let new_leader = wait_until(Duration::from_secs(15), "a new writable leader", || {
        let w = writable(&c, &others);
        (w.len() == 1).then(|| w[0])
    })
    .unwrap();
    let took = t0.elapsed();
    eprintln!("hand-over after SIGTERM took {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "hand-over took {took:?}, expected a few seconds at most"
    );
    c.psql(new_leader, "INSERT INTO t VALUES (2)").unwrap();
    // The old leader's agent exited and stopped its PostgreSQL.
    wait_until(Duration::from_secs(10), "old agent exits", || {
        (!c.agent_running(leader)).then_some(())
    })
    .unwrap();
    assert!(
        c.postmaster_pid(leader).is_none(),
        "SIGTERM must stop PostgreSQL"
    );
    assert!(log_of(&c, leader).contains("released the leader key"));
}

#[test]
fn etcd_outage_makes_the_primary_read_only_before_ttl_then_writable_again() {
    let (mut c, leader, _) = start_cluster(|_| {});
    let ttl = Duration::from_secs(4);
    c.psql(leader, "CREATE TABLE t (id int)").unwrap();
    let t0 = Instant::now();
    for i in 0..c.etcd.len() {
        c.stop_etcd_member(i).unwrap();
    }
    // Poll writes: the first failure marks the moment the primary stopped accepting them.
    let read_only_after = wait_until(
        Duration::from_secs(20),
        "the primary to stop accepting writes",
        || {
            c.psql(leader, "INSERT INTO t VALUES (1)")
                .is_err()
                .then(|| t0.elapsed())
        },
    )
    .unwrap();
    eprintln!("primary stopped accepting writes {read_only_after:?} after etcd went away");
    assert!(
        read_only_after < ttl,
        "the primary still accepted writes {read_only_after:?} after etcd stopped (ttl {ttl:?})"
    );
    // It stays read-only (a replica) while etcd is down.
    wait_until(
        Duration::from_secs(20),
        "the demoted node to run read-only",
        || (c.psql(leader, "SELECT pg_is_in_recovery()").ok()? == "t").then_some(()),
    )
    .unwrap();
    assert!(
        writable(&c, &[0, 1, 2]).is_empty(),
        "no node may accept writes without etcd"
    );
    for i in 0..c.etcd.len() {
        c.start_etcd_member(i).unwrap();
    }
    let w = wait_until(
        Duration::from_secs(40),
        "a writable leader after etcd returns",
        || {
            let w = writable(&c, &[0, 1, 2]);
            (w.len() == 1).then(|| w[0])
        },
    )
    .unwrap();
    c.psql(w, "INSERT INTO t VALUES (2)").unwrap();
    wait_until(
        Duration::from_secs(60),
        "1 leader + 2 streaming replicas again",
        || healthy_roles(&c),
    )
    .unwrap();
}

fn patroni_doc(lab: &Lab, i: usize) -> serde_json::Value {
    match http_get(
        &format!("127.0.0.1:{}", lab.nodes[i].api_port),
        "/patroni",
        Duration::from_secs(1),
    ) {
        Ok((_, body)) => serde_json::from_str(&body).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

#[test]
fn failsafe_mode_keeps_the_primary_through_an_etcd_outage_while_every_member_answers() {
    let (mut c, leader, _) = start_cluster(|o| {
        o.dcs["failsafe_mode"] = serde_json::json!(true);
    });
    let ttl = Duration::from_secs(4);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    c.psql(leader, "CREATE TABLE t (id int)").unwrap();
    // The leader publishes `/failsafe` with all three members.
    wait_until(Duration::from_secs(10), "/failsafe lists 3 members", || {
        let (code, body) = http_get(
            &format!("127.0.0.1:{}", c.nodes[leader].api_port),
            "/failsafe",
            Duration::from_secs(1),
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v.as_object()?.len() == 3).then_some(())
    })
    .unwrap();

    // etcd goes away entirely: the primary keeps accepting writes well past its ttl, because
    // both replicas answer its POST /failsafe; they stay replicas.
    for i in 0..c.etcd.len() {
        c.stop_etcd_member(i).unwrap();
    }
    let t0 = Instant::now();
    let mut writes = 0;
    let mut seen_active = false;
    while t0.elapsed() < ttl * 2 + Duration::from_secs(2) {
        c.psql(leader, "INSERT INTO t VALUES (1)")
            .unwrap_or_else(|e| panic!("write refused {:?} into the outage: {e}", t0.elapsed()));
        writes += 1;
        if t0.elapsed() > ttl {
            let doc = patroni_doc(&c, leader);
            seen_active |= doc["failsafe_mode_is_active"] == serde_json::json!(true);
            assert!(
                is_primary(&c, leader),
                "/primary must stay 200 in failsafe mode"
            );
        }
        assert!(
            writable(&c, &others).is_empty(),
            "a replica accepted writes"
        );
    }
    assert!(seen_active, "/patroni never showed failsafe_mode_is_active");
    assert!(log_of(&c, leader).contains("failsafe mode is enabled and all members are accessible"));
    eprintln!(
        "{writes} writes accepted during {:?} without etcd",
        t0.elapsed()
    );

    // etcd back: the same leader, failsafe over.
    for i in 0..c.etcd.len() {
        c.start_etcd_member(i).unwrap();
    }
    wait_until(Duration::from_secs(30), "failsafe inactive again", || {
        let doc = patroni_doc(&c, leader);
        (doc["role"] == "primary" && doc.get("failsafe_mode_is_active").is_none()).then_some(())
    })
    .unwrap();
    assert_eq!(writable(&c, &[0, 1, 2]), vec![leader]);

    // Now a member cannot answer (its agent is gone): without etcd the primary must demote.
    c.signal_agent(others[0], libc::SIGKILL).unwrap();
    for i in 0..c.etcd.len() {
        c.stop_etcd_member(i).unwrap();
    }
    let t1 = Instant::now();
    let demoted_after = wait_until(
        Duration::from_secs(20),
        "the primary to stop accepting writes",
        || {
            c.psql(leader, "INSERT INTO t VALUES (2)")
                .is_err()
                .then(|| t1.elapsed())
        },
    )
    .unwrap();
    eprintln!("with one member silent the primary stopped writes after {demoted_after:?}");
    assert!(
        demoted_after < ttl + Duration::from_secs(1),
        "{demoted_after:?}"
    );
    for i in 0..c.etcd.len() {
        c.start_etcd_member(i).unwrap();
    }
}

#[test]
fn refusals_duplicate_name_foreign_data_and_adoption() {
    let (mut c, leader, _) = start_cluster(|_| {});
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (a, b) = (others[0], others[1]);

    // 1. A second agent with a name already running in the scope refuses to start.
    let out = Command::new(&c.tandem_bin)
        .args(["agent", "-c", c.nodes[a].config_path.to_str().unwrap()])
        .uid(c.user.uid)
        .gid(c.user.gid)
        .env("HOME", &c.user.home)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already running") && err.contains(&c.nodes[a].name),
        "{err}"
    );

    // 2. PostgreSQL left running after its agent died is adopted, not started twice.
    let pm = c.postmaster_pid(a).unwrap();
    c.signal_agent(a, libc::SIGKILL).unwrap();
    wait_until(Duration::from_secs(5), "agent gone", || {
        (!c.agent_running(a)).then_some(())
    })
    .unwrap();
    c.start_agent(a).unwrap();
    wait_until(Duration::from_secs(30), "adopted replica streams", || {
        is_streaming_replica(&c, a).then_some(())
    })
    .unwrap();
    assert_eq!(
        c.postmaster_pid(a),
        Some(pm),
        "the running postmaster must be adopted"
    );
    assert!(log_of(&c, a).contains("adopting"));

    // 3. A data directory from another cluster (different system identifier) is refused.
    c.signal_agent(b, libc::SIGTERM).unwrap();
    wait_until(Duration::from_secs(15), "agent b stops", || {
        (!c.agent_running(b)).then_some(())
    })
    .unwrap();
    let data = c.nodes[b].data_dir.clone();
    std::fs::remove_dir_all(&data).unwrap();
    let status = Command::new(c.pg_bin.join("initdb"))
        .args([
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ])
        .uid(c.user.uid)
        .gid(c.user.gid)
        .env("HOME", &c.user.home)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    c.start_agent(b).unwrap();
    wait_until(
        Duration::from_secs(20),
        "agent with foreign data exits",
        || (!c.agent_running(b)).then_some(()),
    )
    .unwrap();
    let log = log_of(&c, b);
    assert!(
        log.contains("belongs to another cluster") && log.contains("system identifier"),
        "{log}"
    );
    assert!(
        c.postmaster_pid(b).is_none(),
        "foreign data must not be started"
    );
    // The rest of the cluster is unaffected.
    assert_eq!(writable(&c, &[leader, a]), vec![leader]);
}

#[test]
fn default_timing_rides_out_agent_stall_and_etcd_member_loss() {
    let (mut c, leader, _) = start_cluster(|_| {});
    c.psql(leader, "CREATE TABLE t (id int)").unwrap();
    let timeline = |c: &Cluster| {
        c.psql(leader, "SELECT timeline_id FROM pg_control_checkpoint()")
            .unwrap()
    };
    let tl_before = timeline(&c);

    // One fault at a time: before each, the leader's lease has been renewed (etcd gives it at
    // least 3 of its 4 s), as it is in a steady cluster.
    let rt = common::runtime();
    let dcs = common::dcs(&c, &rt);
    let renewed = |rt: &tokio::runtime::Runtime| {
        wait_until(
            Duration::from_secs(20),
            "the leader's lease renewed",
            || {
                rt.block_on(async {
                    let (view, _) = dcs.read_cluster().await.ok()?;
                    let lease = view.leader?.lease;
                    dcs.lease_time_to_live(lease)
                        .await
                        .ok()?
                        .filter(|&t| t >= 3)
                })
            },
        )
        .unwrap();
    };
    renewed(&rt);

    // A 2 s stall of the leader's agent (SIGSTOP/SIGCONT): no failover.
    c.signal_agent(leader, libc::SIGSTOP).unwrap();
    let stopped = Instant::now();
    while stopped.elapsed() < Duration::from_secs(2) {
        // Writes keep working while the agent is frozen.
        c.psql(leader, "INSERT INTO t VALUES (1)").unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    c.signal_agent(leader, libc::SIGCONT).unwrap();
    renewed(&rt);

    // Loss of one etcd member (kill each in turn, the etcd leader among them): no failover.
    for i in 0..c.etcd.len() {
        c.stop_etcd_member(i).unwrap();
        let down = Instant::now();
        while down.elapsed() < Duration::from_secs(3) {
            c.psql(leader, "INSERT INTO t VALUES (2)").unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        c.start_etcd_member(i).unwrap();
        wait_until(Duration::from_secs(20), "etcd healthy again", || {
            (0..c.etcd.len()).all(|j| c.etcd_healthy(j)).then_some(())
        })
        .unwrap();
        renewed(&rt);
    }
    assert_eq!(
        writable(&c, &[0, 1, 2]),
        vec![leader],
        "the leader must not change"
    );
    assert_eq!(timeline(&c), tl_before, "no promotion may have happened");
    assert!(
        !log_of(&c, leader).contains("demot"),
        "the leader must not demote itself"
    );
}

/// libpq's variables in the shell that starts the agent (a habit after using `psql`) must not
/// reach its children: with a wrong PGPASSWORD, a PGSSLMODE the servers cannot serve, a PGHOST and
/// PGPORT that lead nowhere, the replicas still clone and stream, as the configuration says.
#[test]
fn inherited_libpq_variables_do_not_reach_the_agents_children() {
    let s = Cluster::prepare("tandem-it-pgenv-", |o| {
        o.agent_env = [
            ("PGPASSWORD", "not-the-replication-password"),
            ("PGSSLMODE", "require"),
            ("PGHOST", "/nonexistent"),
            ("PGPORT", "1"),
            ("PGUSER", "nobody"),
            ("PGDATABASE", "nowhere"),
            ("PGSERVICE", "nothing"),
            ("PGOPTIONS", "-c default_transaction_read_only=on"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    })
    .start();
    let c = s.cluster;
    for &r in &s.replicas {
        wait_until(Duration::from_secs(30), "a streaming replica", || {
            is_streaming_replica(&c, r).then_some(())
        })
        .unwrap();
        let log = log_of(&c, r);
        assert!(
            !log.lines()
                .any(|l| l.contains("cloning from") && l.contains("failed")),
            "a clone failed: {log}"
        );
    }
    assert_eq!(s.replicas.len(), 2);
}

/// Issue 12 point 1: `edit-config` of the timing values on a running cluster moves no
/// leadership and cuts no session. Before, every agent revoked its lease for a new one, the
/// leader key vanished with the leader's, a replica won the race and the session died.
#[test]
fn changing_ttl_loop_wait_and_retry_timeout_moves_no_leader_and_cuts_no_session() {
    let s = Cluster::prepare("tandem-it-ttl-", |o| o.router = true).start();
    let (mut c, leader) = (s.cluster, s.leader);
    c.start_router().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the router routing the leader",
        || c.router_routes_primary().then_some(()),
    )
    .unwrap();
    let rt = common::runtime();
    let dcs = common::dcs(&c, &rt);
    let key = |rt: &tokio::runtime::Runtime| {
        rt.block_on(dcs.read_cluster())
            .ok()
            .and_then(|(v, _)| v.leader)
            .map(|l| (l.name, l.lease))
    };
    let (name, lease_before) = key(&rt).expect("a leader key");
    assert_eq!(name, c.nodes[leader].name);

    // A session through the router that must survive the change.
    let port = c.router.as_ref().unwrap().primary_port;
    let (psql, pgpass) = (c.pg_bin.join("psql"), c.pgpass_path.clone());
    let session = std::thread::spawn(move || {
        Command::new(psql)
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(format!(
                "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=10"
            ))
            .args(["-c", "select pg_sleep(6), 'survived'"])
            .env("PGPASSFILE", pgpass)
            .env_remove("PGPASSWORD")
            .output()
    });
    wait_until(Duration::from_secs(10), "the session running", || {
        c.psql(
            leader,
            "select count(*) from pg_stat_activity where query like 'select pg_sleep(6)%'",
        )
        .ok()
        .filter(|n| n == "1")
    })
    .unwrap();

    let out = Command::new(&c.tandem_bin)
        .arg("-c")
        .arg(&c.nodes[leader].config_path)
        .args([
            "edit-config",
            "-s",
            "ttl=6",
            "-s",
            "loop_wait=2",
            "-s",
            "retry_timeout=3",
            "--force",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Sample the leader key every 50 ms for 7 s: it names the same node all along.
    let t0 = Instant::now();
    let mut lease_after = lease_before;
    while t0.elapsed() < Duration::from_secs(7) {
        match key(&rt) {
            Some((n, l)) => {
                assert_eq!(n, name, "the leader key moved to {n} after a ttl change");
                lease_after = l;
            }
            None => panic!("the leader key vanished during a ttl change"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = session.join().unwrap().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("survived"),
        "the session through the router was cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        lease_after, lease_before,
        "the new ttl was not applied to the leader's lease"
    );
    assert!(
        log_of(&c, leader).contains("ttl changed"),
        "{}",
        log_of(&c, leader)
    );
    assert_eq!(writable(&c, &[0, 1, 2]), vec![leader]);
}

/// Issue 16 point 2: a wrong `initialize` written into etcd made every agent exit and left the
/// primary writable with no agent. The leader now rewrites the key; nobody exits.
#[test]
fn a_wrong_initialize_key_is_repaired_and_no_agent_exits() {
    let (mut c, leader, _) = start_cluster(|_| {});
    let rt = common::runtime();
    let dcs = common::dcs(&c, &rt);
    let init = || {
        rt.block_on(dcs.read_cluster())
            .ok()
            .and_then(|(v, _)| v.initialize)
    };
    let sysid = init().expect("initialize");
    rt.block_on(dcs.put("initialize", "7000000000000000001", None))
        .unwrap();
    wait_until(Duration::from_secs(15), "initialize repaired", || {
        (init().as_deref() == Some(sysid.as_str())).then_some(())
    })
    .unwrap();
    for i in 0..3 {
        assert!(c.agent_running(i), "agent {i} exited: {}", log_of(&c, i));
    }
    assert_eq!(writable(&c, &[0, 1, 2]), vec![leader]);
    assert!(
        log_of(&c, leader).contains("rewrote it"),
        "{}",
        log_of(&c, leader)
    );
}

/// Issue 16 point 3: member keys are repaired. Garbage in the leader's key made the router
/// answer "no primary available" for 107 s; a deleted replica key hid it from `list`, the read
/// pool and the candidates. Each agent now writes its key again when etcd does not hold what it
/// wrote; in a steady cluster it never needs to.
#[test]
fn damaged_member_keys_are_written_again() {
    let (c, leader, _) = start_cluster(|_| {});
    let replica = (0..3).find(|&i| i != leader).unwrap();
    let rt = common::runtime();
    let dcs = common::dcs(&c, &rt);
    let member_ok = |i: usize| {
        rt.block_on(dcs.read_cluster())
            .ok()
            .and_then(|(v, _)| v.members.get(&c.nodes[i].name).cloned())
            .is_some_and(|m| !m.value.conn_url.is_empty())
    };
    // Steady: a few cycles, no repair needed.
    let t0 = Instant::now();
    wait_until(Duration::from_secs(10), "3 s of steady cluster", || {
        (t0.elapsed() >= Duration::from_secs(3)).then_some(())
    })
    .unwrap();
    const REPAIR: &str = "not what I wrote: writing it again";
    for i in 0..3 {
        assert!(!log_of(&c, i).contains(REPAIR), "{}", log_of(&c, i));
    }
    let leader_key = format!("members/{}", c.nodes[leader].name);
    rt.block_on(dcs.put(&leader_key, "{garbage", None)).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the leader's member key repaired",
        || member_ok(leader).then_some(()),
    )
    .unwrap();
    rt.block_on(dcs.delete(&format!("members/{}", c.nodes[replica].name)))
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the replica's member key repaired",
        || member_ok(replica).then_some(()),
    )
    .unwrap();
    assert!(log_of(&c, leader).contains(REPAIR));
    assert!(log_of(&c, replica).contains(REPAIR));
}
