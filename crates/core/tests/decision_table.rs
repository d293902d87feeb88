//! The HA decision table as data (issue 12): every file under `testdata/decide/` holds scenarios
//! written as text — what a node observes, then `----`, then what the real `ha::decide` must
//! answer (its actions and its reason sentence). This one runner replays them all, in the style
//! of raft-rs's `testdata` files, so that a reviewer reads the table, not Rust setup code.
//! The format and the baseline world are documented in `testdata/decide/README.md`.
//!
//!     cargo test -p tandem-core --test decision_table
//!
//! Developer aid: `REWRITE=1 cargo test -p tandem-core --test decision_table` replaces every
//! expected block with what `decide` answers now (write a case's inputs and a bare `----`, run
//! with REWRITE=1, then READ the answer before committing it: a rewrite records behaviour, it
//! does not check it). Parse errors still fail in that mode.
//!
//! A word the parser does not know is an error naming its file and line: a typo must never
//! silently leave a field at its baseline value.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tandem_core::cluster::{
    ClusterView, FailoverValue, HistoryEntry, LeaderKey, Member, MemberValue, StatusValue,
    Versioned,
};
use tandem_core::ha::{
    decide, Action, DataDir, Decision, DemoteMode, FailsafeObs, LocalPg, Observation, PeerAnswer,
    PeerStatus, PgRole, Settings,
};
use tandem_core::sync::{StandbyRow, SyncObs};

/// The baseline's system identifier: the cluster's `initialize` and every node's pg_control.
const SYSID: &str = "7000000000000000001";
/// The baseline's WAL position: every node's, and the leader's last known (`status.optime`).
const WAL: u64 = 1000;
/// 2024-01-01T10:00:00Z, the baseline's wall clock.
const NOW_MS: i64 = 1_704_103_200_000;

// ---------------------------------------------------------------------------------------------
// The baseline: the only place where the core's input structs are built. When `Observation`,
// `Settings`, `LocalPg` or `ClusterView` gain a field, add its baseline value here (and, if cases
// need to set it, one input word in `apply`).
// ---------------------------------------------------------------------------------------------

/// A node's etcd lease id: `node<N>` holds lease `100 + N`.
fn lease_of(name: &str) -> Result<i64, String> {
    name.strip_prefix("node")
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .map(|n| 100 + n)
        .ok_or_else(|| {
            format!(
                "'{name}' has no baseline lease id (only node<N> names do, holding lease 100+N): \
                 write lease=<id>"
            )
        })
}

/// A member key as the baseline writes it: running, with URLs derived from the name.
fn member_value(name: &str, role: &str) -> MemberValue {
    MemberValue {
        conn_url: format!("postgres://{name}:5432/postgres"),
        api_url: format!("http://{name}:8008/patroni"),
        state: "running".into(),
        role: role.into(),
        xlog_location: Some(WAL),
        timeline: Some(1),
        ..Default::default()
    }
}

fn member(name: &str, role: &str) -> Result<Member, String> {
    Ok(Member {
        name: name.into(),
        value: member_value(name, role),
        lease: lease_of(name)?,
    })
}

/// A healthy three-node cluster: node1 leads (primary), node2 and node3 are replicas.
fn baseline_cluster() -> ClusterView {
    let members = [
        ("node1", "primary"),
        ("node2", "replica"),
        ("node3", "replica"),
    ]
    .into_iter()
    .map(|(n, r)| (n.to_string(), member(n, r).expect("baseline names")))
    .collect();
    ClusterView {
        initialize: Some(SYSID.into()),
        leader: Some(LeaderKey {
            name: "node1".into(),
            lease: lease_of("node1").expect("baseline name"),
            mod_revision: 1,
        }),
        members,
        status: Some(StatusValue {
            optime: Some(WAL),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The local PostgreSQL of `me` in the baseline: node1's runs as primary; any other node's runs
/// as a replica streaming from node1.
fn baseline_pg(me: &str) -> LocalPg {
    let primary = me == "node1";
    LocalPg {
        data: DataDir::Initialized {
            sysid: SYSID.into(),
            was_primary: primary,
        },
        running: true,
        role: Some(if primary {
            PgRole::Primary
        } else {
            PgRole::Replica
        }),
        wal_position: Some(WAL),
        timeline: Some(1),
        following: (!primary).then(|| "node1".to_string()),
        former_primary: false,
        down_ms: None,
        replay: None,
    }
}

fn baseline_settings() -> Settings {
    Settings {
        maximum_lag_on_failover: 1_048_576,
        use_pg_rewind: true,
        check_timeline: false,
        can_bootstrap: true,
        failover_priority: 1,
        demote_margin_ms: 1000,
        loop_wait_ms: 1000,
        primary_start_timeout_ms: 300_000,
    }
}

fn baseline(me: &str) -> Result<Observation, String> {
    Ok(Observation {
        me: me.into(),
        cluster: Some(baseline_cluster()),
        lease_id: lease_of(me)?,
        lease_remaining_ms: Some(3000),
        pg: baseline_pg(me),
        peers: vec![],
        settings: baseline_settings(),
        now_ms: NOW_MS,
        failsafe: FailsafeObs::default(),
        sync: SyncObs::default(),
    })
}

// ---------------------------------------------------------------------------------------------
// Input lines.
// ---------------------------------------------------------------------------------------------

/// The words of one input line: bare words and `key=value` pairs; `"…"` quotes a value with spaces.
fn tokenize(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn unknown(word: &str, known: &[&str]) -> String {
    format!("unknown word '{word}' (known here: {})", known.join(", "))
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{key}={v}: expected a whole number"))
}

/// A duration in milliseconds, written `1500ms`.
fn millis(key: &str, v: &str) -> Result<u64, String> {
    let n = v.strip_suffix("ms").ok_or_else(|| {
        format!("{key}={v}: write milliseconds with their unit, e.g. {key}=1500ms")
    })?;
    num(key, n)
}

fn boolean(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}={v}: expected true or false")),
    }
}

fn opt<T>(v: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Result<Option<T>, String> {
    if v == "none" {
        Ok(None)
    } else {
        f(v).map(Some)
    }
}

/// `key=value` (value `None` for a bare word).
fn split(word: &str) -> (&str, Option<&str>) {
    match word.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (word, None),
    }
}

fn need<'a>(key: &str, v: Option<&'a str>) -> Result<&'a str, String> {
    v.ok_or_else(|| format!("'{key}' needs a value: {key}=…"))
}

fn timestamp(text: &str) -> Result<i64, String> {
    tandem_core::time::parse_timestamp_ms(text)
        .ok_or_else(|| format!("'{text}' is not a timestamp like 2024-01-01T10:00:00Z"))
}

fn cluster_mut(obs: &mut Observation) -> Result<&mut ClusterView, String> {
    obs.cluster.as_mut().ok_or_else(|| {
        "this case made the DCS unreachable: there is no cluster view to edit".into()
    })
}

const KEYWORDS: &[&str] = &[
    "me",
    "now",
    "dcs",
    "cluster",
    "initialize",
    "leader",
    "member",
    "status",
    "config",
    "paused",
    "failover",
    "history",
    "failsafe_list",
    "pg",
    "lease",
    "peer",
    "settings",
    "failsafe",
    "sync",
    "standby",
    "ssn",
];

/// Applies one input line to the observation.
fn apply(obs: &mut Observation, line: &str) -> Result<(), String> {
    let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    // `config` takes the rest of the line verbatim, as JSON.
    if keyword == "config" {
        let value: Value = serde_json::from_str(rest)
            .map_err(|e| format!("config: the rest of the line must be a JSON object ({e})"))?;
        cluster_mut(obs)?.config = Some(Versioned {
            value,
            mod_revision: 3,
        });
        return Ok(());
    }
    let words = tokenize(rest)?;
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match keyword {
        "me" => return Err("'me' must be the first input line of a case".into()),
        "now" => match words[..] {
            [t] => obs.now_ms = timestamp(t)?,
            _ => return Err("now <timestamp>".into()),
        },
        "dcs" => match words[..] {
            ["unreachable"] => obs.cluster = None,
            _ => return Err("dcs unreachable".into()),
        },
        "cluster" => match words[..] {
            ["empty"] => obs.cluster = Some(ClusterView::default()),
            _ => return Err("cluster empty".into()),
        },
        "initialize" => {
            let c = cluster_mut(obs)?;
            c.initialize = match words[..] {
                ["none"] => None,
                ["empty"] => Some(String::new()),
                [sysid] => Some(sysid.to_string()),
                _ => return Err("initialize none|empty|<sysid>".into()),
            }
        }
        "leader" => {
            let c = cluster_mut(obs)?;
            match words[..] {
                ["none"] => c.leader = None,
                [name, ref args @ ..] => {
                    let mut lease = None;
                    for w in args {
                        match split(w) {
                            ("lease", v) => lease = Some(num("lease", need("lease", v)?)?),
                            (k, _) => return Err(unknown(k, &["lease"])),
                        }
                    }
                    c.leader = Some(LeaderKey {
                        name: name.into(),
                        lease: match lease {
                            Some(l) => l,
                            None => lease_of(name)?,
                        },
                        mod_revision: 1,
                    });
                }
                _ => return Err("leader none | leader <name> [lease=<id>]".into()),
            }
        }
        "member" => {
            let c = cluster_mut(obs)?;
            let [name, ref args @ ..] = words[..] else {
                return Err("member <name> [absent] [role=…] [state=…] …".into());
            };
            if args == ["absent"] {
                c.members.remove(name);
                return Ok(());
            }
            if !c.members.contains_key(name) {
                c.members.insert(name.to_string(), member(name, "replica")?);
            }
            let m = &mut c.members.get_mut(name).expect("inserted").value;
            const KNOWN: &[&str] = &[
                "absent",
                "role",
                "state",
                "conn_url",
                "api_url",
                "wal",
                "tl",
                "tag.<name>",
            ];
            for w in args {
                let (k, v) = split(w);
                match k {
                    "role" => m.role = need(k, v)?.into(),
                    "state" => m.state = need(k, v)?.into(),
                    "conn_url" => {
                        m.conn_url = opt(need(k, v)?, |s| Ok(s.to_string()))?.unwrap_or_default()
                    }
                    "api_url" => {
                        m.api_url = opt(need(k, v)?, |s| Ok(s.to_string()))?.unwrap_or_default()
                    }
                    "wal" => m.xlog_location = opt(need(k, v)?, |s| num(k, s))?,
                    "tl" => m.timeline = opt(need(k, v)?, |s| num(k, s))?,
                    _ => match k.strip_prefix("tag.") {
                        Some(tag) if !tag.is_empty() => {
                            let v = need(k, v)?;
                            let value = serde_json::from_str(v).unwrap_or(Value::from(v));
                            m.tags.insert(tag.to_string(), value);
                        }
                        _ => return Err(unknown(k, KNOWN)),
                    },
                }
            }
        }
        "status" => {
            let c = cluster_mut(obs)?;
            match words[..] {
                ["none"] => c.status = None,
                [w] => match split(w) {
                    ("optime", v) => {
                        c.status = Some(StatusValue {
                            optime: opt(need("optime", v)?, |s| num("optime", s))?,
                            ..Default::default()
                        })
                    }
                    (k, _) => return Err(unknown(k, &["none", "optime"])),
                },
                _ => return Err("status none | status optime=<lsn>".into()),
            }
        }
        "paused" => {
            if !words.is_empty() {
                return Err("'paused' takes no words (for other values write config {…})".into());
            }
            cluster_mut(obs)?.config = Some(Versioned {
                value: serde_json::json!({"pause": true}),
                mod_revision: 3,
            });
        }
        "failover" => {
            let c = cluster_mut(obs)?;
            if words == ["none"] {
                c.failover = None;
                return Ok(());
            }
            let mut f = FailoverValue::default();
            for w in &words {
                let (k, v) = split(w);
                let v = Some(need(k, v)?.to_string());
                match k {
                    "leader" => f.leader = v,
                    "member" => f.member = v,
                    "scheduled_at" => f.scheduled_at = v,
                    _ => return Err(unknown(k, &["none", "leader", "member", "scheduled_at"])),
                }
            }
            c.failover = Some(Versioned {
                value: f,
                mod_revision: 9,
            });
        }
        "history" => {
            let c = cluster_mut(obs)?;
            let mut e = HistoryEntry {
                timeline: 0,
                lsn: 0,
                reason: "no recovery target specified".into(),
                timestamp: None,
                new_leader: None,
            };
            let (mut tl, mut lsn) = (false, false);
            for w in &words {
                let (k, v) = split(w);
                let v = need(k, v)?;
                match k {
                    "tl" => (e.timeline, tl) = (num(k, v)?, true),
                    "lsn" => (e.lsn, lsn) = (num(k, v)?, true),
                    "reason" => e.reason = v.into(),
                    "at" => e.timestamp = Some(v.into()),
                    "new_leader" => e.new_leader = Some(v.into()),
                    _ => return Err(unknown(k, &["tl", "lsn", "reason", "at", "new_leader"])),
                }
            }
            if !(tl && lsn) {
                return Err("history needs tl=<timeline> and lsn=<switch position>".into());
            }
            c.history
                .get_or_insert(Versioned {
                    value: vec![],
                    mod_revision: 2,
                })
                .value
                .push(e);
        }
        "failsafe_list" => {
            let c = cluster_mut(obs)?;
            c.failsafe = Some(
                words
                    .iter()
                    .map(|n| (n.to_string(), format!("http://{n}:8008/patroni")))
                    .collect::<BTreeMap<_, _>>(),
            );
        }
        "pg" => {
            let pg = &mut obs.pg;
            const KNOWN: &[&str] = &[
                "running",
                "stopped",
                "empty",
                "former_primary",
                "role",
                "wal",
                "tl",
                "following",
                "sysid",
                "control",
                "down_for",
                "replay",
            ];
            for w in &words {
                let (k, v) = split(w);
                match (k, v) {
                    ("running", None) => pg.running = true,
                    ("stopped", None) => {
                        pg.running = false;
                        pg.role = None;
                    }
                    ("empty", None) => pg.data = DataDir::Empty,
                    ("former_primary", None) => pg.former_primary = true,
                    ("former_primary", Some(v)) => pg.former_primary = boolean(k, v)?,
                    ("role", Some(v)) => {
                        pg.role = match v {
                            "primary" => Some(PgRole::Primary),
                            "replica" => Some(PgRole::Replica),
                            "unknown" => None,
                            _ => {
                                return Err(format!(
                                    "role={v}: expected primary, replica or unknown"
                                ))
                            }
                        }
                    }
                    ("down_for", Some(v)) => pg.down_ms = opt(v, |s| millis(k, s))?,
                    ("replay", Some(v)) => {
                        pg.replay = opt(v, |s| {
                            let (tl, lsn) = s.split_once(':').ok_or_else(|| {
                                format!("replay={s}: write <timeline>:<lsn>, e.g. replay=1:1000")
                            })?;
                            Ok((num("replay timeline", tl)?, num("replay lsn", lsn)?))
                        })?
                    }
                    ("wal", Some(v)) => pg.wal_position = opt(v, |s| num(k, s))?,
                    ("tl", Some(v)) => pg.timeline = opt(v, |s| num(k, s))?,
                    ("following", Some(v)) => pg.following = opt(v, |s| Ok(s.to_string()))?,
                    ("sysid" | "control", Some(v)) => {
                        let (mut sysid, mut was_primary) = match &pg.data {
                            DataDir::Initialized { sysid, was_primary } => {
                                (sysid.clone(), *was_primary)
                            }
                            DataDir::Empty => (SYSID.to_string(), false),
                        };
                        if k == "sysid" {
                            sysid = v.to_string();
                        } else {
                            was_primary = match v {
                                "primary" => true,
                                "replica" => false,
                                _ => {
                                    return Err(format!("control={v}: expected primary or replica"))
                                }
                            };
                        }
                        pg.data = DataDir::Initialized { sysid, was_primary };
                    }
                    _ => return Err(unknown(w, KNOWN)),
                }
            }
        }
        "lease" => {
            if words == ["none"] {
                obs.lease_id = 0;
                obs.lease_remaining_ms = None;
                return Ok(());
            }
            for w in &words {
                let (k, v) = split(w);
                match k {
                    "id" => obs.lease_id = num(k, need(k, v)?)?,
                    "left" => obs.lease_remaining_ms = opt(need(k, v)?, |s| millis(k, s))?,
                    _ => return Err(unknown(k, &["none", "id", "left"])),
                }
            }
        }
        "peer" => {
            let [name, ref args @ ..] = words[..] else {
                return Err("peer <name> [unreachable] [primary=…] [wal=…] [priority=…]".into());
            };
            let answer = if args == ["unreachable"] {
                None
            } else {
                let mut a = PeerAnswer {
                    is_primary: false,
                    wal_position: WAL,
                    failover_priority: 1,
                    streaming: false,
                };
                for w in args {
                    let (k, v) = split(w);
                    let v = need(k, v)?;
                    match k {
                        "primary" => a.is_primary = boolean(k, v)?,
                        "wal" => a.wal_position = num(k, v)?,
                        "priority" => a.failover_priority = num(k, v)?,
                        "streaming" => a.streaming = boolean(k, v)?,
                        _ => {
                            return Err(unknown(
                                k,
                                &["unreachable", "primary", "wal", "priority", "streaming"],
                            ))
                        }
                    }
                }
                Some(a)
            };
            obs.peers.push(PeerStatus {
                name: name.into(),
                answer,
            });
        }
        "settings" => {
            let s = &mut obs.settings;
            for w in &words {
                let (k, v) = split(w);
                let v = need(k, v)?;
                match k {
                    "maximum_lag_on_failover" => s.maximum_lag_on_failover = num(k, v)?,
                    "use_pg_rewind" => s.use_pg_rewind = boolean(k, v)?,
                    "check_timeline" => s.check_timeline = boolean(k, v)?,
                    "can_bootstrap" => s.can_bootstrap = boolean(k, v)?,
                    "failover_priority" => s.failover_priority = num(k, v)?,
                    "demote_margin" => s.demote_margin_ms = millis(k, v)?,
                    "loop_wait" => s.loop_wait_ms = millis(k, v)?,
                    "primary_start_timeout" => s.primary_start_timeout_ms = millis(k, v)?,
                    _ => {
                        return Err(unknown(
                            k,
                            &[
                                "maximum_lag_on_failover",
                                "use_pg_rewind",
                                "check_timeline",
                                "can_bootstrap",
                                "failover_priority",
                                "demote_margin",
                                "loop_wait",
                                "primary_start_timeout",
                            ],
                        ))
                    }
                }
            }
        }
        "failsafe" => {
            for w in &words {
                match split(w) {
                    ("accepted", None) => obs.failsafe.peers_accepted = true,
                    ("pinged_by", Some(v)) => obs.failsafe.pinged_by = Some(v.into()),
                    (k, _) => return Err(unknown(k, &["accepted", "pinged_by=<name>"])),
                }
            }
        }
        "sync" => {
            let c = cluster_mut(obs)?;
            if words == ["none"] {
                c.sync = None;
                return Ok(());
            }
            if let Some(raw) = rest.strip_prefix("raw ") {
                let value: Value = serde_json::from_str(raw.trim())
                    .map_err(|e| format!("sync raw: the rest of the line must be JSON ({e})"))?;
                c.sync = Some(Versioned {
                    value,
                    mod_revision: 5,
                });
                return Ok(());
            }
            let (mut leader, mut standbys) = (None, None);
            for w in &words {
                let (k, v) = split(w);
                let v = need(k, v)?;
                match k {
                    "leader" => leader = opt(v, |s| Ok(s.to_string()))?,
                    "standbys" => standbys = opt(v, |s| Ok(s.to_string()))?,
                    _ => return Err(unknown(k, &["none", "raw", "leader", "standbys"])),
                }
            }
            c.sync = Some(Versioned {
                value: serde_json::json!({"leader": leader, "quorum": 0, "sync_standby": standbys}),
                mod_revision: 5,
            });
        }
        "standby" => {
            let [name, ref args @ ..] = words[..] else {
                return Err("standby <name> [state=…] [sync_state=…] [lsn=…]".into());
            };
            let mut row = StandbyRow {
                name: name.into(),
                state: "streaming".into(),
                sync_state: "async".into(),
                lsn: WAL,
            };
            for w in args {
                let (k, v) = split(w);
                let v = need(k, v)?;
                match k {
                    "state" => row.state = v.into(),
                    "sync_state" => row.sync_state = v.into(),
                    "lsn" => row.lsn = num(k, v)?,
                    _ => return Err(unknown(k, &["state", "sync_state", "lsn"])),
                }
            }
            obs.sync.standbys.push(row);
        }
        "ssn" => {
            for w in &words {
                let (k, v) = split(w);
                let v = need(k, v)?;
                match k {
                    "shown" => {
                        obs.sync.ssn = if v == "empty" {
                            String::new()
                        } else {
                            v.into()
                        }
                    }
                    "managed" => {
                        obs.sync.managed = match v {
                            "none" => None,
                            "empty" => Some(String::new()),
                            v => Some(v.into()),
                        }
                    }
                    "changed_lsn" => obs.sync.ssn_changed_lsn = num(k, v)?,
                    _ => return Err(unknown(k, &["shown", "managed", "changed_lsn"])),
                }
            }
        }
        other => return Err(unknown(other, KEYWORDS)),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Expected output: one line per action, then the reason.
// ---------------------------------------------------------------------------------------------

fn name_or_none(n: &Option<String>) -> &str {
    n.as_deref().unwrap_or("none")
}

/// One action as a line. The match lists every variant on purpose: a new action does not compile
/// here until it has a spelling.
fn render_action(a: &Action) -> String {
    match a {
        Action::BootstrapRace => "bootstrap_race".into(),
        Action::Clone { from } => format!("clone from={from}"),
        Action::StartPrimary => "start_primary".into(),
        Action::StartReplica { leader } => format!("start_replica leader={}", name_or_none(leader)),
        Action::RewindAndFollow { leader } => format!("rewind_and_follow leader={leader}"),
        Action::Follow { leader } => format!("follow leader={leader}"),
        Action::AcquireLeader => "acquire_leader".into(),
        Action::ReattachLeader => "reattach_leader".into(),
        Action::Promote => "promote".into(),
        Action::Demote { mode, then_follow } => {
            let mode = match mode {
                DemoteMode::Offline => "offline",
                DemoteMode::ImmediateNoLock => "immediate-nolock",
                DemoteMode::Graceful => "graceful",
            };
            format!(
                "demote mode={mode} then_follow={}",
                name_or_none(then_follow)
            )
        }
        Action::ReleaseLeader => "release_leader".into(),
        Action::StepDown => "step_down".into(),
        Action::ClearFailover { reason } => format!("clear_failover reason={reason:?}"),
        Action::WriteInitialize { sysid } => format!("write_initialize sysid={sysid}"),
        Action::RepairInitialize { sysid, found } => {
            format!("repair_initialize sysid={sysid} found={found}")
        }
        Action::Refuse { reason } => format!("refuse reason={reason:?}"),
        Action::WriteSync { state, revision } => format!(
            "write_sync leader={} standbys={} revision={}",
            name_or_none(&state.leader),
            if state.standbys.is_empty() {
                "none".to_string()
            } else {
                state.standbys.join(",")
            },
            revision.map_or("absent".to_string(), |r| r.to_string())
        ),
        Action::DeleteSync { revision } => format!("delete_sync revision={revision}"),
        Action::SetSsn { value } => match value {
            None => "set_ssn configuration".into(),
            Some(v) => format!("set_ssn value={v:?}"),
        },
    }
}

fn render(d: &Decision) -> Vec<String> {
    let mut out: Vec<String> = d.actions.iter().map(render_action).collect();
    if out.is_empty() {
        out.push("no actions".into());
    }
    out.push(format!("reason: {}", d.reason));
    out
}

// ---------------------------------------------------------------------------------------------
// Files and cases.
// ---------------------------------------------------------------------------------------------

struct Case {
    /// 1-based line of the case's title.
    line: usize,
    title: String,
    /// (1-based line, text) of each input line.
    inputs: Vec<(usize, String)>,
    /// 0-based index range of the expected lines in the file.
    expected: std::ops::Range<usize>,
}

/// Splits a file into cases. A block is a run of non-blank lines; a block with a `----` line is a
/// case (its first line a `#` title, its other lines before `----` inputs or `#` comments), a
/// block of `#` lines only is a note.
fn parse_file(text: &str) -> Result<Vec<Case>, Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && !lines[i].trim().is_empty() {
            i += 1;
        }
        let block = start..i;
        let sep = block.clone().find(|&j| lines[j].trim() == "----");
        let Some(sep) = sep else {
            if let Some(j) = block
                .clone()
                .find(|&j| !lines[j].trim_start().starts_with('#'))
            {
                errors.push(format!(
                    "{}: input lines without a `----` line (a case ends with `----` and its expected answer; a note is `#` lines only)",
                    j + 1
                ));
            }
            continue;
        };
        let Some(title) = lines[start].trim().strip_prefix('#') else {
            errors.push(format!(
                "{}: a case starts with a `# title` line",
                start + 1
            ));
            continue;
        };
        let inputs = (start + 1..sep)
            .filter(|&j| !lines[j].trim_start().starts_with('#'))
            .map(|j| (j + 1, lines[j].trim().to_string()))
            .collect();
        cases.push(Case {
            line: start + 1,
            title: title.trim().to_string(),
            inputs,
            expected: sep + 1..i,
        });
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

/// Builds a case's observation from the baseline and its input lines.
fn observation(case: &Case) -> Result<Observation, String> {
    let mut inputs = case.inputs.iter();
    let mut first = inputs.next();
    let me = match first.map(|(_, l)| l.split_whitespace().collect::<Vec<_>>()) {
        Some(w) if w.first() == Some(&"me") => {
            let (line, _) = first.take().expect("checked");
            match w[..] {
                ["me", name] => name.to_string(),
                _ => return Err(format!("{line}: me <name>")),
            }
        }
        _ => "node1".to_string(),
    };
    let mut obs = baseline(&me).map_err(|e| format!("{}: {e}", case.line))?;
    for (line, text) in first.into_iter().chain(inputs) {
        apply(&mut obs, text).map_err(|e| format!("{line}: {e}: `{text}`"))?;
    }
    Ok(obs)
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/decide")
}

#[test]
fn decision_table() {
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata())
        .expect("testdata/decide exists")
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no scenario files in {}",
        testdata().display()
    );

    let mut failures = Vec::new();
    let mut ran = 0;
    for path in &files {
        let shown = format!(
            "testdata/decide/{}",
            path.file_name().unwrap().to_string_lossy()
        );
        let text = std::fs::read_to_string(path).expect("readable scenario file");
        let cases = match parse_file(&text) {
            Ok(c) => c,
            Err(errors) => {
                failures.extend(errors.into_iter().map(|e| format!("{shown}:{e}")));
                continue;
            }
        };
        if cases.is_empty() {
            failures.push(format!("{shown}: holds no case"));
        }
        let lines: Vec<&str> = text.lines().collect();
        // (expected range, actual lines) of every case whose answer differs.
        let mut replace = Vec::new();
        for case in &cases {
            let obs = match observation(case) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{shown}:{e}"));
                    continue;
                }
            };
            ran += 1;
            let actual = render(&decide(&obs));
            let expected: Vec<&str> = lines[case.expected.clone()]
                .iter()
                .map(|l| l.trim())
                .collect();
            if expected != actual {
                if !rewrite {
                    let mut msg = format!("{shown}:{}: {}\n  expected:\n", case.line, case.title);
                    for l in &expected {
                        let _ = writeln!(msg, "    {l}");
                    }
                    msg.push_str("  actual:\n");
                    for l in &actual {
                        let _ = writeln!(msg, "    {l}");
                    }
                    failures.push(msg);
                }
                replace.push((case.expected.clone(), actual));
            }
        }
        if rewrite && !replace.is_empty() {
            let mut out: Vec<String> = Vec::new();
            let mut next = 0;
            for (range, actual) in &replace {
                out.extend(lines[next..range.start].iter().map(|l| l.to_string()));
                out.extend(actual.iter().cloned());
                next = range.end;
            }
            out.extend(lines[next..].iter().map(|l| l.to_string()));
            std::fs::write(path, out.join("\n") + "\n").expect("writable scenario file");
            eprintln!(
                "REWRITE: {} expected block(s) rewritten in {shown}",
                replace.len()
            );
        }
    }
    eprintln!("decision table: {ran} cases in {} files", files.len());
    assert!(
        failures.is_empty(),
        "{} problem(s) in the decision table:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The runner's own parser refuses what it does not understand (a typo must fail, not fall back).
#[test]
fn unknown_words_are_errors_naming_the_line() {
    let case = "# a typo\nme node2\npg runing\n----\nno actions\nreason: x\n";
    let cases = parse_file(case).expect("parses");
    let err = observation(&cases[0]).expect_err("a typo is an error");
    assert!(err.starts_with("3: unknown word 'runing'"), "{err}");
    for bad in [
        "leader node2 leese=5",
        "frobnicate",
        "member node2 rol=primary",
        "lease left=3000",
        "settings use_pg_rewind=yes",
    ] {
        let text = format!("# bad\n{bad}\n----\nreason: x\n");
        let cases = parse_file(&text).expect("parses");
        assert!(observation(&cases[0]).is_err(), "{bad} was accepted");
    }
    assert!(parse_file("# no separator\nme node1\n").is_err());
    assert!(parse_file("me node1\n----\nreason: x\n").is_err());
}
