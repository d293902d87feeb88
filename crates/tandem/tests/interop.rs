//! Interoperability (issue 13): a Patroni 4.1.5 agent (from PyPI, in the virtualenv that
//! `patronictl.rs` also makes) joins a tandem lab cluster as a further member, and both sides agree
//! on `/sync` in synchronous mode (priority mode, `synchronous_mode: true`).
//!
//! The lab has two tandem nodes and one etcd member. The tandem replica is stopped, so the Patroni
//! member (cloned from the tandem leader with pg_basebackup) is the only candidate when
//! synchronous mode is turned on:
//!
//! 1. the tandem leader names it in `synchronous_standby_names` and in `/sync`; Patroni's REST API
//!    answers 200 on `GET /sync`; `tandem list` and `patronictl list` show it as `Sync Standby`;
//! 2. a switchover to the Patroni member: Patroni leads, rewrites `/sync` naming itself, and then a
//!    tandem member as its synchronous standby; the stopped tandem node comes back and streams
//!    from Patroni too; tandem's REST API answers 200 on `GET /sync` on the member Patroni named,
//!    `GET /async` on the other; nobody keeps rewriting `/sync`, and tandem logs no warning or
//!    error about it.
//!
//! Outside CI the test skips, saying why, when it is not run as root or PyPI cannot be reached;
//! with CI=true it must run. Every process it starts is stopped by PID, pass or fail.

use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tandem::dcs::Dcs;
use tandem::lab::{http_get, pick_ports, pid_alive, wait_until, Lab};
use tandem_core::cluster::ClusterView;
use tandem_core::sync::SyncState;

mod common;
use common::venv::{patroni_venv, run};

/// The Patroni member's name (a valid unquoted `synchronous_standby_names` entry).
const PATRONI_NAME: &str = "patroni1";

/// A Patroni agent, member of the lab's cluster, run as the lab's PostgreSQL user in a session of
/// its own. Dropping it stops it by PID (SIGTERM, then SIGKILL to its process group), and then
/// its postmaster if that outlived it.
struct Patroni {
    child: Option<Child>,
    data_dir: PathBuf,
    log_path: PathBuf,
    pg_port: u16,
    api_port: u16,
}

impl Patroni {
    /// Writes `DIR/patroni1.yml` (the cluster's scope, namespace and etcd, the lab's credentials,
    /// its own ports and data directory) and starts `patroni` on it.
    fn start(lab: &Lab, venv_bin: &Path) -> Patroni {
        let ports = pick_ports(2, None).expect("free ports");
        let (pg_port, api_port) = (ports[0], ports[1]);
        let dir = lab.dir.join(PATRONI_NAME);
        let data_dir = dir.join("data");
        let run_dir = dir.join("run");
        for d in [&dir, &data_dir, &run_dir] {
            std::fs::create_dir_all(d).unwrap();
            std::os::unix::fs::chown(d, Some(lab.user.uid), Some(lab.user.gid)).unwrap();
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .unwrap();
        }
        let s = lab.secrets();
        let cfg = serde_json::json!({
            "scope": lab.scope,
            "namespace": tandem::lab::NAMESPACE,
            "name": PATRONI_NAME,
            "restapi": {
                "listen": format!("127.0.0.1:{api_port}"),
                "connect_address": format!("127.0.0.1:{api_port}"),
            },
            "etcd3": {"hosts": lab.etcd_hosts()},
            "postgresql": {
                "listen": format!("127.0.0.1:{pg_port}"),
                "connect_address": format!("127.0.0.1:{pg_port}"),
                "data_dir": data_dir,
                "bin_dir": lab.pg_bin,
                "pgpass": dir.join("pgpass"),
                "authentication": {
                    "superuser": {
                        "username": s.superuser.username,
                        "password": s.superuser.password,
                    },
                    "replication": {
                        "username": s.replication.username,
                        "password": s.replication.password,
                    },
                },
                "parameters": {"unix_socket_directories": run_dir},
            },
            "watchdog": {"mode": "off"},
        });
        let config_path = lab.dir.join(format!("{PATRONI_NAME}.yml"));
        std::fs::write(&config_path, serde_yaml::to_string(&cfg).unwrap()).unwrap();
        std::os::unix::fs::chown(&config_path, Some(lab.user.uid), Some(lab.user.gid)).unwrap();
        std::fs::set_permissions(
            &config_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();

        let log_path = lab.dir.join("logs").join(format!("{PATRONI_NAME}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        std::os::unix::fs::chown(&log_path, Some(lab.user.uid), Some(lab.user.gid)).unwrap();
        let mut cmd = Command::new(venv_bin.join("patroni"));
        cmd.arg(&config_path)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    lab.pg_bin.display()
                ),
            )
            .env("HOME", &lab.user.home)
            .env("USER", &lab.user.name)
            .env("LOGNAME", &lab.user.name)
            .env("LC_ALL", "C.UTF-8")
            .env("PYTHONUNBUFFERED", "1")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .uid(lab.user.uid)
            .gid(lab.user.gid);
        // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start patroni");
        eprintln!(
            "started Patroni {PATRONI_NAME} (pid {}): PostgreSQL on {pg_port}, REST on {api_port}",
            child.id()
        );
        Patroni {
            child: Some(child),
            data_dir,
            log_path,
            pg_port,
            api_port,
        }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(
            &format!("127.0.0.1:{}", self.api_port),
            path,
            Duration::from_secs(2),
        )
        .ok()
    }

    fn answers_200(&self, path: &str) -> bool {
        matches!(self.get(path), Some((200, _)))
    }

    /// Fails at once, with its log, if the Patroni process has exited.
    fn check_alive(&mut self) {
        if let Some(c) = &mut self.child {
            if let Ok(Some(st)) = c.try_wait() {
                panic!(
                    "Patroni exited ({st}); its log:\n{}",
                    tail(&self.log_path, 60)
                );
            }
        }
    }

    /// The postmaster of its data directory, if alive (PostgreSQL's cwd is the data directory).
    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        (pid_alive(pid) && cwd == self.data_dir).then_some(pid)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let gone = |child: &mut Child, d: Duration| {
            let t = Instant::now();
            while t.elapsed() < d {
                if child.try_wait().ok().flatten().is_some() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            false
        };
        if child.try_wait().ok().flatten().is_none() {
            // SAFETY: a signal to the Patroni process we started, by its PID.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            if !gone(&mut child, Duration::from_secs(30)) {
                eprintln!("Patroni (pid {pid}) did not stop in 30 s: SIGKILL to its group");
                // SAFETY: its own session and process group, led by its PID.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                gone(&mut child, Duration::from_secs(10));
            }
        }
        // Patroni stops PostgreSQL when it stops; if the postmaster outlived it, kill it by PID.
        if let Some(pm) = self.postmaster_pid() {
            eprintln!("Patroni's postmaster (pid {pm}) outlived it: SIGKILL");
            // SAFETY: a single PID, checked to be the postmaster of this data directory.
            unsafe { libc::kill(pm as i32, libc::SIGKILL) };
            let t = Instant::now();
            while pid_alive(pm) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {PATRONI_NAME} (Patroni, last lines of {}) ----\n{}",
                self.log_path.display(),
                tail(&self.log_path, 60)
            );
        }
        self.stop();
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `tandem -c <node i's config> ARGS`: (exit 0, stdout and stderr).
fn tandem(lab: &Lab, i: usize, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.arg("-c").arg(&lab.nodes[i].config_path).args(args);
    let out = run(cmd, Duration::from_secs(120));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("tandem {}:\n{text}", args.join(" "));
    (out.status.success(), text)
}

/// `patronictl -c <node1's config> ARGS`; asserts exit 0; returns stdout.
fn patronictl(venv_bin: &Path, lab: &Lab, args: &[&str]) -> String {
    let mut cmd = Command::new(venv_bin.join("patronictl"));
    cmd.arg("-c").arg(&lab.nodes[0].config_path).args(args);
    cmd.env_remove("PATRONICTL_CONFIG_FILE")
        .env("LC_ALL", "C.UTF-8");
    let out = run(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("patronictl {}:\n{stdout}{stderr}", args.join(" "));
    assert!(
        out.status.success(),
        "patronictl {args:?} exited with {}",
        out.status
    );
    stdout
}

/// psql as the superuser on 127.0.0.1:`port` (the lab's pgpass file); trimmed stdout.
fn psql_port(lab: &Lab, port: u16, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new(lab.pg_bin.join("psql"));
    cmd.args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .env("PGPASSFILE", &lab.pgpass_path)
        .env("PGCONNECT_TIMEOUT", "3");
    let out = run(cmd, Duration::from_secs(20));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The row of member `name` in a `list` table.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.contains(&format!("| {name} ")))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{table}"))
}

struct Dcs1 {
    rt: tokio::runtime::Runtime,
    dcs: Dcs,
}

impl Dcs1 {
    fn view(&self) -> ClusterView {
        self.rt.block_on(self.dcs.read_cluster()).unwrap().0
    }
    /// `/sync` as stored: (leader, standbys, mod revision, raw value).
    fn sync(&self) -> Option<(String, Vec<String>, i64, Value)> {
        let v = self.view().sync?;
        let s = SyncState::parse(&v.value).ok()?;
        Some((s.leader?, s.standbys, v.mod_revision, v.value))
    }
}

/// Every value `/sync` had since it was created, oldest first: (mod revision, value). Read back
/// through etcd's history (a read at the revision before each write).
fn sync_history(lab: &Lab, rt: &tokio::runtime::Runtime) -> Vec<(i64, String)> {
    let key = format!("{}{}/sync", tandem::lab::NAMESPACE, lab.scope);
    let url = lab.etcd[0].client_url.clone();
    rt.block_on(async move {
        let mut client = etcd_client::Client::connect([url], None).await.unwrap();
        let mut out = Vec::new();
        let mut at: Option<i64> = None;
        loop {
            let opts = at.map(|r| etcd_client::GetOptions::new().with_revision(r));
            let resp = client.get(key.as_str(), opts).await.unwrap();
            let Some(kv) = resp.kvs().first() else { break };
            out.push((
                kv.mod_revision(),
                String::from_utf8_lossy(kv.value()).into_owned(),
            ));
            if kv.mod_revision() == kv.create_revision() {
                break;
            }
            at = Some(kv.mod_revision() - 1);
        }
        out.reverse();
        out
    })
}

/// The application names streaming from PostgreSQL on `port`, with their sync_state.
fn streaming_from(lab: &Lab, port: u16) -> Vec<(String, String)> {
    psql_port(
        lab,
        port,
        "SELECT application_name || ' ' || sync_state FROM pg_stat_replication \
         WHERE state = 'streaming' ORDER BY 1",
    )
    .unwrap_or_default()
    .lines()
    .filter_map(|l| {
        let (a, s) = l.split_once(' ')?;
        Some((a.to_string(), s.to_string()))
    })
    .collect()
}

/// WARN and ERROR lines of the tandem agents' logs that speak of synchronous replication.
fn sync_complaints(lab: &Lab) -> Vec<String> {
    let mut out = Vec::new();
    for n in &lab.nodes {
        let text = std::fs::read_to_string(&n.log_path).unwrap_or_default();
        for l in text.lines() {
            let lower = l.to_lowercase();
            if (l.contains("WARN") || l.contains("ERROR")) && lower.contains("sync") {
                out.push(format!("{}: {l}", n.name));
            }
        }
    }
    out
}

#[test]
fn a_patroni_4_1_5_member_and_tandem_members_agree_on_sync() {
    let Some(venv_bin) = patroni_venv() else {
        return;
    };
    let t0 = Instant::now();
    let s = common::Cluster::prepare("tandem-interop-", |o| {
        o.members = 2;
        o.etcd_members = 1;
    })
    .start();
    let (mut c, leader, replica) = (s.cluster, s.leader, s.replicas[0]);
    eprintln!("tandem cluster formed in {:?}", s.formed_in);
    let rt = common::runtime();
    let dcs = Dcs1 {
        dcs: common::dcs(&c, &rt),
        rt,
    };
    let leader_name = c.nodes[leader].name.clone();
    let replica_name = c.nodes[replica].name.clone();

    // The tandem replica stops (its agent stops its PostgreSQL): the Patroni member will be the
    // only candidate for synchronous standby.
    c.signal_agent(replica, libc::SIGTERM).unwrap();
    wait_until(
        Duration::from_secs(30),
        "the tandem replica stopped",
        || (!c.agent_running(replica) && c.postmaster_pid(replica).is_none()).then_some(()),
    )
    .unwrap();

    // The Patroni member clones itself from the tandem leader and streams from it.
    let mut patroni = Patroni::start(&c, &venv_bin);
    let t = Instant::now();
    wait_until(
        Duration::from_secs(90),
        "Patroni streams from the tandem leader",
        || {
            patroni.check_alive();
            let v = dcs.view();
            let m = v.members.get(PATRONI_NAME)?;
            (m.value.state == "running"
                && m.value.replication_state.as_deref() == Some("streaming")
                && patroni.answers_200("/replica")
                && !v.members.contains_key(&replica_name)
                && streaming_from(&c, c.nodes[leader].pg_port)
                    .iter()
                    .any(|(a, _)| a == PATRONI_NAME))
            .then_some(())
        },
    )
    .unwrap();
    eprintln!("Patroni cloned and streams after {:?}", t.elapsed());
    assert!(dcs.sync().is_none(), "no /sync before synchronous mode");

    // (a) Synchronous mode on: the tandem leader names the Patroni member.
    let (ok, out) = tandem(
        &c,
        leader,
        &["edit-config", "-s", "synchronous_mode=true", "--force"],
    );
    assert!(ok, "edit-config: {out}");
    let t = Instant::now();
    let (_, _, rev_a, raw) = wait_until(
        Duration::from_secs(30),
        "/sync names the tandem leader and the Patroni member",
        || {
            dcs.sync()
                .filter(|(l, s, _, _)| *l == leader_name && s == &[PATRONI_NAME.to_string()])
        },
    )
    .unwrap();
    eprintln!("/sync is {raw} {:?} after the change", t.elapsed());
    assert_eq!(raw["quorum"], 0, "{raw}");
    assert_eq!(raw["sync_standby"], PATRONI_NAME, "{raw}");
    assert_eq!(
        c.psql(leader, "SHOW synchronous_standby_names").unwrap(),
        PATRONI_NAME
    );
    assert_eq!(
        streaming_from(&c, c.nodes[leader].pg_port),
        vec![(PATRONI_NAME.to_string(), "sync".to_string())]
    );
    // Patroni reads /sync as tandem wrote it: its REST API says it is synchronous.
    wait_until(
        Duration::from_secs(20),
        "Patroni answers 200 on GET /sync",
        || patroni.answers_200("/sync").then_some(()),
    )
    .unwrap();
    assert!(!patroni.answers_200("/async"));
    let (_, body) = patroni.get("/patroni").unwrap();
    let me: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(me["sync_standby"], true, "{body}");
    let (ok, out) = tandem(&c, leader, &["list"]);
    assert!(ok, "{out}");
    assert!(
        row(&out, PATRONI_NAME).contains("| Sync Standby |"),
        "{out}"
    );
    assert!(row(&out, &leader_name).contains("| Leader "), "{out}");
    let out = patronictl(&venv_bin, &c, &["list"]);
    assert!(
        row(&out, PATRONI_NAME).contains("| Sync Standby |"),
        "{out}"
    );
    // Nobody rewrote /sync meanwhile.
    assert_eq!(dcs.sync().map(|s| s.2), Some(rev_a), "/sync was rewritten");

    // (b) A switchover to the Patroni member.
    let (ok, out) = tandem(
        &c,
        leader,
        &[
            "switchover",
            "--leader",
            &leader_name,
            "--candidate",
            PATRONI_NAME,
            "--force",
        ],
    );
    assert!(
        ok && out.contains(&format!("Successfully switched over to \"{PATRONI_NAME}\"")),
        "{out}"
    );
    let t = Instant::now();
    wait_until(Duration::from_secs(60), "Patroni leads", || {
        patroni.check_alive();
        (dcs.view().leader_name() == Some(PATRONI_NAME) && patroni.answers_200("/primary"))
            .then_some(())
    })
    .unwrap();
    eprintln!("Patroni leads {:?} after the switchover", t.elapsed());
    // The stopped tandem node comes back: it follows Patroni as well.
    c.start_agent(replica).unwrap();
    let patroni_pg = patroni.pg_port;
    let (sync_name, rev_b, raw) = wait_until(
        Duration::from_secs(90),
        "both tandem members stream from Patroni, and /sync names Patroni and one of them",
        || {
            patroni.check_alive();
            let st = streaming_from(&c, patroni_pg);
            let names: Vec<&str> = st.iter().map(|(a, _)| a.as_str()).collect();
            if names != [c.nodes[0].name.as_str(), c.nodes[1].name.as_str()] {
                return None;
            }
            let v = dcs.view();
            let all_streaming = [&leader_name, &replica_name].iter().all(|n| {
                v.members.get(n.as_str()).is_some_and(|m| {
                    m.value.state == "running"
                        && m.value.replication_state.as_deref() == Some("streaming")
                })
            });
            let (l, s, rev, raw) = dcs.sync()?;
            (all_streaming
                && l == PATRONI_NAME
                && s.len() == 1
                && (s[0] == leader_name || s[0] == replica_name)
                && st.iter().any(|(a, st)| *a == s[0] && st == "sync"))
            .then(|| (s[0].clone(), rev, raw))
        },
    )
    .unwrap();
    eprintln!(
        "/sync is {raw} {:?} after the switchover (Patroni chose {sync_name})",
        t.elapsed()
    );
    assert_eq!(raw["leader"], PATRONI_NAME, "{raw}");
    assert_eq!(raw["sync_standby"], sync_name.as_str(), "{raw}");
    assert_eq!(
        psql_port(&c, patroni_pg, "SHOW synchronous_standby_names").unwrap(),
        sync_name
    );
    // tandem reads /sync as Patroni wrote it.
    let sync_i = c.nodes.iter().position(|n| n.name == sync_name).unwrap();
    let other_i = 1 - sync_i;
    wait_until(
        Duration::from_secs(20),
        "tandem answers 200 on GET /sync on the member Patroni named",
        || common::answers_200(&c, sync_i, "/sync").then_some(()),
    )
    .unwrap();
    assert!(!common::answers_200(&c, sync_i, "/async"));
    assert!(common::answers_200(&c, other_i, "/async"));
    assert!(!common::answers_200(&c, other_i, "/sync"));
    let (ok, out) = tandem(&c, leader, &["list"]);
    assert!(ok, "{out}");
    assert!(row(&out, PATRONI_NAME).contains("| Leader "), "{out}");
    assert!(row(&out, &sync_name).contains("| Sync Standby |"), "{out}");
    assert!(
        row(&out, &c.nodes[other_i].name).contains("| Replica "),
        "{out}"
    );
    let out = patronictl(&venv_bin, &c, &["list"]);
    assert!(row(&out, &sync_name).contains("| Sync Standby |"), "{out}");
    // A commit on Patroni's primary returns (its synchronous standby, a tandem member, confirms).
    psql_port(
        &c,
        patroni_pg,
        "SET statement_timeout = '20s'; CREATE TABLE interop AS SELECT 1 AS x",
    )
    .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the row on the tandem members",
        || {
            (0..2)
                .all(|i| c.psql(i, "SELECT x FROM interop").ok().as_deref() == Some("1"))
                .then_some(())
        },
    )
    .unwrap();
    // Nobody rewrote /sync meanwhile, and tandem said nothing amiss about it.
    assert_eq!(dcs.sync().map(|s| s.2), Some(rev_b), "/sync was rewritten");
    // /sync's whole history: tandem's two writes (no standby, then the confirmed one), then
    // Patroni's on its promotion (itself, no standby) and once node1 or node2 is synchronous.
    let history = sync_history(&c, &dcs.rt);
    eprintln!("/sync's values, oldest first:");
    for (rev, v) in &history {
        eprintln!("  {rev}: {v}");
    }
    let parse = |v: &str| -> (String, Option<String>) {
        let j: Value = serde_json::from_str(v).unwrap();
        (
            j["leader"].as_str().unwrap_or_default().to_string(),
            j["sync_standby"].as_str().map(str::to_string),
        )
    };
    let split = history
        .iter()
        .position(|(r, _)| *r == rev_a)
        .expect("tandem's /sync in the history");
    let (by_tandem, by_patroni) = history.split_at(split + 1);
    assert!(
        by_tandem.len() <= 3 && by_tandem.iter().all(|(_, v)| parse(v).0 == leader_name),
        "{history:?}"
    );
    assert_eq!(
        by_patroni.first().map(|(_, v)| parse(v)),
        Some((PATRONI_NAME.to_string(), None)),
        "Patroni's first /sync names itself and no standby: {history:?}"
    );
    assert!(
        by_patroni.len() <= 3
            && by_patroni.iter().all(|(_, v)| parse(v).0 == PATRONI_NAME)
            && by_patroni.last().map(|(r, _)| *r) == Some(rev_b),
        "/sync after the switchover: {history:?}"
    );
    for f in [
        &c.nodes[0].log_path,
        &c.nodes[1].log_path,
        &patroni.log_path,
    ] {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        eprintln!(
            "---- agent lines of {} that speak of sync ----",
            f.display()
        );
        for l in text
            .lines()
            .filter(|l| l.to_lowercase().contains("sync") && !l.contains(" LOG: "))
        {
            eprintln!("{l}");
        }
    }
    let complaints = sync_complaints(&c);
    assert!(
        complaints.is_empty(),
        "tandem complained about synchronous replication:\n{}",
        complaints.join("\n")
    );
    eprintln!("Patroni interop test took {:?}", t0.elapsed());
    drop(patroni);
}
