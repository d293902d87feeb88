//! Operations driven through etcd, as `patronictl` and the REST API do: planned switchover,
//! scheduled switchover, pause (no automatic promotion) and resume. Real etcd and PostgreSQL.

use std::time::{Duration, Instant};
use tandem::config::Config;
use tandem::dcs::Dcs;
use tandem::demo::healthy_roles;
use tandem::lab::{http_get, wait_until, Lab, LabOptions};

struct Cluster {
    lab: Lab,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.lab.nodes {
                let text = std::fs::read_to_string(&n.log_path).unwrap_or_default();
                eprintln!("---- {} ----", n.name);
                for l in text.lines().rev().take(30).collect::<Vec<_>>().iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        self.lab.stop_all();
    }
}

fn start() -> (Cluster, usize) {
    let dir = tempfile::Builder::new()
        .prefix("tandem-ops-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut o = LabOptions::new(dir.path());
    o.tandem_exe = Some(env!("CARGO_BIN_EXE_tandem").into());
    let mut c = Cluster {
        lab: Lab::prepare(o).unwrap(),
        _dir: dir,
    };
    c.lab.start_etcd().unwrap();
    for i in 0..3 {
        c.lab.start_agent(i).unwrap();
    }
    let (leader, _) = wait_until(Duration::from_secs(90), "cluster forms", || {
        healthy_roles(&c.lab)
    })
    .unwrap();
    (c, leader)
}

fn dcs(lab: &Lab, rt: &tokio::runtime::Runtime) -> Dcs {
    let cfg = Config::load(&lab.nodes[0].config_path).unwrap();
    rt.block_on(Dcs::connect(
        &cfg.etcd3,
        &cfg.base_path(),
        Duration::from_secs(2),
    ))
    .unwrap()
}

fn primary(lab: &Lab) -> Option<usize> {
    let p: Vec<usize> = (0..lab.nodes.len())
        .filter(|&i| {
            matches!(
                http_get(
                    &format!("127.0.0.1:{}", lab.nodes[i].api_port),
                    "/primary",
                    Duration::from_secs(1)
                ),
                Ok((200, _))
            )
        })
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

    // Resume: a replica takes over.
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
