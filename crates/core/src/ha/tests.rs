//! One test per row of the decision table this crate covers (spec §2.3, §2.4, §2.6, §2.8, §3).

use super::*;
use crate::cluster::{
    FailoverValue, HistoryEntry, LeaderKey, Member, MemberValue, StatusValue, Versioned,
};
use serde_json::json;

const LEASE: i64 = 77;
/// 2024-01-01T10:00:00Z
const NOW: i64 = 1704103200000;

fn settings() -> Settings {
    Settings {
        maximum_lag_on_failover: 1 << 20,
        use_pg_rewind: true,
        check_timeline: false,
        can_bootstrap: true,
        failover_priority: 1,
        demote_margin_ms: 1000,
        loop_wait_ms: 1000,
        primary_start_timeout_ms: 300_000,
    }
}

fn running(role: PgRole, pos: u64) -> LocalPg {
    LocalPg {
        data: DataDir::Initialized {
            sysid: "7000000000000000001".into(),
            was_primary: role == PgRole::Primary,
        },
        running: true,
        role: Some(role),
        wal_position: Some(pos),
        timeline: Some(1),
        following: None,
        former_primary: false,
        down_ms: None,
        replay: None,
    }
}

fn member(name: &str, role: &str) -> (String, Member) {
    let value = MemberValue {
        role: role.into(),
        state: "running".into(),
        api_url: format!("http://{name}/patroni"),
        ..Default::default()
    };
    (
        name.to_string(),
        Member {
            name: name.into(),
            value,
            lease: 1,
        },
    )
}

fn cluster(leader: Option<(&str, i64)>) -> ClusterView {
    ClusterView {
        initialize: Some("7000000000000000001".into()),
        leader: leader.map(|(n, l)| LeaderKey {
            name: n.into(),
            lease: l,
            mod_revision: 1,
        }),
        members: [
            member("a", "primary"),
            member("b", "replica"),
            member("c", "replica"),
        ]
        .into_iter()
        .collect(),
        status: Some(StatusValue {
            optime: Some(1000),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn obs(me: &str, cluster: Option<ClusterView>, pg: LocalPg) -> Observation {
    Observation {
        me: me.into(),
        cluster,
        lease_id: LEASE,
        lease_remaining_ms: Some(3000),
        pg,
        peers: vec![],
        settings: settings(),
        now_ms: NOW,
        failsafe: Default::default(),
        sync: Default::default(),
    }
}

fn peer(name: &str, is_primary: bool, pos: u64) -> PeerStatus {
    PeerStatus {
        name: name.into(),
        answer: Some(PeerAnswer {
            is_primary,
            wal_position: pos,
            failover_priority: 1,
            streaming: false,
        }),
    }
}

fn paused(mut c: ClusterView) -> ClusterView {
    c.config = Some(Versioned {
        value: json!({"pause": true}),
        mod_revision: 3,
    });
    c
}

#[test]
fn leader_with_lock_does_nothing() {
    let d = decide(&obs(
        "a",
        Some(cluster(Some(("a", LEASE)))),
        running(PgRole::Primary, 1000),
    ));
    assert!(d.actions.is_empty(), "{d:?}");
    assert!(d.reason.contains("the leader with the lock"));
}

#[test]
fn leader_whose_lease_runs_out_demotes_offline() {
    let mut o = obs(
        "a",
        Some(cluster(Some(("a", LEASE)))),
        running(PgRole::Primary, 1000),
    );
    o.lease_remaining_ms = Some(400);
    assert_eq!(
        decide(&o).actions,
        vec![Action::Demote {
            mode: DemoteMode::Offline,
            then_follow: None
        }]
    );
    o.lease_remaining_ms = None;
    assert_eq!(
        decide(&o).actions,
        vec![Action::Demote {
            mode: DemoteMode::Offline,
            then_follow: None
        }]
    );
}

#[test]
fn lock_holder_running_as_replica_promotes() {
    let d = decide(&obs(
        "b",
        Some(cluster(Some(("b", LEASE)))),
        running(PgRole::Replica, 1000),
    ));
    assert_eq!(d.actions, vec![Action::Promote]);
}

// ---- DESIGN §4 rules 1 and 2: only a fresh view and a valid lease make or keep a primary ----

#[test]
fn the_lock_holder_does_not_promote_or_start_primary_on_a_lease_about_to_expire() {
    let c = cluster(Some(("b", LEASE)));
    for remaining in [None, Some(0), Some(999)] {
        let mut o = obs("b", Some(c.clone()), running(PgRole::Replica, 1000));
        o.lease_remaining_ms = remaining;
        let d = decide(&o);
        assert!(d.actions.is_empty(), "{remaining:?}: {d:?}");
        assert!(d.reason.contains("not promoting"), "{}", d.reason);
        let mut stopped = running(PgRole::Primary, 1000);
        stopped.running = false;
        stopped.role = None;
        let mut o = obs("b", Some(c.clone()), stopped);
        o.lease_remaining_ms = remaining;
        assert!(decide(&o).actions.is_empty(), "{remaining:?}");
    }
}

#[test]
fn no_leader_race_or_reattach_without_a_valid_lease() {
    // Before the first grant, or right after the keeper saw the lease expire: lease id 0.
    let mut o = obs("b", Some(cluster(None)), running(PgRole::Replica, 1000));
    o.peers = vec![peer("a", false, 0), peer("c", false, 900)];
    assert_eq!(decide(&o).actions, vec![Action::AcquireLeader]);
    o.lease_id = 0;
    let d = decide(&o);
    assert!(d.actions.is_empty(), "{d:?}");
    assert!(d.reason.contains("no valid etcd lease"), "{}", d.reason);
    o.lease_id = LEASE;
    o.lease_remaining_ms = Some(10);
    assert!(decide(&o).actions.is_empty());
    // A running primary with no key and no usable lease stops being writable.
    let mut p = obs("a", Some(cluster(None)), running(PgRole::Primary, 1000));
    p.lease_id = 0;
    assert_eq!(
        decide(&p).actions,
        vec![Action::Demote {
            mode: DemoteMode::Offline,
            then_follow: None
        }]
    );
    // The leader key under my old lease: re-attached only to a valid lease.
    let mut s = obs(
        "a",
        Some(cluster(Some(("a", 5)))),
        running(PgRole::Primary, 1000),
    );
    assert_eq!(decide(&s).actions, vec![Action::ReattachLeader]);
    s.lease_id = 0;
    assert!(decide(&s).actions.is_empty());
}

#[test]
fn a_primary_demoted_in_place_rejoins_the_new_leader_through_pg_rewind() {
    // Cut off, it demoted to read-only when its lease ran out; back, it finds another leader.
    let mut c = cluster(Some(("b", 9)));
    let m = &mut c.members.get_mut("b").unwrap().value;
    m.conn_url = "postgres://b:5432/postgres".into();
    m.role = "primary".into();
    let mut o = obs("a", Some(c), running(PgRole::Replica, 1000));
    o.pg.former_primary = true;
    assert_eq!(
        decide(&o).actions,
        vec![Action::RewindAndFollow { leader: "b".into() }]
    );
    // Without pg_rewind it can only re-point (and a diverged server will not stream).
    o.settings.use_pg_rewind = false;
    assert_eq!(
        decide(&o).actions,
        vec![Action::Follow { leader: "b".into() }]
    );
    // Stopped meanwhile (its read-only restart left standby.signal, so pg_control no longer
    // says primary): still through pg_rewind.
    o.settings.use_pg_rewind = true;
    o.pg.running = false;
    o.pg.role = None;
    o.pg.data = DataDir::Initialized {
        sysid: "7000000000000000001".into(),
        was_primary: false,
    };
    assert_eq!(
        decide(&o).actions,
        vec![Action::RewindAndFollow { leader: "b".into() }]
    );
}

#[test]
fn pause_stored_as_on_holds_the_cluster() {
    // `edit-config -s pause=on` used to store the string "on": the leader's crash must still not
    // be failed over while the cluster says it is paused.
    let mut c = cluster(None);
    c.config = Some(Versioned {
        value: json!({"pause": "on"}),
        mod_revision: 3,
    });
    let mut o = obs("b", Some(c), running(PgRole::Replica, 1000));
    o.peers = vec![peer("a", false, 0), peer("c", false, 900)];
    let d = decide(&o);
    assert!(d.actions.is_empty(), "{d:?}");
    assert!(d.reason.starts_with("PAUSE"), "{}", d.reason);
}

/// Issue 16 point 2: a changed `initialize` made every agent exit and left the primary
/// writable with no agent. Now the leader repairs the key, a primary without the key stops
/// writing first, a running replica waits read-only, and only a stopped node refuses.
#[test]
fn a_wrong_initialize_is_repaired_by_the_leader_and_never_leaves_a_writable_primary() {
    let mut c = cluster(Some(("a", LEASE)));
    c.initialize = Some("7000000000000000099".into());
    let o = obs("a", Some(c.clone()), running(PgRole::Primary, 1000));
    assert_eq!(
        decide(&o).actions,
        vec![Action::RepairInitialize {
            sysid: "7000000000000000001".into(),
            found: "7000000000000000099".into()
        }]
    );
    // A primary that does not hold the key: stop writing.
    let mut other = c.clone();
    other.leader = Some(LeaderKey {
        name: "b".into(),
        lease: 9,
        mod_revision: 1,
    });
    let o = obs("a", Some(other.clone()), running(PgRole::Primary, 1000));
    assert!(matches!(
        decide(&o).actions[..],
        [Action::Demote {
            mode: DemoteMode::Offline,
            ..
        }]
    ));
    // A running replica waits for the leader's repair.
    let o = obs("c", Some(other.clone()), running(PgRole::Replica, 1000));
    let d = decide(&o);
    assert!(
        d.actions.is_empty() && d.reason.contains("waiting for the leader to repair"),
        "{d:?}"
    );
    // A stopped node with data of another system refuses, as before.
    let mut stopped = running(PgRole::Replica, 1000);
    stopped.running = false;
    stopped.role = None;
    let o = obs("c", Some(other), stopped);
    assert!(matches!(decide(&o).actions[..], [Action::Refuse { .. }]));
}

#[test]
fn primary_without_lock_demotes_and_follows() {
    let d = decide(&obs(
        "a",
        Some(cluster(Some(("b", 9)))),
        running(PgRole::Primary, 1000),
    ));
    assert_eq!(
        d.actions,
        vec![Action::Demote {
            mode: DemoteMode::ImmediateNoLock,
            then_follow: Some("b".into())
        }]
    );
}

#[test]
fn replica_follows_new_leader_then_rests() {
    let mut c = cluster(Some(("b", 9)));
    c.members.get_mut("b").unwrap().value.conn_url = "postgres://b:5432/postgres".into();
    let mut o = obs("c", Some(c.clone()), running(PgRole::Replica, 1000));
    o.pg.following = Some("a".into());
    // b still reports itself as a replica: wait for its promotion (so its slots exist).
    assert!(decide(&o).reason.contains("waiting for the new leader b"));
    o.cluster
        .as_mut()
        .unwrap()
        .members
        .get_mut("b")
        .unwrap()
        .value
        .role = "primary".into();
    assert_eq!(
        decide(&o).actions,
        vec![Action::Follow { leader: "b".into() }]
    );
    o.pg.following = Some("b".into());
    let d = decide(&o);
    assert!(d.actions.is_empty());
    assert!(d.reason.contains("following b"));
}

#[test]
fn dcs_unreachable_primary_keeps_running_while_lease_valid_then_demotes() {
    let mut o = obs("a", None, running(PgRole::Primary, 1000));
    assert!(decide(&o).actions.is_empty());
    o.lease_remaining_ms = Some(10);
    assert_eq!(
        decide(&o).actions,
        vec![Action::Demote {
            mode: DemoteMode::Offline,
            then_follow: None
        }]
    );
    let r = obs("b", None, running(PgRole::Replica, 1000));
    assert!(decide(&r).actions.is_empty());
}

#[test]
fn healthiest_replica_races() {
    let mut o = obs("b", Some(cluster(None)), running(PgRole::Replica, 1000));
    o.peers = vec![
        peer("c", false, 1000),
        PeerStatus {
            name: "a".into(),
            answer: None,
        },
    ];
    assert_eq!(decide(&o).actions, vec![Action::AcquireLeader]);
}

#[test]
fn replica_behind_a_peer_does_not_race() {
    let mut o = obs("b", Some(cluster(None)), running(PgRole::Replica, 900));
    o.peers = vec![peer("c", false, 1000)];
    let d = decide(&o);
    assert!(d.actions.is_empty());
    assert!(d.reason.contains("ahead of me"), "{}", d.reason);
}

#[test]
fn replica_does_not_race_while_primary_alive() {
    let mut o = obs("b", Some(cluster(None)), running(PgRole::Replica, 1000));
    o.peers = vec![peer("a", true, 1000)];
    assert!(decide(&o).reason.contains("still alive"));
}

#[test]
fn lagging_replica_does_not_race() {
    let mut o = obs("b", Some(cluster(None)), running(PgRole::Replica, 1000));
    o.cluster.as_mut().unwrap().status = Some(StatusValue {
        optime: Some(10 << 20),
        ..Default::default()
    });
    let d = decide(&o);
    assert!(
        d.actions.is_empty() && d.reason.contains("maximum_lag_on_failover"),
        "{d:?}"
    );
}

#[test]
fn nofailover_never_races() {
    let mut o = obs("b", Some(cluster(None)), running(PgRole::Replica, 1000));
    o.settings.failover_priority = 0;
    assert!(decide(&o).reason.contains("nofailover"));
}

#[test]
fn equal_position_higher_priority_peer_wins() {
    let mut o = obs("b", Some(cluster(None)), running(PgRole::Replica, 1000));
    o.peers = vec![PeerStatus {
        name: "c".into(),
        answer: Some(PeerAnswer {
            is_primary: false,
            wal_position: 1000,
            failover_priority: 5,
            streaming: false,
        }),
    }];
    assert!(decide(&o).actions.is_empty());
}

#[test]
fn named_failover_candidate_races_and_others_defer() {
    let mut c = cluster(None);
    c.failover = Some(Versioned {
        value: FailoverValue {
            leader: None,
            member: Some("c".into()),
            scheduled_at: None,
        },
        mod_revision: 4,
    });
    let mut b = obs("b", Some(c.clone()), running(PgRole::Replica, 1000));
    b.peers = vec![peer("c", false, 900)];
    assert!(decide(&b).actions.is_empty());
    let mut cc = obs("c", Some(c), running(PgRole::Replica, 900));
    cc.peers = vec![peer("b", false, 1000)];
    assert_eq!(decide(&cc).actions, vec![Action::AcquireLeader]);
}

#[test]
fn stale_primary_without_lock_and_behind_timeline_demotes() {
    let mut c = cluster(None);
    c.history = Some(Versioned {
        value: vec![HistoryEntry {
            timeline: 1,
            lsn: 5,
            reason: "x".into(),
            timestamp: None,
            new_leader: Some("b".into()),
        }],
        mod_revision: 2,
    });
    let d = decide(&obs("a", Some(c), running(PgRole::Primary, 1000)));
    assert_eq!(
        d.actions,
        vec![Action::Demote {
            mode: DemoteMode::ImmediateNoLock,
            then_follow: None
        }]
    );
}

#[test]
fn primary_without_leader_key_on_current_timeline_takes_it() {
    let d = decide(&obs(
        "a",
        Some(cluster(None)),
        running(PgRole::Primary, 1000),
    ));
    assert_eq!(d.actions, vec![Action::AcquireLeader]);
}

#[test]
fn empty_node_bootstraps_only_when_there_is_no_cluster() {
    let mut pg = running(PgRole::Replica, 0);
    pg.data = DataDir::Empty;
    pg.running = false;
    let mut c = ClusterView::default();
    assert_eq!(
        decide(&obs("a", Some(c.clone()), pg.clone())).actions,
        vec![Action::BootstrapRace]
    );
    c.initialize = Some(String::new());
    assert!(decide(&obs("a", Some(c.clone()), pg.clone()))
        .reason
        .contains("waiting"));
    let mut o = obs("a", Some(ClusterView::default()), pg.clone());
    o.settings.can_bootstrap = false;
    assert!(decide(&o).actions.is_empty());
    let mut o = obs("a", Some(ClusterView::default()), pg.clone());
    o.settings.failover_priority = 0;
    assert!(decide(&o).actions.is_empty());
}

#[test]
fn empty_node_clones_from_leader_or_clonefrom_member() {
    let mut pg = running(PgRole::Replica, 0);
    pg.data = DataDir::Empty;
    pg.running = false;
    let mut c = cluster(Some(("a", 9)));
    c.members.remove("c");
    assert_eq!(
        decide(&obs("c", Some(c.clone()), pg.clone())).actions,
        vec![Action::Clone { from: "a".into() }]
    );
    c.members
        .get_mut("b")
        .unwrap()
        .value
        .tags
        .insert("clonefrom".into(), json!(true));
    assert_eq!(
        decide(&obs("c", Some(c), pg)).actions,
        vec![Action::Clone { from: "b".into() }]
    );
}

#[test]
fn sysid_mismatch_is_refused() {
    let mut c = cluster(Some(("a", 9)));
    c.initialize = Some("7999999999999999999".into());
    // A node whose PostgreSQL is not running, with data of another system (a running replica
    // waits for the leader to repair the key instead: see below).
    let mut pg = running(PgRole::Replica, 1);
    pg.running = false;
    pg.role = None;
    let d = decide(&obs("b", Some(c), pg));
    assert!(
        matches!(&d.actions[..], [Action::Refuse { reason }] if reason.contains("7999999999999999999") && reason.contains("move the data directory"))
    );
}

#[test]
fn first_attach_writes_initialize_and_replica_cannot_start_cluster() {
    let mut c = cluster(None);
    c.initialize = None;
    let d = decide(&obs("a", Some(c.clone()), running(PgRole::Primary, 1)));
    assert_eq!(
        d.actions,
        vec![Action::WriteInitialize {
            sysid: "7000000000000000001".into()
        }]
    );
    let d = decide(&obs("b", Some(c), running(PgRole::Replica, 1)));
    assert!(matches!(&d.actions[..], [Action::Refuse { .. }]));
}

#[test]
fn stopped_postgres_recovery_paths() {
    let mut pg = running(PgRole::Primary, 1);
    pg.running = false;
    pg.role = None;
    // I hold the lock and was primary: restart in place.
    assert_eq!(
        decide(&obs("a", Some(cluster(Some(("a", LEASE)))), pg.clone())).actions,
        vec![Action::StartPrimary]
    );
    // Someone else leads: rewind then follow.
    assert_eq!(
        decide(&obs("a", Some(cluster(Some(("b", 9)))), pg.clone())).actions,
        vec![Action::RewindAndFollow { leader: "b".into() }]
    );
    // Without pg_rewind: plain start as replica.
    let mut o = obs("a", Some(cluster(Some(("b", 9)))), pg.clone());
    o.settings.use_pg_rewind = false;
    assert_eq!(
        decide(&o).actions,
        vec![Action::StartReplica {
            leader: Some("b".into())
        }]
    );
    // No leader: start read-only, race later.
    assert_eq!(
        decide(&obs("a", Some(cluster(None)), pg.clone())).actions,
        vec![Action::StartReplica { leader: None }]
    );
    // A replica's data: follow the leader.
    pg.data = DataDir::Initialized {
        sysid: "7000000000000000001".into(),
        was_primary: false,
    };
    assert_eq!(
        decide(&obs("c", Some(cluster(Some(("b", 9)))), pg)).actions,
        vec![Action::StartReplica {
            leader: Some("b".into())
        }]
    );
}

#[test]
fn leader_key_from_my_previous_lease_is_reattached() {
    let d = decide(&obs(
        "a",
        Some(cluster(Some(("a", 5)))),
        running(PgRole::Primary, 1),
    ));
    assert_eq!(d.actions, vec![Action::ReattachLeader]);
}

#[test]
fn pause_blocks_automatic_actions() {
    // No race while paused.
    let mut o = obs(
        "b",
        Some(paused(cluster(None))),
        running(PgRole::Replica, 1000),
    );
    o.peers = vec![peer("c", false, 10)];
    assert!(decide(&o).actions.is_empty());
    // No restart of a stopped PostgreSQL.
    let mut pg = running(PgRole::Replica, 1);
    pg.running = false;
    assert!(decide(&obs("b", Some(paused(cluster(Some(("a", 9))))), pg))
        .actions
        .is_empty());
    // No demotion of a primary without lock, and no lease-based demotion.
    assert!(decide(&obs(
        "a",
        Some(paused(cluster(Some(("b", 9))))),
        running(PgRole::Primary, 1)
    ))
    .actions
    .is_empty());
    let mut o = obs(
        "a",
        Some(paused(cluster(Some(("a", LEASE))))),
        running(PgRole::Primary, 1),
    );
    o.lease_remaining_ms = Some(0);
    assert!(decide(&o).actions.is_empty());
    // A running primary takes a free key.
    assert_eq!(
        decide(&obs(
            "a",
            Some(paused(cluster(None))),
            running(PgRole::Primary, 1)
        ))
        .actions,
        vec![Action::AcquireLeader]
    );
}

#[test]
fn unanswering_postgres_waits_unless_the_lease_runs_out() {
    let mut pg = running(PgRole::Primary, 1);
    pg.role = None;
    let mut o = obs("a", Some(cluster(Some(("a", LEASE)))), pg.clone());
    assert!(
        decide(&o).actions.is_empty(),
        "must not promote a server whose role is unknown"
    );
    o.lease_remaining_ms = Some(1);
    assert_eq!(
        decide(&o).actions,
        vec![Action::Demote {
            mode: DemoteMode::Offline,
            then_follow: None
        }]
    );
    let mut o = obs("a", None, pg);
    o.lease_remaining_ms = Some(1);
    assert_eq!(
        decide(&o).actions,
        vec![Action::Demote {
            mode: DemoteMode::Offline,
            then_follow: None
        }]
    );
}

fn with_failover(
    mut c: ClusterView,
    leader: Option<&str>,
    member: Option<&str>,
    at: Option<&str>,
) -> ClusterView {
    c.failover = Some(Versioned {
        value: FailoverValue {
            leader: leader.map(Into::into),
            member: member.map(Into::into),
            scheduled_at: at.map(Into::into),
        },
        mod_revision: 9,
    });
    c
}

fn leader_obs(c: ClusterView) -> Observation {
    let mut o = obs("a", Some(c), running(PgRole::Primary, 1000));
    o.peers = vec![peer("b", false, 1000), peer("c", false, 1000)];
    o
}

#[test]
fn switchover_to_a_healthy_candidate_demotes_gracefully() {
    let d = decide(&leader_obs(with_failover(
        cluster(Some(("a", LEASE))),
        Some("a"),
        Some("b"),
        None,
    )));
    assert_eq!(
        d.actions,
        vec![Action::Demote {
            mode: DemoteMode::Graceful,
            then_follow: Some("b".into())
        }]
    );
    // Without a named candidate: any healthy replica will do.
    let d = decide(&leader_obs(with_failover(
        cluster(Some(("a", LEASE))),
        Some("a"),
        None,
        None,
    )));
    assert_eq!(
        d.actions,
        vec![Action::Demote {
            mode: DemoteMode::Graceful,
            then_follow: None
        }]
    );
}

#[test]
fn switchover_requests_that_cannot_be_honoured_are_cleared() {
    let cases = [
        (Some("x"), Some("b"), None, "names x"),
        (Some("a"), Some("a"), None, "already the leader"),
        (Some("a"), Some("zz"), None, "not healthy"),
        (Some("a"), Some("b"), Some("garbage"), "unparsable"),
        (
            Some("a"),
            Some("b"),
            Some("2024-01-01T09:00:00+00:00"),
            "in the past",
        ),
    ];
    for (leader, member, at, why) in cases {
        let d = decide(&leader_obs(with_failover(
            cluster(Some(("a", LEASE))),
            leader,
            member,
            at,
        )));
        assert!(
            matches!(&d.actions[..], [Action::ClearFailover { reason }] if reason.contains(why)),
            "{why}: {d:?}"
        );
    }
    // A lagging candidate is not healthy.
    let mut o = leader_obs(with_failover(
        cluster(Some(("a", LEASE))),
        Some("a"),
        Some("b"),
        None,
    ));
    o.cluster.as_mut().unwrap().status = Some(StatusValue {
        optime: Some(100 << 20),
        ..Default::default()
    });
    assert!(matches!(
        &decide(&o).actions[..],
        [Action::ClearFailover { .. }]
    ));
}

#[test]
fn scheduled_switchover_waits_for_its_time() {
    let d = decide(&leader_obs(with_failover(
        cluster(Some(("a", LEASE))),
        Some("a"),
        Some("b"),
        Some("2024-01-01T10:05:00+00:00"),
    )));
    assert!(
        d.actions.is_empty() && d.reason.contains("awaiting"),
        "{d:?}"
    );
    let d = decide(&leader_obs(with_failover(
        cluster(Some(("a", LEASE))),
        Some("a"),
        Some("b"),
        Some("2024-01-01T10:00:00+00:00"),
    )));
    assert_eq!(
        d.actions,
        vec![Action::Demote {
            mode: DemoteMode::Graceful,
            then_follow: Some("b".into())
        }]
    );
    // Refused while paused.
    let d = decide(&leader_obs(paused(with_failover(
        cluster(Some(("a", LEASE))),
        Some("a"),
        Some("b"),
        Some("2024-01-01T10:00:00+00:00"),
    ))));
    assert!(matches!(&d.actions[..], [Action::ClearFailover { .. }]));
}

#[test]
fn paused_switchover_needs_a_candidate_and_only_it_may_take_the_lock() {
    let d = decide(&leader_obs(paused(with_failover(
        cluster(Some(("a", LEASE))),
        Some("a"),
        None,
        None,
    ))));
    assert!(matches!(&d.actions[..], [Action::ClearFailover { .. }]));
    let d = decide(&leader_obs(paused(with_failover(
        cluster(Some(("a", LEASE))),
        Some("a"),
        Some("b"),
        None,
    ))));
    assert_eq!(
        d.actions,
        vec![Action::Demote {
            mode: DemoteMode::Graceful,
            then_follow: Some("b".into())
        }]
    );
    let c = paused(with_failover(cluster(None), Some("a"), Some("b"), None));
    assert_eq!(
        decide(&obs("b", Some(c.clone()), running(PgRole::Replica, 1000))).actions,
        vec![Action::AcquireLeader, Action::Promote]
    );
    // Holding the key as a replica, the candidate promotes (it does not release the key).
    let mut held = c.clone();
    held.leader = Some(LeaderKey {
        name: "b".into(),
        lease: LEASE,
        mod_revision: 2,
    });
    assert_eq!(
        decide(&obs("b", Some(held), running(PgRole::Replica, 1000))).actions,
        vec![Action::Promote]
    );
    assert!(decide(&obs("c", Some(c), running(PgRole::Replica, 1000)))
        .actions
        .is_empty());
}

#[test]
fn former_leader_does_not_race_during_a_switchover() {
    let c = with_failover(cluster(None), Some("a"), None, None);
    let mut o = obs("a", Some(c), running(PgRole::Replica, 1000));
    o.peers = vec![peer("b", false, 1000)];
    assert!(
        decide(&o).reason.contains("switched away"),
        "{:?}",
        decide(&o)
    );
}

// ---- failsafe mode (spec §2.6) ----

#[test]
fn failsafe_primary_cut_off_from_etcd_keeps_running_only_when_every_member_accepted() {
    let mut o = obs("a", None, running(PgRole::Primary, 1000));
    o.lease_remaining_ms = None;
    // Not confirmed by the others: demote, as without failsafe.
    assert_eq!(
        decide(&o).actions,
        vec![Action::Demote {
            mode: DemoteMode::Offline,
            then_follow: None
        }]
    );
    o.failsafe.peers_accepted = true;
    let d = decide(&o);
    assert!(d.actions.is_empty(), "{d:?}");
    assert!(
        d.reason.contains("failsafe mode is enabled"),
        "{}",
        d.reason
    );
}

#[test]
fn failsafe_leader_whose_keepalives_fail_keeps_running_when_confirmed() {
    let mut o = obs(
        "a",
        Some(cluster(Some(("a", LEASE)))),
        running(PgRole::Primary, 1000),
    );
    o.lease_remaining_ms = Some(100);
    o.failsafe.peers_accepted = true;
    assert!(decide(&o).actions.is_empty());
    o.failsafe.peers_accepted = false;
    assert!(matches!(decide(&o).actions[..], [Action::Demote { .. }]));
}

#[test]
fn failsafe_replica_pinged_by_a_live_primary_does_not_race() {
    let mut o = obs("b", Some(cluster(None)), running(PgRole::Replica, 1000));
    o.peers = vec![peer("a", false, 0), peer("c", false, 900)];
    assert_eq!(decide(&o).actions, vec![Action::AcquireLeader]);
    o.failsafe.pinged_by = Some("a".into());
    let d = decide(&o);
    assert!(d.actions.is_empty(), "{d:?}");
    assert!(
        d.reason.contains("failsafe: a runs as primary"),
        "{}",
        d.reason
    );
    // A ping that names myself proves nothing.
    o.failsafe.pinged_by = Some("b".into());
    assert_eq!(decide(&o).actions, vec![Action::AcquireLeader]);
}

/// Spec §2.2 steps 5–6 (trust issue point 6): a leader whose PostgreSQL stays down past
/// `primary_start_timeout` hands the key over when a replica can take it, and only then.
#[test]
fn leader_whose_postgres_stays_down_past_primary_start_timeout_steps_down() {
    let mut pg = running(PgRole::Primary, 1000);
    pg.running = false;
    pg.role = None;
    pg.down_ms = Some(299_000);
    let c = || Some(cluster(Some(("a", LEASE))));
    // Within the timeout: keep trying to start.
    assert_eq!(
        decide(&obs("a", c(), pg.clone())).actions,
        vec![Action::StartPrimary]
    );
    // Past it, with healthy replicas: step down.
    pg.down_ms = Some(300_000);
    let d = decide(&obs("a", c(), pg.clone()));
    assert_eq!(d.actions, vec![Action::StepDown], "{d:?}");
    assert!(d.reason.contains("primary_start_timeout"), "{}", d.reason);
    // Running but not answering queries counts as down too.
    let mut hung = pg.clone();
    hung.running = true;
    assert_eq!(
        decide(&obs("a", c(), hung.clone())).actions,
        vec![Action::StepDown]
    );
    // primary_start_timeout 0: at once.
    let mut o = obs("a", c(), pg.clone());
    o.pg.down_ms = Some(0);
    o.settings.primary_start_timeout_ms = 0;
    assert_eq!(decide(&o).actions, vec![Action::StepDown]);
    // No replica that could take over (nofailover everywhere, or too far behind): keep the key.
    let mut lonely = cluster(Some(("a", LEASE)));
    for m in lonely.members.values_mut().filter(|m| m.name != "a") {
        m.value
            .tags
            .insert("nofailover".into(), serde_json::Value::Bool(true));
    }
    assert_eq!(
        decide(&obs("a", Some(lonely), pg.clone())).actions,
        vec![Action::StartPrimary]
    );
    let mut behind = cluster(Some(("a", LEASE)));
    behind.status = Some(StatusValue {
        optime: Some(1 << 30),
        ..Default::default()
    });
    assert_eq!(
        decide(&obs("a", Some(behind), pg.clone())).actions,
        vec![Action::StartPrimary]
    );
    // Paused: PostgreSQL is left alone (the key is released as before, never a step-down).
    let mut o = obs("a", Some(paused(cluster(Some(("a", LEASE))))), hung);
    o.pg.down_ms = Some(900_000);
    assert!(!decide(&o).actions.contains(&Action::StepDown));
}

/// Issue 16 point 5: an unparsable `failover` value is removed by the leader (no request).
#[test]
fn the_leader_removes_an_unparsable_failover_value() {
    let mut c = cluster(Some(("a", LEASE)));
    c.invalid.insert(
        "failover".into(),
        crate::cluster::InvalidValue {
            mod_revision: 9,
            problem: "a value that is not UTF-8".into(),
        },
    );
    let d = decide(&obs("a", Some(c.clone()), running(PgRole::Primary, 1000)));
    assert!(
        matches!(&d.actions[..], [Action::ClearFailover { reason }] if reason.contains("not UTF-8")),
        "{d:?}"
    );
    // A replica leaves it to the leader.
    assert!(decide(&obs("b", Some(c), running(PgRole::Replica, 1000)))
        .actions
        .is_empty());
}
