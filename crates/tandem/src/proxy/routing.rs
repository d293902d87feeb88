//! The routing table as a pure function: which backend each listener may send new connections
//! to, given the cluster view from etcd, the latest health checks and the listener settings. No
//! I/O and no clock: `now` and the moment the current leader was first seen come in as data.
//!
//! Rules (DESIGN.md, safety rule 4):
//! - **primary**, etcd in sync: the holder of the leader key, once its member key says
//!   `role: primary` and `state: running`. Its REST API can veto: once a `/primary` check started
//!   after it became the leader has answered 200, any later answer but 200 removes it at once;
//!   `FALL` failed checks in a row (no answer) too. Checks from before it became the leader are
//!   ignored, so a promotion is routed the moment etcd shows it, not one health interval later;
//!   and a new leader's REST API may lag its member key by up to one HA cycle (it still says 503
//!   right after the promotion), so a 503 counts before the first 200 only after `grace`.
//! - **primary**, etcd unreachable: the one member whose recent `/primary` check answered 200
//!   (none if two do), among the members last seen in etcd.
//! - **replicas** / **read_only_any**: members whose recent `/replica?lag=<max_lag>` check answered
//!   200 and, with etcd in sync, whose member key says `role: replica`, `state: running`, without
//!   the `noloadbalance` tag. `read_only_any` adds the primary; `replicas` falls back to it only
//!   when configured and no replica qualifies.
//! - Each listener also names the backends whose open connections may stay: the primary listener
//!   only the current primary (anything else is cut at once); read listeners every known member
//!   still reachable (a replica excluded for lag keeps its sessions).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tandem_core::cluster::{ClusterView, Member};

use super::config::Role;

/// Failed checks (no answer) in a row after which a node counts as down.
pub const FALL: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// HTTP 200.
    Up,
    /// Another HTTP status (503: "not the leader" / "not a usable replica").
    Down(u16),
    /// No answer in time (refused, reset, timeout, TLS failure).
    Unreachable,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Probe {
    pub outcome: Outcome,
    pub started: Instant,
    pub finished: Instant,
    /// `Unreachable` answers in a row, this one included.
    pub failures: u32,
}

/// The latest checks of one node: `/primary`, and `/replica` per lag limit (`None`: no `lag=`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeHealth {
    pub primary: Option<Probe>,
    /// Start of the last `/primary` check that answered 200.
    pub primary_confirmed: Option<Instant>,
    pub replica: BTreeMap<Option<u64>, Probe>,
}

impl NodeHealth {
    pub fn record_primary(&mut self, outcome: Outcome, started: Instant, finished: Instant) {
        if outcome == Outcome::Up {
            self.primary_confirmed = Some(started);
        }
        self.primary = Some(NodeHealth::record(
            self.primary.as_ref(),
            outcome,
            started,
            finished,
        ));
    }
    pub fn record_replica(
        &mut self,
        lag: Option<u64>,
        outcome: Outcome,
        started: Instant,
        finished: Instant,
    ) {
        let p = NodeHealth::record(self.replica.get(&lag), outcome, started, finished);
        self.replica.insert(lag, p);
    }
    /// Records a check result, counting failures in a row.
    pub fn record(
        prev: Option<&Probe>,
        outcome: Outcome,
        started: Instant,
        finished: Instant,
    ) -> Probe {
        let failures = match outcome {
            Outcome::Unreachable => prev.map(|p| p.failures).unwrap_or(0) + 1,
            _ => 0,
        };
        Probe {
            outcome,
            started,
            finished,
            failures,
        }
    }
    fn dead(&self) -> bool {
        self.primary.is_some_and(|p| p.failures >= FALL)
    }
}

/// What one listener wants.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerSpec {
    pub role: Role,
    pub max_lag: Option<u64>,
    pub fallback_to_primary: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    pub name: String,
    /// `host:port` of PostgreSQL, from the member's `conn_url`.
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ListenerRoute {
    pub role: Role,
    /// Where new connections may go (empty: hold, then refuse).
    pub backends: Vec<Backend>,
    /// Open connections to any other backend are closed.
    pub keep: BTreeSet<Backend>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// etcd's leader and member keys, confirmed by health checks.
    Etcd,
    /// etcd unreachable: health checks alone, over the members last seen in etcd.
    HealthOnly,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub source: Source,
    pub primary: Option<Backend>,
    /// Why there is no primary, or how it was chosen: one sentence.
    pub primary_reason: String,
    pub listeners: Vec<ListenerRoute>,
}

impl Table {
    pub fn listener(&self, role: Role) -> Option<&ListenerRoute> {
        self.listeners.iter().find(|l| l.role == role)
    }
}

pub struct Inputs<'a> {
    /// The last view read from etcd (stale when `etcd_synced` is false).
    pub view: &'a ClusterView,
    pub etcd_synced: bool,
    pub health: &'a BTreeMap<String, NodeHealth>,
    /// When the current holder of the leader key was first seen as a running primary in etcd.
    pub leader_since: Option<Instant>,
    pub now: Instant,
    /// Checks older than this do not count (etcd-less routing, replicas).
    pub stale_after: Duration,
    /// How long after becoming the leader a node's REST API may still deny it before its first
    /// 200 (the agent publishes its REST status after its member key).
    pub grace: Duration,
    /// Since when a switchover request (the `failover` key, due now) has been seen.
    pub switchover_since: Option<Instant>,
    /// How long new connections are held back from a leader that is about to hand over.
    pub drain_limit: Duration,
}

/// Whether a pending switchover request will take the leadership away from `leader`.
pub fn switchover_away_from(view: &ClusterView, leader: &str) -> Option<String> {
    let f = view.failover_request()?;
    if f.leader.as_deref().is_some_and(|l| l != leader) || f.member.as_deref() == Some(leader) {
        return None;
    }
    Some(match &f.member {
        Some(m) => format!("planned switchover from {leader} to {m}"),
        None => format!("planned switchover away from {leader}"),
    })
}

fn backend(m: &Member) -> Option<Backend> {
    let (host, port) = m.value.conn_host_port()?;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Some(Backend {
        name: m.name.clone(),
        addr,
    })
}

fn fresh(p: &Probe, inp: &Inputs) -> bool {
    inp.now.saturating_duration_since(p.finished) <= inp.stale_after
}

/// The candidate for the primary listener according to etcd alone (before any REST veto).
pub fn etcd_leader(view: &ClusterView) -> Result<&Member, String> {
    let Some(name) = view.leader_name() else {
        return Err("no leader key in etcd".into());
    };
    let Some(m) = view.members.get(name) else {
        return Err(format!("leader {name} has no member key"));
    };
    if m.value.role() != "primary" || m.value.state != "running" {
        return Err(format!(
            "leader {name} is not a running primary yet (role {:?}, state {:?})",
            m.value.role, m.value.state
        ));
    }
    Ok(m)
}

fn choose_primary(inp: &Inputs) -> (Option<Backend>, String) {
    if inp.etcd_synced {
        let m = match etcd_leader(inp.view) {
            Ok(m) => m,
            Err(why) => return (None, why),
        };
        let Some(b) = backend(m) else {
            return (None, format!("leader {} has no usable conn_url", m.name));
        };
        let h = inp.health.get(&m.name);
        if let Some(p) = h.and_then(|h| h.primary) {
            let since = inp.leader_since;
            let current = since.is_none_or(|s| p.started >= s);
            let confirmed = h
                .and_then(|h| h.primary_confirmed)
                .is_some_and(|c| since.is_none_or(|s| c >= s));
            let past_grace = since.is_none_or(|s| inp.now.saturating_duration_since(s) > inp.grace);
            match p.outcome {
                Outcome::Down(code) if current && (confirmed || past_grace) => {
                    return (
                        None,
                        format!(
                            "leader {} answers {code} on GET /primary: not routed",
                            m.name
                        ),
                    )
                }
                Outcome::Unreachable if p.failures >= FALL => {
                    return (
                        None,
                        format!(
                            "leader {}'s REST API did not answer {} checks in a row: not routed",
                            m.name, p.failures
                        ),
                    )
                }
                _ => {}
            }
        }
        (
            Some(b),
            format!("{} holds the leader key and runs as primary", m.name),
        )
    } else {
        let up: Vec<&Member> = inp
            .view
            .members
            .values()
            .filter(|m| {
                inp.health
                    .get(&m.name)
                    .and_then(|h| h.primary)
                    .is_some_and(|p| p.outcome == Outcome::Up && fresh(&p, inp))
            })
            .collect();
        match up.as_slice() {
            [] => (
                None,
                "etcd unreachable and no member answers 200 on GET /primary".into(),
            ),
            [m] => match backend(m) {
                Some(b) => (
                    Some(b),
                    format!("etcd unreachable: {} answers 200 on GET /primary", m.name),
                ),
                None => (None, format!("{} has no usable conn_url", m.name)),
            },
            many => {
                (
                    None,
                    format!(
                    "etcd unreachable and {} members answer 200 on GET /primary ({}): none routed",
                    many.len(),
                    many.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
                )
            }
        }
    }
}

fn replica_ok(m: &Member, lag: Option<u64>, inp: &Inputs) -> bool {
    if m.value.tag_bool("noloadbalance") {
        return false;
    }
    if inp.etcd_synced && (m.value.role() != "replica" || m.value.state != "running") {
        return false;
    }
    inp.health
        .get(&m.name)
        .and_then(|h| h.replica.get(&lag))
        .is_some_and(|p| p.outcome == Outcome::Up && fresh(p, inp))
}

/// The routing table for these inputs.
pub fn route(inp: &Inputs, specs: &[ListenerSpec]) -> Table {
    let (primary, primary_reason) = choose_primary(inp);
    // A leader about to hand over takes no new connection: they wait for the new leader instead
    // of meeting the old one shutting down. Bounded by `drain_limit`, in case it never happens.
    let draining = match (&primary, inp.switchover_since) {
        (Some(p), Some(since))
            if inp.etcd_synced && inp.now.saturating_duration_since(since) < inp.drain_limit =>
        {
            switchover_away_from(inp.view, &p.name)
        }
        _ => None,
    };
    let reachable: BTreeSet<Backend> = inp
        .view
        .members
        .values()
        .filter(|m| !inp.health.get(&m.name).is_some_and(NodeHealth::dead))
        .filter_map(backend)
        .collect();
    let listeners = specs
        .iter()
        .map(|s| {
            let replicas = || -> Vec<Backend> {
                inp.view
                    .members
                    .values()
                    .filter(|m| Some(&m.name) != primary.as_ref().map(|p| &p.name))
                    .filter(|m| replica_ok(m, s.max_lag, inp))
                    .filter_map(backend)
                    .collect()
            };
            match s.role {
                Role::Primary => {
                    let keep: BTreeSet<Backend> = primary.iter().cloned().collect();
                    let backends = if draining.is_some() {
                        vec![]
                    } else {
                        primary.iter().cloned().collect()
                    };
                    ListenerRoute {
                        role: s.role,
                        keep,
                        backends,
                    }
                }
                Role::Replicas | Role::ReadOnlyAny => {
                    let mut backends = replicas();
                    if s.role == Role::ReadOnlyAny || (backends.is_empty() && s.fallback_to_primary)
                    {
                        backends.extend(primary.iter().cloned());
                    }
                    let mut keep = reachable.clone();
                    keep.extend(backends.iter().cloned());
                    ListenerRoute {
                        role: s.role,
                        backends,
                        keep,
                    }
                }
            }
        })
        .collect();
    let primary_reason = match draining {
        Some(d) => format!("{primary_reason}; {d}: new connections wait for the new leader"),
        None => primary_reason,
    };
    Table {
        source: if inp.etcd_synced {
            Source::Etcd
        } else {
            Source::HealthOnly
        },
        primary,
        primary_reason,
        listeners,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::cluster::RawKey;

    fn member(name: &str, port: u16, role: &str, state: &str, extra: &str) -> RawKey {
        RawKey {
            key: format!("members/{name}"),
            value: format!(
                r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"http://127.0.0.1:{}/patroni","role":"{role}","state":"{state}"{extra}}}"#,
                port + 1000
            )
            .into_bytes(),
            mod_revision: 1,
            lease: 1,
        }
    }
    fn leader(name: &str) -> RawKey {
        RawKey {
            key: "leader".into(),
            value: name.as_bytes().to_vec(),
            mod_revision: 1,
            lease: 1,
        }
    }
    fn view(keys: &[RawKey]) -> ClusterView {
        ClusterView::from_keys(keys).0
    }
    fn three(leader_name: Option<&str>, r1_extra: &str) -> ClusterView {
        let mut keys = vec![
            member("a", 5432, "primary", "running", ""),
            member(
                "b",
                5433,
                "replica",
                "running",
                r#","replication_state":"streaming""#,
            ),
            member("c", 5434, "replica", "running", r1_extra),
        ];
        if let Some(l) = leader_name {
            keys.push(leader(l));
        }
        view(&keys)
    }

    struct H {
        t0: Instant,
        health: BTreeMap<String, NodeHealth>,
    }
    impl H {
        fn new() -> H {
            H {
                t0: Instant::now(),
                health: BTreeMap::new(),
            }
        }
        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }
        fn primary(&mut self, name: &str, outcome: Outcome, started_ms: u64) {
            let (s, f) = (self.at(started_ms), self.at(started_ms + 1));
            self.health
                .entry(name.into())
                .or_default()
                .record_primary(outcome, s, f);
        }
        fn replica(&mut self, name: &str, lag: Option<u64>, outcome: Outcome, started_ms: u64) {
            let (s, f) = (self.at(started_ms), self.at(started_ms + 1));
            self.health
                .entry(name.into())
                .or_default()
                .record_replica(lag, outcome, s, f);
        }
    }

    fn specs() -> Vec<ListenerSpec> {
        vec![
            ListenerSpec {
                role: Role::Primary,
                max_lag: None,
                fallback_to_primary: false,
            },
            ListenerSpec {
                role: Role::Replicas,
                max_lag: Some(1024),
                fallback_to_primary: true,
            },
            ListenerSpec {
                role: Role::ReadOnlyAny,
                max_lag: None,
                fallback_to_primary: false,
            },
        ]
    }

    fn run(v: &ClusterView, synced: bool, h: &H, since_ms: Option<u64>, now_ms: u64) -> Table {
        route(
            &Inputs {
                view: v,
                etcd_synced: synced,
                health: &h.health,
                leader_since: since_ms.map(|m| h.at(m)),
                now: h.at(now_ms),
                stale_after: Duration::from_secs(3),
                grace: Duration::from_secs(2),
                switchover_since: None,
                drain_limit: Duration::from_secs(5),
            },
            &specs(),
        )
    }
    fn names(t: &Table, role: Role) -> Vec<String> {
        t.listener(role)
            .unwrap()
            .backends
            .iter()
            .map(|b| b.name.clone())
            .collect()
    }

    #[test]
    fn leader_routed_on_etcd_alone_before_any_check() {
        let v = three(Some("a"), "");
        let t = run(&v, true, &H::new(), Some(0), 0);
        assert_eq!(t.primary.as_ref().unwrap().addr, "127.0.0.1:5432");
        assert_eq!(names(&t, Role::Primary), ["a"]);
        assert_eq!(t.source, Source::Etcd);
        // No replica checked yet: replicas fall back to the primary; read_only_any has it too.
        assert_eq!(names(&t, Role::Replicas), ["a"]);
        assert_eq!(names(&t, Role::ReadOnlyAny), ["a"]);
    }

    #[test]
    fn no_leader_key_or_not_yet_primary_means_no_primary() {
        let v = three(None, "");
        let t = run(&v, true, &H::new(), None, 0);
        assert!(t.primary.is_none());
        assert!(t.primary_reason.contains("no leader key"));
        assert!(t.listener(Role::Primary).unwrap().keep.is_empty());
        // Leader key taken by b, whose member key still says replica (promotion in progress).
        let v = three(Some("b"), "");
        let t = run(&v, true, &H::new(), Some(0), 0);
        assert!(t.primary.is_none(), "{}", t.primary_reason);
        assert!(t.primary_reason.contains("not a running primary yet"));
        // Leader whose member key says primary but starting.
        let v = view(&[member("a", 5432, "primary", "starting", ""), leader("a")]);
        assert!(run(&v, true, &H::new(), Some(0), 0).primary.is_none());
    }

    #[test]
    fn legacy_master_role_counts_as_primary_and_standby_leader_does_not() {
        let v = view(&[member("a", 5432, "master", "running", ""), leader("a")]);
        assert!(run(&v, true, &H::new(), Some(0), 0).primary.is_some());
        let v = view(&[
            member("a", 5432, "standby_leader", "running", ""),
            leader("a"),
        ]);
        assert!(run(&v, true, &H::new(), Some(0), 0).primary.is_none());
    }

    #[test]
    fn a_503_after_the_first_200_vetoes_a_stale_one_does_not() {
        let v = three(Some("a"), "");
        let mut h = H::new();
        h.primary("a", Outcome::Down(503), 100); // from before a became leader (at 200)
        let t = run(&v, true, &h, Some(200), 210);
        assert_eq!(names(&t, Role::Primary), ["a"], "{}", t.primary_reason);
        // The agent's REST API lags its member key: a 503 right after the promotion is ignored...
        h.primary("a", Outcome::Down(503), 220);
        assert!(run(&v, true, &h, Some(200), 230).primary.is_some());
        // ... for `grace` only.
        assert!(run(&v, true, &h, Some(200), 2300).primary.is_none());
        h.primary("a", Outcome::Up, 250);
        assert!(run(&v, true, &h, Some(200), 260).primary.is_some());
        h.primary("a", Outcome::Down(503), 300);
        let t = run(&v, true, &h, Some(200), 310);
        assert!(t.primary.is_none());
        assert!(t.primary_reason.contains("503"), "{}", t.primary_reason);
        assert!(
            t.listener(Role::Primary).unwrap().keep.is_empty(),
            "connections are cut"
        );
        // A veto with no known leader_since (router start) counts too.
        assert!(run(&v, true, &h, None, 310).primary.is_none());
    }

    #[test]
    fn unreachable_rest_vetoes_only_after_fall_failures() {
        let v = three(Some("a"), "");
        let mut h = H::new();
        for i in 0..FALL {
            let t = run(&v, true, &h, Some(0), 100 * i as u64);
            assert!(t.primary.is_some(), "after {i} failures");
            h.primary("a", Outcome::Unreachable, 100 * i as u64 + 10);
        }
        let t = run(&v, true, &h, Some(0), 1000);
        assert!(t.primary.is_none());
        assert!(
            t.primary_reason.contains("did not answer"),
            "{}",
            t.primary_reason
        );
        h.primary("a", Outcome::Up, 1100);
        assert!(run(&v, true, &h, Some(0), 1200).primary.is_some());
    }

    #[test]
    fn without_etcd_health_checks_decide() {
        // The last view still names a as leader; checks say b is the primary now.
        let v = three(Some("a"), "");
        let mut h = H::new();
        h.primary("a", Outcome::Down(503), 0);
        h.primary("b", Outcome::Up, 0);
        h.primary("c", Outcome::Unreachable, 0);
        let t = run(&v, false, &h, Some(0), 500);
        assert_eq!(t.source, Source::HealthOnly);
        assert_eq!(names(&t, Role::Primary), ["b"], "{}", t.primary_reason);
        // Stale checks do not count.
        assert!(run(&v, false, &h, Some(0), 10_000).primary.is_none());
        // Two members claiming the primary role: none is routed.
        h.primary("a", Outcome::Up, 600);
        let t = run(&v, false, &h, Some(0), 700);
        assert!(t.primary.is_none());
        assert!(
            t.primary_reason.contains("2 members"),
            "{}",
            t.primary_reason
        );
        // No check at all: nothing.
        assert!(run(&v, false, &H::new(), None, 0).primary.is_none());
    }

    #[test]
    fn replicas_need_a_fresh_passing_check_and_the_right_lag_limit() {
        let v = three(Some("a"), "");
        let mut h = H::new();
        h.replica("b", Some(1024), Outcome::Up, 0);
        h.replica("c", Some(1024), Outcome::Down(503), 0); // lagging more than 1 kB
        h.replica("b", None, Outcome::Up, 0);
        h.replica("c", None, Outcome::Up, 0);
        let t = run(&v, true, &h, Some(0), 100);
        assert_eq!(names(&t, Role::Replicas), ["b"]);
        assert_eq!(names(&t, Role::ReadOnlyAny), ["b", "c", "a"]);
        // c's sessions on the replicas listener are kept (lag only stops new ones).
        let keep = &t.listener(Role::Replicas).unwrap().keep;
        assert!(keep.iter().any(|b| b.name == "c"));
        // Stale checks: no replica, fallback to the primary.
        let t = run(&v, true, &h, Some(0), 60_000);
        assert_eq!(names(&t, Role::Replicas), ["a"]);
    }

    #[test]
    fn replicas_skip_noloadbalance_and_non_running_members() {
        let v = view(&[
            member("a", 5432, "primary", "running", ""),
            member(
                "b",
                5433,
                "replica",
                "running",
                r#","tags":{"noloadbalance":true}"#,
            ),
            member("c", 5434, "replica", "starting", ""),
            member("d", 5435, "replica", "running", ""),
            leader("a"),
        ]);
        let mut h = H::new();
        for n in ["b", "c", "d"] {
            h.replica(n, Some(1024), Outcome::Up, 0);
        }
        let t = run(&v, true, &h, Some(0), 10);
        assert_eq!(names(&t, Role::Replicas), ["d"]);
    }

    #[test]
    fn replicas_without_fallback_stay_empty() {
        let v = three(Some("a"), "");
        let specs = [ListenerSpec {
            role: Role::Replicas,
            max_lag: None,
            fallback_to_primary: false,
        }];
        let h = H::new();
        let t = route(
            &Inputs {
                view: &v,
                etcd_synced: true,
                health: &h.health,
                leader_since: None,
                now: h.t0,
                stale_after: Duration::from_secs(3),
                grace: Duration::from_secs(2),
                switchover_since: None,
                drain_limit: Duration::from_secs(5),
            },
            &specs,
        );
        assert!(t.listener(Role::Replicas).unwrap().backends.is_empty());
    }

    #[test]
    fn dead_nodes_leave_the_keep_set_of_read_listeners() {
        let v = three(Some("a"), "");
        let mut h = H::new();
        for i in 0..FALL {
            h.primary("c", Outcome::Unreachable, i as u64);
        }
        let t = run(&v, true, &h, Some(0), 10);
        let keep = &t.listener(Role::ReadOnlyAny).unwrap().keep;
        assert!(keep.iter().any(|b| b.name == "b"));
        assert!(!keep.iter().any(|b| b.name == "c"));
    }

    #[test]
    fn a_leader_about_to_hand_over_takes_no_new_connections_for_a_while() {
        let mut keys = vec![
            member("a", 5432, "primary", "running", ""),
            member("b", 5433, "replica", "running", ""),
            leader("a"),
        ];
        keys.push(RawKey {
            key: "failover".into(),
            value: br#"{"leader":"a","member":"b"}"#.to_vec(),
            mod_revision: 1,
            lease: 0,
        });
        let v = view(&keys);
        let h = H::new();
        let at = |since_ms: Option<u64>, now_ms: u64| {
            route(
                &Inputs {
                    view: &v,
                    etcd_synced: true,
                    health: &h.health,
                    leader_since: Some(h.t0),
                    now: h.at(now_ms),
                    stale_after: Duration::from_secs(3),
                    grace: Duration::from_secs(2),
                    switchover_since: since_ms.map(|m| h.at(m)),
                    drain_limit: Duration::from_secs(5),
                },
                &specs(),
            )
        };
        let t = at(Some(100), 200);
        let l = t.listener(Role::Primary).unwrap();
        assert!(l.backends.is_empty(), "new connections wait");
        assert_eq!(
            l.keep.len(),
            1,
            "open sessions stay until the leader changes"
        );
        assert!(
            t.primary_reason.contains("planned switchover from a to b"),
            "{}",
            t.primary_reason
        );
        assert_eq!(
            names(&t, Role::ReadOnlyAny),
            ["a"],
            "reads may still go to it"
        );
        // Not forever.
        assert_eq!(names(&at(Some(100), 6000), Role::Primary), ["a"]);
        // A request naming another leader, or the current leader as candidate, is not ours.
        assert_eq!(names(&at(None, 200), Role::Primary), ["a"]);
        let other = view(&[
            member("a", 5432, "primary", "running", ""),
            leader("a"),
            RawKey {
                key: "failover".into(),
                value: br#"{"member":"a"}"#.to_vec(),
                mod_revision: 1,
                lease: 0,
            },
        ]);
        assert!(switchover_away_from(&other, "a").is_none());
        assert!(switchover_away_from(&v, "b").is_none());
    }

    #[test]
    fn ipv6_conn_urls_are_bracketed() {
        let mut m = member("a", 5432, "primary", "running", "");
        m.value =
            br#"{"conn_url":"postgres://[::1]:5432/postgres","role":"primary","state":"running"}"#
                .to_vec();
        let v = view(&[m, leader("a")]);
        assert_eq!(
            run(&v, true, &H::new(), None, 0).primary.unwrap().addr,
            "[::1]:5432"
        );
    }
}
