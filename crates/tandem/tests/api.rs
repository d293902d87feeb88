//! The REST API on a live cluster (real etcd, real PostgreSQL, three agents): every endpoint of
//! spec §5.4 with Patroni's status codes and messages, error codes included, and the access
//! checks of §5.5. Run one test at a time (`--test-threads=1`); the lab's Drop stops every
//! process by PID.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use tandem::dcs::Dcs;
use tandem::demo::healthy_roles;
use tandem::lab::wait_until;
use tandem_core::cluster::ClusterView;

mod common;

struct Cluster {
    /// Stops (and on failure reports) every process of the lab when dropped.
    lab: common::Cluster,
    rt: tokio::runtime::Runtime,
    dcs: Option<Dcs>,
}

/// Builds a lab of `members` nodes, lets `tune` edit each node's YAML, starts etcd and the agents
/// and waits for one leader and streaming replicas.
fn start(members: usize, tune: impl Fn(usize, &mut serde_yaml::Value)) -> (Cluster, usize) {
    let lab = common::Cluster::prepare("tandem-api-", |o| {
        o.members = members;
        o.etcd_members = 1;
    });
    for (i, n) in lab.nodes.iter().enumerate() {
        edit_yaml(&n.config_path, |y| tune(i, y));
    }
    let s = lab.start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dcs = common::dcs(&s.cluster, &rt);
    (
        Cluster {
            lab: s.cluster,
            rt,
            dcs: Some(dcs),
        },
        s.leader,
    )
}

fn edit_yaml(path: &Path, f: impl FnOnce(&mut serde_yaml::Value)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut y: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    f(&mut y);
    // Rewriting in place keeps the file's owner and mode.
    std::fs::write(path, serde_yaml::to_string(&y).unwrap()).unwrap();
}

impl Cluster {
    fn view(&self) -> ClusterView {
        self.rt
            .block_on(self.dcs.as_ref().unwrap().read_cluster())
            .unwrap()
            .0
    }
    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.lab.nodes[i].api_port)
    }
    fn name(&self, i: usize) -> String {
        self.lab.nodes[i].name.clone()
    }
    fn leader_index(&self) -> Option<usize> {
        let name = self.view().leader_name()?.to_string();
        self.lab.nodes.iter().position(|n| n.name == name)
    }
}

/// An HTTP answer: status code, headers (lower-cased names), body.
#[derive(Debug)]
struct Answer {
    code: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request to a loopback REST API. `body: None` sends no Content-Length.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad answer to {method} {path}: {text}"));
    Answer {
        code,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// Asserts code and (when given) the exact text body.
fn expect(a: &Answer, code: u16, text: Option<&str>, what: &str) {
    assert_eq!(a.code, code, "{what}: {a:?}");
    if let Some(t) = text {
        assert_eq!(a.body, t, "{what}");
    }
}

fn in_an_hour() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

#[test]
fn every_endpoint_answers_with_patronis_codes() {
    let started = Instant::now();
    let (c, leader) = start(3, |_, _| {});
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (r1, r2) = (replicas[0], replicas[1]);
    let (l, a1) = (c.addr(leader), c.addr(r1));
    let (ln, n1, n2) = (c.name(leader), c.name(r1), c.name(r2));
    let post = |addr: &str, path: &str, body: &str| http(addr, "POST", path, &[], Some(body));

    // ---- read-only endpoints
    let m = http(&l, "GET", "/metrics", &[], None);
    expect(&m, 200, None, "GET /metrics");
    assert!(
        m.headers.contains("content-type: text/plain"),
        "{}",
        m.headers
    );
    assert!(
        m.body.contains(&format!(
            "patroni_primary{{scope=\"demo\",name=\"{ln}\"}} 1"
        )),
        "{}",
        m.body
    );
    let m = http(&a1, "GET", "/metrics", &[], None).body;
    assert!(m.contains(&format!(
        "patroni_replica{{scope=\"demo\",name=\"{n1}\"}} 1"
    )));
    assert!(m.contains("patroni_postgres_streaming{") && m.contains("tandem_info{"));
    assert_eq!(http(&l, "GET", "/history", &[], None).json(), json!([]));
    expect(
        &http(&l, "GET", "/failsafe", &[], None),
        502,
        None,
        "GET /failsafe, failsafe off",
    );
    expect(
        &post(&a1, "/failsafe", r#"{"name":"x"}"#),
        502,
        None,
        "POST /failsafe, failsafe off",
    );
    expect(&post(&l, "/nonsense", "{}"), 501, None, "unknown POST path");

    // ---- PATCH /config: deep merge, null removes; the DCS holds the result.
    let patch =
        r#"{"postgresql":{"parameters":{"work_mem":"8MB"}},"maximum_lag_on_failover":2097152}"#;
    let a = http(&a1, "PATCH", "/config", &[], Some(patch));
    expect(&a, 200, None, "PATCH /config");
    let cfg = a.json();
    assert_eq!(cfg["postgresql"]["parameters"]["work_mem"], "8MB");
    assert_eq!(
        cfg["postgresql"]["use_pg_rewind"], true,
        "merge keeps siblings"
    );
    assert_eq!(c.view().config.unwrap().value, cfg);
    let a = http(
        &l,
        "PATCH",
        "/config",
        &[],
        Some(r#"{"maximum_lag_on_failover":null}"#),
    );
    expect(&a, 200, None, "PATCH /config with null");
    assert!(a.json().get("maximum_lag_on_failover").is_none());
    // Bad bodies.
    for (body, what) in [
        ("{", "malformed JSON"),
        ("[1]", "an array"),
        ("\"x\"", "a string"),
        ("{}", "an empty object"),
    ] {
        let a = http(&l, "PATCH", "/config", &[], Some(body));
        expect(&a, 400, None, what);
        assert!(!a.body.is_empty(), "{what}: the 400 explains itself");
    }
    expect(
        &http(&l, "PATCH", "/config", &[], None),
        411,
        None,
        "PATCH without Content-Length",
    );
    let big = format!("{{\"x\":\"{}\"}}", "y".repeat(100_000));
    expect(
        &http(&l, "PUT", "/config", &[], Some(&big)),
        413,
        None,
        "oversized PUT",
    );
    // PUT replaces.
    let mut full = c.view().config.unwrap().value;
    full["retry_timeout"] = json!(3);
    let a = http(&l, "PUT", "/config", &[], Some(&full.to_string()));
    expect(&a, 200, None, "PUT /config");
    assert_eq!(a.json(), full);
    assert_eq!(c.view().config.unwrap().value, full);

    // ---- failsafe mode on: GET lists the members, POST: replicas accept, the leader refuses.
    let a = http(
        &l,
        "PATCH",
        "/config",
        &[],
        Some(r#"{"failsafe_mode":true}"#),
    );
    expect(&a, 200, None, "enable failsafe_mode");
    wait_until(
        Duration::from_secs(10),
        "failsafe map on the leader",
        || {
            let a = http(&l, "GET", "/failsafe", &[], None);
            (a.code == 200 && a.json().as_object().map(|o| o.len()) == Some(3)).then_some(())
        },
    )
    .unwrap();
    let a = wait_until(
        Duration::from_secs(10),
        "replica accepts POST /failsafe",
        || {
            let a = post(&a1, "/failsafe", &format!(r#"{{"name":"{ln}"}}"#));
            (a.code == 200).then_some(a)
        },
    )
    .unwrap();
    assert_eq!(a.body, "Accepted");
    let lsn: u64 = a
        .headers
        .lines()
        .find_map(|h| h.strip_prefix("lsn: "))
        .expect("lsn header")
        .trim()
        .parse()
        .unwrap();
    assert!(lsn > 0);
    let a = wait_until(
        Duration::from_secs(10),
        "leader refuses POST /failsafe",
        || {
            let a = post(&l, "/failsafe", &format!(r#"{{"name":"{n1}"}}"#));
            (a.code != 502).then_some(a)
        },
    )
    .unwrap();
    expect(
        &a,
        500,
        Some("Running as a leader"),
        "POST /failsafe on the leader",
    );
    expect(
        &http(
            &l,
            "PATCH",
            "/config",
            &[],
            Some(r#"{"failsafe_mode":null}"#),
        ),
        200,
        None,
        "failsafe off",
    );

    // ---- switchover/failover: refusals first.
    for (path, body, code, msg) in [
        ("/switchover", r#"{"candidate":"x"}"#.to_string(), 400, "Switchover could be performed only from a specific leader".to_string()),
        ("/failover", r#"{"leader":"x"}"#.to_string(), 400, "Failover could be performed only to a specific candidate".to_string()),
        ("/failover", format!(r#"{{"candidate":"{n1}","scheduled_at":"{}"}}"#, in_an_hour()), 400, "Failover can't be scheduled".to_string()),
        ("/switchover", format!(r#"{{"leader":"{ln}","candidate":"{ln}"}}"#), 400, "Switchover target and source are the same".to_string()),
        ("/switchover", format!(r#"{{"leader":"{n1}"}}"#), 412, "leader name does not match".to_string()),
        ("/switchover", format!(r#"{{"leader":"{ln}","candidate":"nobody"}}"#), 412, "candidate does not exists".to_string()),
        ("/switchover", format!(r#"{{"leader":"{ln}","scheduled_at":"2030-01-01T10:00"}}"#), 400, "Timezone information is mandatory for the scheduled switchover".to_string()),
        ("/switchover", format!(r#"{{"leader":"{ln}","scheduled_at":"2001-01-01T10:00+00:00"}}"#), 422, "Cannot schedule switchover in the past".to_string()),
        ("/switchover", format!(r#"{{"leader":"{ln}","scheduled_at":"soon"}}"#), 422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601".to_string()),
        ("/switchover", r#"{"leader":["x"]}"#.to_string(), 400, "'leader' must be a string, not an array".to_string()),
    ] {
        expect(&post(&l, path, &body), code, Some(&msg), &format!("POST {path} {body}"));
    }
    expect(
        &http(&l, "POST", "/switchover", &[], None),
        411,
        None,
        "switchover without a body",
    );
    // A scheduled switchover is written to the DCS and can be deleted.
    let at = in_an_hour();
    let a = post(
        &l,
        "/switchover",
        &format!(r#"{{"leader":"{ln}","candidate":"{n1}","scheduled_at":"{at}"}}"#),
    );
    expect(
        &a,
        202,
        Some("Switchover scheduled"),
        "scheduled switchover",
    );
    let f = c.view().failover.unwrap().value;
    assert_eq!(
        (
            f.leader.as_deref(),
            f.member.as_deref(),
            f.scheduled_at.as_deref()
        ),
        (Some(ln.as_str()), Some(n1.as_str()), Some(at.as_str()))
    );
    let cl = http(&l, "GET", "/cluster", &[], None).json();
    assert_eq!(cl["scheduled_switchover"]["to"], n1.as_str(), "{cl}");
    expect(
        &http(&l, "DELETE", "/switchover", &[], None),
        200,
        Some("scheduled switchover deleted"),
        "DELETE /switchover",
    );
    assert!(c.view().failover_request().is_none());
    expect(
        &http(&l, "DELETE", "/switchover", &[], None),
        404,
        Some("no switchover is scheduled"),
        "DELETE /switchover again",
    );

    // ---- restart: validation, scheduling, then a real restart of a replica.
    for (body, code) in [
        (r#"{"role":"boss"}"#, 400),
        (r#"{"postgres_version":"9"}"#, 400),
        (r#"{"timeout":0}"#, 400),
        (r#"{"bogus":1}"#, 400),
        (r#"{"schedule":"2001-01-01T00:00:00+00:00"}"#, 422),
        (r#"{"schedule":"2100-01-01T00:00:00"}"#, 400),
    ] {
        expect(
            &post(&a1, "/restart", body),
            code,
            None,
            &format!("POST /restart {body}"),
        );
    }
    let a = post(&a1, "/restart", r#"{"role":"primary"}"#);
    expect(
        &a,
        503,
        Some("restart conditions are not satisfied"),
        "restart with the wrong role",
    );
    let sched = format!(r#"{{"schedule":"{}"}}"#, in_an_hour());
    expect(
        &post(&a1, "/restart", &sched),
        202,
        Some("Restart scheduled"),
        "scheduled restart",
    );
    expect(
        &post(&a1, "/restart", &sched),
        409,
        Some("Another restart is already scheduled"),
        "second scheduled restart",
    );
    expect(
        &http(&a1, "DELETE", "/restart", &[], None),
        200,
        Some("scheduled restart deleted"),
        "DELETE /restart",
    );
    expect(
        &http(&a1, "DELETE", "/restart", &[], None),
        404,
        Some("no restarts are scheduled"),
        "DELETE /restart again",
    );
    let pid = c.lab.postmaster_pid(r1).expect("replica runs");
    let a = http(&a1, "POST", "/restart", &[], Some(""));
    expect(&a, 200, Some("restarted successfully"), "POST /restart");
    let new_pid = c.lab.postmaster_pid(r1).expect("replica runs again");
    assert_ne!(pid, new_pid, "PostgreSQL was restarted");

    // ---- reload
    expect(
        &post(&a1, "/reload", ""),
        202,
        Some("reload scheduled"),
        "POST /reload",
    );

    // ---- reinitialize: refused on the leader, wrong types refused, a replica re-clones.
    expect(
        &post(&l, "/reinitialize", "{}"),
        503,
        Some("I am the leader, can not reinitialize"),
        "reinit on the leader",
    );
    expect(
        &post(&a1, "/reinitialize", r#"{"force":"perhaps"}"#),
        400,
        None,
        "reinit with a bad force",
    );
    let a = post(&a1, "/reinitialize", r#"{"force":true}"#);
    expect(&a, 200, Some("reinitialize started"), "POST /reinitialize");
    wait_until(
        Duration::from_secs(40),
        "reinitialized replica streams again",
        || healthy_roles(&c.lab).filter(|(l2, _)| *l2 == leader),
    )
    .unwrap();

    // ---- immediate switchover and failover, answered once the new leader holds the key.
    let a = post(
        &l,
        "/switchover",
        &format!(r#"{{"leader":"{ln}","candidate":"{n2}"}}"#),
    );
    expect(
        &a,
        200,
        Some(&format!("Successfully switched over to \"{n2}\"")),
        "POST /switchover",
    );
    assert_eq!(c.leader_index(), Some(r2));
    wait_until(Duration::from_secs(30), "old leader follows", || {
        healthy_roles(&c.lab).filter(|(l2, _)| *l2 == r2)
    })
    .unwrap();
    let a = post(
        &c.addr(r2),
        "/failover",
        &format!(r#"{{"candidate":"{n1}"}}"#),
    );
    expect(
        &a,
        200,
        Some(&format!("Successfully failed over to \"{n1}\"")),
        "POST /failover",
    );
    assert_eq!(c.leader_index(), Some(r1));
    eprintln!(
        "every_endpoint_answers_with_patronis_codes took {:?}",
        started.elapsed()
    );
}

#[test]
fn protected_endpoints_need_credentials_and_an_allowed_address() {
    // Node 1: basic auth and an allowlist that excludes loopback; node 2: the same allowlist,
    // but members' addresses (loopback here) are allowed too.
    let (c, _) = start(2, |i, y| {
        let api = &mut y["restapi"];
        api["authentication"] =
            serde_yaml::from_str("{username: admin, password: s3cret}").unwrap();
        api["allowlist"] = serde_yaml::from_str("['10.0.0.0/8']").unwrap();
        if i == 1 {
            api["allowlist_include_members"] = true.into();
        }
    });
    let good = ("Authorization", "Basic YWRtaW46czNjcmV0");
    let (a0, a1) = (c.addr(0), c.addr(1));
    // Node 1 refuses loopback before looking at credentials.
    expect(
        &http(&a0, "POST", "/reload", &[good], Some("")),
        403,
        Some("Access is denied"),
        "allowlist",
    );
    // GET stays open.
    expect(
        &http(&a0, "GET", "/patroni", &[], None),
        200,
        None,
        "GET /patroni",
    );
    // Node 2 allows members' addresses; then credentials are checked.
    let a = http(&a1, "POST", "/reload", &[], Some(""));
    expect(&a, 401, Some("no auth header received"), "no credentials");
    assert!(
        a.headers
            .contains("www-authenticate: basic realm=\"patroni\""),
        "{}",
        a.headers
    );
    let a = http(
        &a1,
        "POST",
        "/reload",
        &[("Authorization", "Basic YWRtaW46d3Jvbmc=")],
        Some(""),
    );
    expect(&a, 401, Some("not authenticated"), "wrong password");
    expect(
        &http(&a1, "POST", "/reload", &[good], Some("")),
        202,
        Some("reload scheduled"),
        "good credentials",
    );
    expect(
        &http(&a1, "PATCH", "/config", &[good], Some(r#"{"loop_wait":2}"#)),
        200,
        None,
        "PATCH with credentials",
    );
    assert_eq!(c.view().config.unwrap().value["loop_wait"], 2);
    // The CLI uses restapi.authentication from the node's file.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("-c")
        .arg(&c.lab.nodes[1].config_path)
        .args(["pause", "--wait"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Success: cluster management is paused"),
        "{stdout}"
    );
    assert!(c.view().paused());
}

impl Cluster {
    /// Writes raw bytes (binary garbage included) into `rel` under the cluster's prefix, as an
    /// operator's `etcdctl put` would: the Dcs client only writes text.
    fn put_bytes(&self, rel: &str, value: &[u8]) {
        let cfg = tandem::config::Config::load(&self.lab.nodes[0].config_path).unwrap();
        let key = format!("{}{rel}", cfg.base_path());
        self.rt
            .block_on(async {
                let mut c = etcd_client::Client::connect(cfg.etcd3.endpoints(), None).await?;
                c.put(key, value.to_vec(), None).await
            })
            .unwrap();
    }

    /// Runs the CLI with node `i`'s configuration: success, stdout, stderr.
    fn cli(&self, i: usize, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("-c")
            .arg(&self.lab.nodes[i].config_path)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Issue 16 point 6: a scheduled switchover gets the immediate one's checks when it is requested
/// (412, as Patroni answers), in REST and CLI; before, a wrong leader or an unknown candidate got
/// 202 and failed at the due time.
#[test]
fn a_scheduled_switchover_is_checked_when_requested() {
    let (c, leader) = start(2, |_, _| {});
    let r = 1 - leader;
    let (l, ln, rn) = (c.addr(leader), c.name(leader), c.name(r));
    let post = |body: &str| http(&l, "POST", "/switchover", &[], Some(body));
    let at = in_an_hour();
    expect(
        &post(&format!(
            r#"{{"leader":"{rn}","candidate":"{ln}","scheduled_at":"{at}"}}"#
        )),
        412,
        Some("leader name does not match"),
        "scheduled switchover from a member that is not the leader",
    );
    expect(
        &post(&format!(
            r#"{{"leader":"{ln}","candidate":"nobody","scheduled_at":"{at}"}}"#
        )),
        412,
        Some("candidate does not exists"),
        "scheduled switchover to a member that does not exist",
    );
    assert!(c.view().failover_request().is_none(), "nothing was written");
    for (args, says) in [
        (
            ["--leader", rn.as_str(), "--candidate", ln.as_str()],
            "is not the leader",
        ),
        (
            ["--leader", ln.as_str(), "--candidate", "nobody"],
            "does not exist",
        ),
    ] {
        let mut a = vec!["switchover"];
        a.extend(args);
        a.extend(["--scheduled", at.as_str(), "--force"]);
        let (ok, out, err) = c.cli(leader, &a);
        assert!(!ok && err.contains(says), "{a:?}: {out}{err}");
    }
    assert!(c.view().failover_request().is_none(), "nothing was written");
}

/// Issue 16 point 5: a binary `failover` value no longer blocks switchovers: POST /switchover
/// treats it as absent and replaces it (compare on its revision), DELETE /switchover and `flush`
/// remove it and say so. Before: 503 "failed to write failover key", and "nothing scheduled".
/// (The leader may remove such a value on its own first; either way it must be gone and the
/// request must succeed.)
#[test]
fn an_unparsable_failover_value_does_not_block_switchovers() {
    const BINARY: &[u8] = b"\x00\xff\xfe\x13 binary";
    let (c, leader) = start(2, |_, _| {});
    let r = 1 - leader;
    let (l, ln, rn) = (c.addr(leader), c.name(leader), c.name(r));
    let post = |body: &str| http(&l, "POST", "/switchover", &[], Some(body));
    let unparsable_failover = || c.view().invalid_failover().is_some();
    let at = in_an_hour();

    c.put_bytes("failover", BINARY);
    let a = post(&format!(
        r#"{{"leader":"{ln}","candidate":"{rn}","scheduled_at":"{at}"}}"#
    ));
    expect(
        &a,
        202,
        Some("Switchover scheduled"),
        "schedule over a binary value",
    );
    let f = c.view().failover.expect("a request").value;
    assert_eq!(f.member.as_deref(), Some(rn.as_str()));
    expect(
        &http(&l, "DELETE", "/switchover", &[], None),
        200,
        Some("scheduled switchover deleted"),
        "DELETE the scheduled switchover",
    );

    c.put_bytes("failover", BINARY);
    let a = http(&l, "DELETE", "/switchover", &[], None);
    assert!(
        (a.code, a.body.as_str()) == (200, "the failover key holds an unparsable value; removed")
            || (a.code == 404 && !unparsable_failover()),
        "DELETE /switchover with a binary failover value: {a:?}"
    );
    assert!(!unparsable_failover(), "DELETE /switchover removed it");

    c.put_bytes("failover", BINARY);
    let (ok, out, err) = c.cli(leader, &["flush", "demo", "switchover", "--force"]);
    assert!(ok, "{out}{err}");
    assert!(
        [
            "unparsable value; removed",
            "No pending",
            "no switchover is scheduled"
        ]
        .iter()
        .any(|m| out.contains(m)),
        "{out}{err}"
    );
    assert!(!unparsable_failover(), "flush removed it: {out}{err}");

    c.put_bytes("failover", BINARY);
    let a = post(&format!(r#"{{"leader":"{ln}","candidate":"{rn}"}}"#));
    expect(
        &a,
        200,
        Some(&format!("Successfully switched over to \"{rn}\"")),
        "switchover over a binary value",
    );
    wait_until(Duration::from_secs(30), "old leader follows", || {
        healthy_roles(&c.lab).filter(|(l2, _)| *l2 == r)
    })
    .unwrap();
    // The CLI's verbs too (they go through the leader's REST API).
    c.put_bytes("failover", BINARY);
    let (ok, out, err) = c.cli(leader, &["failover", "--candidate", &ln, "--force"]);
    assert!(ok, "tandem failover over a binary value: {out}{err}");
    assert_eq!(c.leader_index(), Some(leader), "{out}{err}");
}

/// Issue 16 point 8: garbage in `config` is named as such, with the repair (GET /config's 502 had
/// an empty body, `show-config` asked whether the cluster was bootstrapped, PATCH said the key
/// did not exist); PUT /config and `edit-config --replace` repair it.
#[test]
fn garbage_in_config_is_named_and_repairable() {
    let (c, leader) = start(2, |_, _| {});
    let r = 1 - leader;
    let l = c.addr(leader);
    let good = c.view().config.expect("a configuration").value;
    c.put_bytes("config", b"{not json");
    let a = http(&l, "GET", "/config", &[], None);
    assert_eq!(a.code, 502, "{a:?}");
    for says in [
        "config key holds invalid JSON",
        "edit-config --replace",
        "PUT /config",
    ] {
        assert!(a.body.contains(says), "GET /config: {a:?}");
    }
    let a = http(&l, "PATCH", "/config", &[], Some(r#"{"loop_wait":2}"#));
    assert_eq!(a.code, 409, "{a:?}");
    assert!(
        a.body.contains("holds invalid JSON") && a.body.contains("edit-config --replace"),
        "PATCH /config: {a:?}"
    );
    let (ok, out, err) = c.cli(r, &["show-config"]);
    assert!(
        !ok && err.contains("holds invalid JSON") && err.contains("edit-config --replace"),
        "show-config: {out}{err}"
    );
    let (ok, out, err) = c.cli(r, &["edit-config", "--set", "loop_wait=2", "--force"]);
    assert!(!ok && err.contains("edit-config --replace"), "{out}{err}");
    // PUT repairs it.
    let a = http(&l, "PUT", "/config", &[], Some(&good.to_string()));
    expect(&a, 200, None, "PUT /config over garbage");
    assert_eq!(c.view().config.unwrap().value, good);
    // A JSON value of another shape is named, and edit-config --replace repairs it.
    c.put_bytes("config", b"[1,2]");
    let a = http(&l, "GET", "/config", &[], None);
    assert!(
        a.code == 502 && a.body.contains("holds a JSON array, not a JSON object"),
        "{a:?}"
    );
    // JSON is YAML, and keeps every value's type as it is.
    let file = c.lab.nodes[r].config_path.with_file_name("dynamic.yml");
    std::fs::write(&file, good.to_string()).unwrap();
    let (ok, out, err) = c.cli(
        r,
        &[
            "edit-config",
            "--replace",
            file.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(ok, "edit-config --replace: {out}{err}");
    assert_eq!(c.view().config.unwrap().value, good);
}
