//! The HA decision: a pure function from what a node observes to what it should do next,
//! with one sentence saying why (spec §2.3 decision table, §2.4 leader race).
//!
//! The agent calls `decide` after every event (a DCS change, a PostgreSQL state change, a timer),
//! carries out the returned actions, and observes again.

use crate::cluster::ClusterView;
use crate::lsn::Lsn;

/// The local PostgreSQL data directory, as read from disk (pg_controldata).
#[derive(Clone, Debug, PartialEq)]
pub enum DataDir {
    /// Missing or empty: needs bootstrap or clone.
    Empty,
    /// An initialized cluster.
    Initialized {
        sysid: String,
        /// pg_control says the cluster last ran as a primary (not in recovery).
        was_primary: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgRole {
    Primary,
    Replica,
}

/// The local PostgreSQL server.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalPg {
    pub data: DataDir,
    pub running: bool,
    /// Known when running and answering queries.
    pub role: Option<PgRole>,
    /// Primary: flush LSN; replica: max(receive, replay).
    pub wal_position: Option<u64>,
    pub timeline: Option<u64>,
    /// The member this node's `primary_conninfo` points to, as last written by the agent.
    pub following: Option<String>,
    /// This server was demoted from primary to read-only in place (its lease ran out) and has
    /// not been rewound or re-cloned since: its WAL may go past the point where the new leader's
    /// timeline forked, so it rejoins through pg_rewind, not by re-pointing its upstream.
    pub former_primary: bool,
    /// How long PostgreSQL has been continuously down — not running, or running but not
    /// answering queries — as measured by the agent (`None`: it answers). A leader compares it with
    /// `primary_start_timeout`.
    pub down_ms: Option<u64>,
    /// A replica that is not streaming: the timeline and position it has replayed to (what
    /// PostgreSQL compares with a new timeline's fork point). `None` while it streams, or unknown.
    pub replay: Option<(u64, u64)>,
}

/// One peer's answer to `GET /patroni`, probed when the leader key is missing.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    pub name: String,
    /// `None`: unreachable or invalid answer (the peer is then ignored, as Patroni does).
    pub answer: Option<PeerAnswer>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PeerAnswer {
    pub is_primary: bool,
    pub wal_position: u64,
    pub failover_priority: i64,
    /// A replica whose WAL receiver streams (`replication_state: streaming`): from the former
    /// primary, while the leader key is gone, it may still confirm that primary's commits.
    pub streaming: bool,
}

/// Local settings `decide` needs (from the local config and the dynamic config).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub maximum_lag_on_failover: u64,
    pub use_pg_rewind: bool,
    pub check_timeline: bool,
    /// The local config has a `bootstrap` section.
    pub can_bootstrap: bool,
    /// From tags: 0 = never promote (`nofailover`).
    pub failover_priority: i64,
    /// The leader demotes when its lease has less than this left.
    pub demote_margin_ms: u64,
    pub loop_wait_ms: u64,
    /// `primary_start_timeout`: how long a leader whose PostgreSQL is down (crashed and not
    /// starting, or starting without answering) keeps the leader key before handing it to a
    /// healthy replica. 0: at once.
    pub primary_start_timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub me: String,
    /// A linearizable etcd read made in this cycle (never a watch cache: a watch on an etcd
    /// member cut off by dropped packets goes quiet and keeps stale keys); `None` when etcd could
    /// not be read.
    pub cluster: Option<ClusterView>,
    /// My current lease id (0: none).
    pub lease_id: i64,
    /// Time left on my lease, from the send time of the last successful keepalive.
    pub lease_remaining_ms: Option<u64>,
    pub pg: LocalPg,
    /// Peers' `/patroni` answers; filled only when the leader key is absent.
    pub peers: Vec<PeerStatus>,
    pub settings: Settings,
    /// Wall-clock time, Unix milliseconds (for scheduled switchovers).
    pub now_ms: i64,
    /// Failsafe mode (spec §2.6): what the agent learned over REST while etcd could not help.
    pub failsafe: FailsafeObs,
    /// Synchronous replication, as a primary sees it (empty on a replica).
    pub sync: crate::sync::SyncObs,
}

/// Failsafe mode facts, gathered by the agent (only when `failsafe_mode` is on).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FailsafeObs {
    /// I run as primary, my lease cannot be kept (etcd unreachable or keepalives failing), my
    /// name is in `/failsafe`, and every other member listed there answered my `POST /failsafe`
    /// with 200 just now: they all know I am alive and none of them will race for the key.
    pub peers_accepted: bool,
    /// A member running as primary reached me with `POST /failsafe` within `ttl`.
    pub pinged_by: Option<String>,
}

const FAILSAFE_KEEP: &str =
    "continue to run as a leader because failsafe mode is enabled and all members are accessible";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DemoteMode {
    /// DCS unreachable / lease running out: stop now, keep no upstream, lock not released (cannot be).
    Offline,
    /// Someone else holds (or should hold) the lock: stop immediately, then follow.
    ImmediateNoLock,
    /// Planned: checkpoint, fast stop, release the lock.
    Graceful,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create `initialize` (create-revision 0); the winner runs initdb and becomes leader.
    BootstrapRace,
    /// Clone the data directory from this member with pg_basebackup, then start as its replica.
    Clone {
        from: String,
    },
    /// Start PostgreSQL in place as primary (I hold the lock; crash recovery happens on start).
    StartPrimary,
    /// Start read-only, following `leader` (or nobody).
    StartReplica {
        leader: Option<String>,
    },
    /// pg_rewind against `leader` (after crash recovery if needed), then start as its replica;
    /// re-clone when the rewind fails.
    RewindAndFollow {
        leader: String,
    },
    /// Point a running replica at a (new) leader.
    Follow {
        leader: String,
    },
    /// Take the leader key with a create-revision transaction.
    AcquireLeader,
    /// Re-attach my own leader key to my current lease (after an agent restart).
    ReattachLeader,
    Promote,
    Demote {
        mode: DemoteMode,
        then_follow: Option<String>,
    },
    /// Delete my leader key (value-guarded).
    ReleaseLeader,
    /// A leader whose PostgreSQL stayed down past `primary_start_timeout`: stop PostgreSQL
    /// (immediate) if it runs, then release the leader key so a healthy replica takes over. The
    /// key is released only once PostgreSQL is stopped.
    StepDown,
    /// Clear the `failover` key (write `{}` with compare-and-set); the reason is logged.
    ClearFailover {
        reason: String,
    },
    /// Write my system identifier to `initialize`.
    WriteInitialize {
        sysid: String,
    },
    /// The leader overwrites an `initialize` that names another system identifier (`found`).
    RepairInitialize {
        sysid: String,
        found: String,
    },
    /// Write `/sync` with a compare on its mod revision (`None`: only if absent). A failed
    /// compare fails the action, and the actions after it are not carried out.
    WriteSync {
        state: crate::sync::SyncState,
        revision: Option<i64>,
    },
    /// Delete `/sync` with a compare on its mod revision (synchronous mode turned off).
    DeleteSync {
        revision: i64,
    },
    /// Set `synchronous_standby_names` (written to postgresql.conf, then reloaded); `None` hands
    /// it back to the configuration's `postgresql.parameters`.
    SetSsn {
        value: Option<String>,
    },
    /// Stop the agent: continuing would risk the cluster. The reason says what to do.
    Refuse {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub reason: String,
}

impl Decision {
    fn none(reason: impl Into<String>) -> Decision {
        Decision {
            actions: vec![],
            reason: reason.into(),
        }
    }
    fn act(actions: Vec<Action>, reason: impl Into<String>) -> Decision {
        Decision {
            actions,
            reason: reason.into(),
        }
    }
}

/// Whether my lease can back a write to the leader key or a writable PostgreSQL: I have one, and
/// its deadline (from the send time of the last successful keepalive) is more than the demotion
/// margin away.
fn lease_usable(obs: &Observation) -> bool {
    obs.lease_id != 0 && !lease_low(obs)
}

/// What should this node do now?
pub fn decide(obs: &Observation) -> Decision {
    let Some(cluster) = &obs.cluster else {
        return dcs_unreachable(obs);
    };
    let me = obs.me.as_str();
    let paused = cluster.paused();
    // A leader key bound to no lease is no agent's (they all write it under their lease): it
    // would never expire. It counts as absent, and the race replaces it (`Dcs::take_leader`).
    let leader = cluster.leader.as_ref().filter(|l| l.lease != 0);
    let i_hold_lock =
        leader.is_some_and(|l| l.name == me && l.lease == obs.lease_id && obs.lease_id != 0);
    let my_stale_lock = leader.is_some_and(|l| l.name == me && !i_hold_lock);
    let other_leader = leader.filter(|l| l.name != me).map(|l| l.name.clone());

    // Data directory.
    let sysid = match &obs.pg.data {
        DataDir::Empty => {
            if obs.pg.running {
                return Decision::none(
                    "PostgreSQL runs but its data directory looks empty: waiting",
                );
            }
            if paused {
                return Decision::none(
                    "PAUSE: data directory is empty; not bootstrapping or cloning while paused",
                );
            }
            if let Some(l) = &other_leader {
                let from = clone_source(cluster, me).unwrap_or_else(|| l.clone());
                return Decision::act(
                    vec![Action::Clone { from: from.clone() }],
                    format!("creating a replica from {from}"),
                );
            }
            if i_hold_lock || my_stale_lock {
                return Decision::act(
                    vec![Action::ReleaseLeader],
                    "I hold the leader key but have no data: releasing it",
                );
            }
            return match &cluster.initialize {
                None if obs.settings.can_bootstrap && obs.settings.failover_priority > 0 => {
                    Decision::act(
                        vec![Action::BootstrapRace],
                        "no cluster yet: trying to bootstrap it",
                    )
                }
                None if !obs.settings.can_bootstrap => Decision::none(
                    "waiting for a leader to bootstrap (no bootstrap section in my configuration)",
                ),
                None => Decision::none(
                    "waiting for a leader to bootstrap (nofailover: I may not bootstrap)",
                ),
                Some(_) => Decision::none("waiting for the leader to bootstrap"),
            };
        }
        DataDir::Initialized { sysid, .. } => sysid.clone(),
    };

    // Before the initialize check: a leader whose key is under an old lease (agent restart) must
    // not take itself for a stranger.
    if my_stale_lock {
        if !lease_usable(obs) {
            return Decision::none(
                "the leader key names me under an old lease: waiting for a valid lease of my own to re-attach it",
            );
        }
        return Decision::act(
            vec![Action::ReattachLeader],
            "the leader key names me under an old lease: re-attaching it to my lease",
        );
    }

    match cluster.initialize.as_deref() {
        Some(init) if !init.is_empty() && init != sysid => {
            // The leader's data is the cluster: a wrong `initialize` is repaired, not obeyed.
            if i_hold_lock && obs.pg.role == Some(PgRole::Primary) {
                return Decision::act(
                    vec![Action::RepairInitialize {
                        sysid: sysid.clone(),
                        found: init.to_string(),
                    }],
                    format!(
                        "the initialize key says {init}, but I, the leader, run system identifier {sysid}: rewriting it"
                    ),
                );
            }
            // Never leave a writable server behind: stop writes before anything else (unless
            // paused: maintenance mode leaves PostgreSQL as it is).
            if obs.pg.running && obs.pg.role != Some(PgRole::Replica) && !paused {
                return Decision::act(
                    vec![Action::Demote {
                        mode: DemoteMode::Offline,
                        then_follow: None,
                    }],
                    format!(
                        "demoting: the initialize key says {init}, not my system identifier {sysid}, and I do not hold the leader key"
                    ),
                );
            }
            if obs.pg.running && paused {
                return Decision::none(format!(
                    "PAUSE: the initialize key says {init}, not my system identifier {sysid}: leaving PostgreSQL as it is"
                ));
            }
            // A running replica shares its leader's system identifier: the leader repairs the key.
            if obs.pg.running && other_leader.is_some() {
                return Decision::none(format!(
                    "the initialize key says {init}, not my system identifier {sysid}: read-only, waiting for the leader to repair it"
                ));
            }
            return Decision::act(
                vec![Action::Refuse {
                    reason: format!(
                        "the data directory belongs to another cluster: its system identifier is {sysid} but this cluster's is {init}. \
                         If this node should join the cluster, move the data directory away (or run `tandem reinit`) and restart; \
                         if the cluster itself was re-created, remove its state with `tandem remove` first"
                    ),
                }],
                "system identifier mismatch",
            );
        }
        None if leader.is_none() && !paused => {
            if obs.pg.running && obs.pg.role == Some(PgRole::Replica) {
                return Decision::act(
                    vec![Action::Refuse {
                        reason: "this node runs as a replica but the cluster has no `initialize` key and no leader: start the node that holds the primary's data first".into(),
                    }],
                    "a replica cannot start a cluster",
                );
            }
            return Decision::act(
                vec![Action::WriteInitialize { sysid }],
                "publishing this node's system identifier in `initialize`",
            );
        }
        _ => {}
    }

    // PostgreSQL is not running.
    if !obs.pg.running {
        if paused {
            if i_hold_lock {
                return Decision::act(
                    vec![Action::ReleaseLeader],
                    "PAUSE: PostgreSQL is stopped: releasing the leader key",
                );
            }
            return Decision::none(
                "PAUSE: PostgreSQL is not running; not starting it while paused",
            );
        }
        let was_primary = matches!(
            obs.pg.data,
            DataDir::Initialized {
                was_primary: true,
                ..
            }
        );
        if i_hold_lock && !lease_usable(obs) {
            return Decision::none(
                "not starting PostgreSQL as primary: my leader lease is about to expire",
            );
        }
        if i_hold_lock {
            if let Some(d) = primary_start_overdue(obs, cluster) {
                return d;
            }
            if was_primary {
                return Decision::act(
                    vec![Action::StartPrimary],
                    "starting PostgreSQL as primary: I hold the leader key",
                );
            }
            return Decision::act(
                vec![Action::StartReplica { leader: None }],
                "starting as read-only because I hold the leader key; will promote next",
            );
        }
        if let Some(l) = other_leader {
            if (was_primary || obs.pg.former_primary) && obs.settings.use_pg_rewind {
                return Decision::act(
                    vec![Action::RewindAndFollow { leader: l.clone() }],
                    format!("former primary rejoining: rewinding against {l}"),
                );
            }
            return Decision::act(
                vec![Action::StartReplica {
                    leader: Some(l.clone()),
                }],
                format!("starting as a replica of {l}"),
            );
        }
        return Decision::act(
            vec![Action::StartReplica { leader: None }],
            "starting read-only: the cluster has no leader",
        );
    }

    let Some(role) = obs.pg.role else {
        if i_hold_lock && !paused && lease_low(obs) {
            return Decision::act(
                vec![Action::Demote { mode: DemoteMode::Offline, then_follow: None }],
                "stopping PostgreSQL: my leader lease is about to expire and PostgreSQL does not answer",
            );
        }
        if i_hold_lock && !paused {
            if let Some(d) = primary_start_overdue(obs, cluster) {
                return d;
            }
        }
        return Decision::none("PostgreSQL is running but does not answer queries yet: waiting");
    };

    if i_hold_lock {
        if role == PgRole::Primary {
            if !paused && lease_low(obs) && obs.failsafe.peers_accepted {
                return Decision::none(FAILSAFE_KEEP);
            }
            if !paused && lease_low(obs) {
                return Decision::act(
                    vec![Action::Demote {
                        mode: DemoteMode::Offline,
                        then_follow: None,
                    }],
                    "demoting: my leader lease is about to expire and could not be renewed",
                );
            }
            // A switchover to act on comes first; one that waits for its time does not hold up
            // the synchronous-replication duties (commits would wait on a departed standby).
            let switchover = manual_switchover(obs, cluster, paused);
            if let Some(d) = switchover.as_ref().filter(|d| !d.actions.is_empty()) {
                return d.clone();
            }
            if let Some((actions, why)) = crate::sync::primary_duties(
                me,
                obs.pg.wal_position.unwrap_or(0),
                cluster,
                &obs.sync,
            ) {
                return Decision::act(actions, why);
            }
            if let Some(d) = switchover {
                return d;
            }
            let prefix = if paused { "PAUSE: " } else { "" };
            return Decision::none(format!(
                "{prefix}no action: I am ({me}) the leader with the lock"
            ));
        }
        let candidate = cluster.failover_request().and_then(|f| f.member.as_deref()) == Some(me);
        if paused && !(candidate && lease_usable(obs)) {
            return Decision::act(
                vec![Action::ReleaseLeader],
                "PAUSE: I hold the leader key but am not primary: releasing it",
            );
        }
        if paused {
            return Decision::act(
                promotion(obs, cluster, vec![]),
                "PAUSE: promoting: I am the requested failover candidate and hold the leader key",
            );
        }
        if !lease_usable(obs) {
            return Decision::none(
                "not promoting: my leader lease is about to expire and could not be renewed",
            );
        }
        // Synchronous mode: holding the key is not enough (a key can name me without my having
        // raced for it, e.g. written by hand): only a member `/sync` names may promote.
        if let Some(s) = crate::sync::active(cluster) {
            let explicit = cluster
                .failover_request()
                .is_some_and(|f| f.leader.is_none() && f.member.as_deref() == Some(me));
            if !explicit && !s.names(me) {
                return Decision::act(
                    vec![Action::ReleaseLeader],
                    "synchronous mode: I hold the leader key but /sync does not name me: releasing it for a synchronous standby",
                );
            }
        }
        return Decision::act(
            promotion(obs, cluster, vec![]),
            "promoting: I hold the leader key",
        );
    }

    if let Some(l) = other_leader {
        if role == PgRole::Primary {
            if paused {
                return Decision::none(format!(
                    "PAUSE: running as primary while {l} holds the leader key"
                ));
            }
            return Decision::act(
                vec![Action::Demote {
                    mode: DemoteMode::ImmediateNoLock,
                    then_follow: Some(l.clone()),
                }],
                format!("demoting: {l} holds the leader key"),
            );
        }
        if let Some((tl, fork, pos)) = diverged(obs, cluster) {
            let leader_ready = cluster
                .members
                .get(&l)
                .is_some_and(|m| m.value.is_primary() && !m.value.conn_url.is_empty());
            if obs.settings.use_pg_rewind && leader_ready {
                return Decision::act(
                    vec![Action::RewindAndFollow { leader: l.clone() }],
                    format!(
                        "my WAL on timeline {tl} goes past its fork at {} (mine: {}): rewinding against {l}",
                        Lsn(fork),
                        Lsn(pos)
                    ),
                );
            }
            if !obs.settings.use_pg_rewind {
                return Decision::none(format!(
                    "my WAL on timeline {tl} goes past its fork at {} (mine: {}) and use_pg_rewind is off: I cannot follow {l}; reinitialize me (tandem reinit) or turn use_pg_rewind on",
                    Lsn(fork),
                    Lsn(pos)
                ));
            }
        }
        if obs.pg.following.as_deref() != Some(l.as_str()) {
            if !cluster
                .members
                .get(&l)
                .is_some_and(|m| m.value.is_primary() && !m.value.conn_url.is_empty())
            {
                return Decision::none(format!(
                    "waiting for the new leader {l} to finish its promotion"
                ));
            }
            if obs.pg.former_primary && obs.settings.use_pg_rewind {
                return Decision::act(
                    vec![Action::RewindAndFollow { leader: l.clone() }],
                    format!("former primary rejoining: rewinding against {l}"),
                );
            }
            return Decision::act(
                vec![Action::Follow { leader: l.clone() }],
                format!("following new leader {l}"),
            );
        }
        return Decision::none(format!("no action: I am ({me}) a replica, following {l}"));
    }

    // No leader key.
    if !lease_usable(obs) {
        if role == PgRole::Primary && !paused {
            return Decision::act(
                vec![Action::Demote {
                    mode: DemoteMode::Offline,
                    then_follow: None,
                }],
                "demoting: the cluster has no leader and my etcd lease is not valid, so I cannot take the key",
            );
        }
        return Decision::none(
            "the cluster has no leader, but I have no valid etcd lease to take the key with: waiting for one",
        );
    }
    if paused {
        if role == PgRole::Primary {
            return Decision::act(
                vec![Action::AcquireLeader],
                "PAUSE: running primary takes the free leader key",
            );
        }
        if cluster.failover_request().and_then(|f| f.member.as_deref()) == Some(me) {
            // Promoted in the same cycle: the key's taking clears the request, and a paused
            // holder that is not primary would otherwise release the key again.
            return Decision::act(
                promotion(obs, cluster, vec![Action::AcquireLeader]),
                "PAUSE: I am the requested failover candidate: taking the leader key and promoting",
            );
        }
        return Decision::none("PAUSE: no leader; not racing while paused");
    }
    if let Some(p) = obs.failsafe.pinged_by.as_deref().filter(|p| *p != me) {
        if role != PgRole::Primary {
            return Decision::none(format!(
                "failsafe: {p} runs as primary and reached me within ttl: not racing for the leader key"
            ));
        }
    }
    match healthiest(obs, cluster, role) {
        Ok(why) => Decision::act(
            vec![Action::AcquireLeader],
            format!("racing for the leader key: {why}"),
        ),
        Err(why) => {
            if role == PgRole::Primary {
                Decision::act(
                    vec![Action::Demote {
                        mode: DemoteMode::ImmediateNoLock,
                        then_follow: None,
                    }],
                    format!("demoting: {why}"),
                )
            } else {
                Decision::none(format!("not racing for the leader key: {why}"))
            }
        }
    }
}

/// A replica whose WAL went past the point where the cluster's history says its timeline ended
/// (it received WAL from a former primary that the new leader never had): it cannot follow the
/// new timeline without pg_rewind (PostgreSQL: "new timeline forked off current database system
/// timeline before current recovery point"). `(timeline, fork, my position)`.
fn diverged(obs: &Observation, cluster: &ClusterView) -> Option<(u64, u64, u64)> {
    if obs.pg.role != Some(PgRole::Replica) {
        return None;
    }
    let (tl, pos) = obs.pg.replay?;
    if tl >= cluster.timeline() {
        return None;
    }
    let fork = cluster
        .history
        .as_ref()?
        .value
        .iter()
        .find(|e| e.timeline == tl)?
        .lsn;
    (pos > fork).then_some((tl, fork, pos))
}

/// `first`, then what synchronous mode needs before a promotion (`/sync` names me, SSN set:
/// spec §4.4), then the promotion.
fn promotion(obs: &Observation, cluster: &ClusterView, mut first: Vec<Action>) -> Vec<Action> {
    first.extend(crate::sync::before_promotion(
        &obs.me,
        cluster,
        obs.sync.managed.is_some(),
    ));
    first.push(Action::Promote);
    first
}

/// Spec §2.2 steps 5–6: a leader whose PostgreSQL has been down longer than
/// `primary_start_timeout` steps down when a failover is possible (some other member could take
/// over); otherwise it keeps the key and keeps trying, as Patroni does.
fn primary_start_overdue(obs: &Observation, cluster: &ClusterView) -> Option<Decision> {
    let down = obs.pg.down_ms?;
    let limit = obs.settings.primary_start_timeout_ms;
    if down < limit {
        return None;
    }
    let target = failover_target(obs, cluster)?;
    Some(Decision::act(
        vec![Action::StepDown],
        format!(
            "stepping down: PostgreSQL has been down for {} s, past primary_start_timeout ({} s), and {target} can take over",
            down / 1000,
            limit / 1000
        ),
    ))
}

/// A member other than me that could take over as leader, judged from the member keys: a
/// running replica that may fail over and is within `maximum_lag_on_failover` of the last
/// known leader position.
/// In synchronous mode only a standby `/sync` names qualifies.
fn failover_target(obs: &Observation, cluster: &ClusterView) -> Option<String> {
    let last = cluster.last_leader_lsn();
    let sync = crate::sync::active(cluster);
    cluster
        .members
        .values()
        .filter(|m| m.name != obs.me)
        .filter(|m| {
            !m.value.is_primary() && matches!(m.value.state.as_str(), "running" | "streaming")
        })
        .filter(|m| m.value.failover_priority() > 0)
        .filter(|m| sync.as_ref().is_none_or(|s| s.is_standby(&m.name)))
        .filter(|m| {
            last.is_none_or(|l| {
                l.saturating_sub(m.value.wal_position()) <= obs.settings.maximum_lag_on_failover
            })
        })
        .map(|m| m.name.clone())
        .next()
}

fn lease_low(obs: &Observation) -> bool {
    obs.lease_remaining_ms
        .is_none_or(|r| r < obs.settings.demote_margin_ms)
}

fn dcs_unreachable(obs: &Observation) -> Decision {
    // A node whose role is unknown is treated as a possible primary: safety first.
    if obs.pg.running && obs.pg.role != Some(PgRole::Replica) {
        if obs.pg.role == Some(PgRole::Primary) && obs.failsafe.peers_accepted {
            return Decision::none(FAILSAFE_KEEP);
        }
        match obs.lease_remaining_ms {
            Some(r) if r >= obs.settings.demote_margin_ms => Decision::none(format!(
                "DCS is not readable but my lease is valid for {} ms: still primary",
                r
            )),
            _ => Decision::act(
                vec![Action::Demote {
                    mode: DemoteMode::Offline,
                    then_follow: None,
                }],
                "demoted self because DCS is not accessible and I was a leader",
            ),
        }
    } else {
        Decision::none("DCS is not accessible")
    }
}

/// Source for a new replica: a running member tagged `clonefrom` (not me, not the leader), else the leader.
fn clone_source(cluster: &ClusterView, me: &str) -> Option<String> {
    let leader = cluster.leader_name()?;
    cluster
        .members
        .values()
        .find(|m| {
            m.name != me
                && m.name != leader
                && m.value.tag_bool("clonefrom")
                && m.value.state == "running"
        })
        .map(|m| m.name.clone())
        .or_else(|| Some(leader.to_string()))
}

/// Spec §2.4: am I the healthiest node to take the leader key? Ok(why) or Err(why not).
fn healthiest(obs: &Observation, cluster: &ClusterView, role: PgRole) -> Result<String, String> {
    let me = obs.me.as_str();
    let my_pos = obs.pg.wal_position.unwrap_or(0);
    // A named candidate counts whether the request was scheduled or not: the leader only steps
    // down once a scheduled time has come.
    let manual = cluster.failover_request().and_then(|f| f.member.clone());

    if role == PgRole::Primary {
        if obs.pg.timeline.is_some_and(|t| t < cluster.timeline()) {
            return Err(format!(
                "my timeline is behind the cluster's ({})",
                cluster.timeline()
            ));
        }
        return Ok("I am already running as primary".into());
    }
    // Spec §2.4: nofailover (step 5) comes before the manual-failover rules (step 6).
    if obs.settings.failover_priority <= 0 {
        return Err("I am not allowed to promote (nofailover)".into());
    }
    // Step 8: with failsafe mode on, a node missing from a non-empty `/failsafe` list was not
    // part of the cluster the last leader knew: it does not race.
    if cluster.dynamic().failsafe_mode
        && cluster
            .failsafe
            .as_ref()
            .is_some_and(|l| !l.is_empty() && !l.contains_key(me))
    {
        return Err("failsafe mode: I am not in the /failsafe member list".into());
    }
    // Spec §2.4 steps 6 and 8, §4.6: with synchronous replication active only the members
    // `/sync` names may take over (the others may lack acknowledged commits), except the
    // candidate of an explicit failover (no `leader` in the request), which the operator chose.
    let sync = crate::sync::active(cluster);
    let quorum_mode = cluster.dynamic().synchronous_quorum;
    if let Some(s) = &sync {
        let explicit_failover = manual.as_deref() == Some(me)
            && cluster
                .failover_request()
                .is_some_and(|f| f.leader.is_none());
        let former_leader = s
            .leader
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(me));
        if quorum_mode && !explicit_failover && !former_leader {
            // Spec §4.5: every acknowledged commit is on some quorum + 1 of the voters; seeing
            // that many voters (me included) not ahead of me, I have them all. A voter still
            // streaming does not count: its upstream may be the former primary, alive without
            // its agent, whose commits it would go on confirming after I promote (bench/chaos:
            // SIGKILL or SIGSTOP of the leader's agent lost commits that way). Once that
            // primary is really gone, its walreceivers stop and the votes count.
            let mut votes = u64::from(s.is_standby(me));
            for p in &obs.peers {
                if s.is_standby(&p.name)
                    && p.answer
                        .as_ref()
                        .is_some_and(|a| !a.is_primary && !a.streaming && a.wal_position <= my_pos)
                {
                    votes += 1;
                }
            }
            if votes < s.quorum + 1 {
                return Err(format!(
                    "quorum commit: {votes} of the /sync voters ({}) answer not ahead of me and no longer streaming, {} needed",
                    if s.standbys.is_empty() {
                        "none".to_string()
                    } else {
                        s.standbys.join(", ")
                    },
                    s.quorum + 1
                ));
            }
        } else if !quorum_mode && !explicit_failover && !s.names(me) {
            return Err(format!(
                "synchronous mode: /sync does not name me (synchronous standbys: {})",
                if s.standbys.is_empty() {
                    "none".to_string()
                } else {
                    s.standbys.join(", ")
                }
            ));
        }
    }
    if let Some(candidate) = &manual {
        if candidate == me {
            return Ok("I am the requested failover candidate".into());
        }
        let healthy = obs
            .peers
            .iter()
            .any(|p| &p.name == candidate && p.answer.is_some());
        if healthy {
            return Err(format!("{candidate} is the requested failover candidate"));
        }
    }
    if cluster.failover_request().and_then(|f| f.leader.as_deref()) == Some(me)
        && obs
            .peers
            .iter()
            .any(|p| p.answer.as_ref().is_some_and(|a| a.failover_priority > 0))
    {
        return Err("I am the leader being switched away from".into());
    }
    if manual.is_none() {
        if let Some(last) = cluster.last_leader_lsn() {
            let lag = last.saturating_sub(my_pos);
            if lag > obs.settings.maximum_lag_on_failover {
                return Err(format!(
                    "my lag ({lag} bytes) exceeds maximum_lag_on_failover ({})",
                    obs.settings.maximum_lag_on_failover
                ));
            }
        }
    }
    if obs.settings.check_timeline && obs.pg.timeline.is_none_or(|t| t < cluster.timeline()) {
        return Err("my timeline is behind the cluster's".into());
    }
    let former_leader = cluster
        .history
        .as_ref()
        .and_then(|h| h.value.last())
        .and_then(|e| e.new_leader.clone());
    for peer in &obs.peers {
        let Some(a) = &peer.answer else { continue };
        if peer.name == me || a.failover_priority <= 0 {
            continue;
        }
        if !quorum_mode && sync.as_ref().is_some_and(|s| !s.names(&peer.name)) {
            continue;
        }
        if a.is_primary {
            return Err(format!("primary ({}) is still alive", peer.name));
        }
        let sync_former_leader = sync
            .as_ref()
            .and_then(|s| s.leader.as_deref())
            .is_some_and(|l| l.eq_ignore_ascii_case(&peer.name));
        if a.wal_position > my_pos && !sync_former_leader {
            return Err(format!(
                "{} is ahead of me ({} > {})",
                peer.name, a.wal_position, my_pos
            ));
        }
        if a.wal_position == my_pos
            && a.failover_priority > obs.settings.failover_priority
            && former_leader.as_deref() != Some(peer.name.as_str())
        {
            return Err(format!(
                "{} is as advanced as me and has a higher failover priority",
                peer.name
            ));
        }
    }
    Ok("I am the healthiest node".into())
}

#[cfg(test)]
mod tests;

/// Spec §2.5, on the leader: act on a pending switchover/failover request.
fn manual_switchover(obs: &Observation, cluster: &ClusterView, paused: bool) -> Option<Decision> {
    // Issue 16 point 5: a value that does not parse is no request (as Patroni reads it); the
    // leader removes it, once, saying what it held.
    if let Some(bad) = cluster.invalid_failover() {
        let reason = format!(
            "removed the failover key: it holds {}, which is no switchover request",
            bad.problem
        );
        return Some(Decision::act(
            vec![Action::ClearFailover {
                reason: reason.clone(),
            }],
            reason,
        ));
    }
    let f = cluster.failover_request()?;
    let me = obs.me.as_str();
    let clear = |reason: String| {
        Some(Decision::act(
            vec![Action::ClearFailover {
                reason: reason.clone(),
            }],
            reason,
        ))
    };
    if let Some(at) = &f.scheduled_at {
        if paused {
            return clear(
                "PAUSE: scheduled switchovers are not allowed while paused: cancelled".into(),
            );
        }
        let Some(at_ms) = crate::time::parse_timestamp_ms(at) else {
            return clear(format!(
                "cancelled the switchover scheduled at an unparsable time ({at})"
            ));
        };
        let loop_wait = obs.settings.loop_wait_ms as i64;
        if at_ms > obs.now_ms {
            return Some(Decision::none(format!(
                "awaiting the switchover scheduled at {at}"
            )));
        }
        if obs.now_ms - at_ms > loop_wait * 3 / 2 + 1000 {
            return clear(format!(
                "cancelled the switchover scheduled at {at}: it is in the past"
            ));
        }
    }
    if f.leader.as_deref().is_some_and(|l| l != me) {
        return clear(format!(
            "cancelled the switchover: it names {} as the leader, but I am",
            f.leader.as_deref().unwrap_or("")
        ));
    }
    match f.member.as_deref() {
        Some(c) if c == me => clear("cancelled the switchover: I am already the leader".into()),
        None if paused => {
            clear("PAUSE: a switchover needs a named candidate while paused: cancelled".into())
        }
        candidate => {
            let last = cluster
                .last_leader_lsn()
                .or(obs.pg.wal_position)
                .unwrap_or(0);
            // Spec §2.5, §4.6: in synchronous mode a switchover goes to a standby `/sync` names.
            // Quorum mode restricts no candidate here: the candidate's race counts the votes.
            let sync = crate::sync::active(cluster)
                .filter(|_| f.leader.is_some() && !cluster.dynamic().synchronous_quorum);
            let healthy: Vec<&str> = obs
                .peers
                .iter()
                .filter(|p| candidate.is_none_or(|c| c == p.name))
                .filter(|p| sync.as_ref().is_none_or(|s| s.is_standby(&p.name)))
                .filter(|p| {
                    p.answer.as_ref().is_some_and(|a| {
                        a.failover_priority > 0
                            && !a.is_primary
                            && last.saturating_sub(a.wal_position)
                                <= obs.settings.maximum_lag_on_failover
                    })
                })
                .map(|p| p.name.as_str())
                .collect();
            if healthy.is_empty() {
                return clear(match candidate {
                    Some(c) if sync.as_ref().is_some_and(|s| !s.is_standby(c)) => format!(
                        "cancelled the switchover: candidate {c} is not a synchronous standby (/sync)"
                    ),
                    Some(c) => format!("cancelled the switchover: candidate {c} is not healthy"),
                    None => "cancelled the switchover: no healthy candidate".into(),
                });
            }
            let to = candidate.map(str::to_string);
            Some(Decision::act(
                vec![Action::Demote {
                    mode: DemoteMode::Graceful,
                    then_follow: to.clone(),
                }],
                format!(
                    "switching over to {}: demoting gracefully",
                    to.as_deref().unwrap_or("the healthiest replica")
                ),
            ))
        }
    }
}
