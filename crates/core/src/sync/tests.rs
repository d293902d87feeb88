use super::*;
use crate::cluster::{Member, MemberValue, Versioned};
use serde_json::json;

fn member(name: &str, role: &str, tags: Value) -> Member {
    Member {
        name: name.to_string(),
        value: MemberValue {
            state: "running".into(),
            role: role.into(),
            tags: tags.as_object().cloned().unwrap_or_default(),
            ..Default::default()
        },
        lease: 1,
    }
}

/// node1 primary, node2 and node3 replicas, `config` and `/sync` as given.
fn view(config: Value, sync: Option<Value>) -> ClusterView {
    let mut v = ClusterView {
        config: Some(Versioned {
            value: config,
            mod_revision: 5,
        }),
        sync: sync.map(|s| Versioned {
            value: s,
            mod_revision: 9,
        }),
        ..Default::default()
    };
    for (n, r) in [
        ("node1", "primary"),
        ("node2", "replica"),
        ("node3", "replica"),
    ] {
        v.members.insert(n.into(), member(n, r, json!({})));
    }
    v
}

fn row(name: &str, sync_state: &str, lsn: u64) -> StandbyRow {
    StandbyRow {
        name: name.into(),
        state: "streaming".into(),
        sync_state: sync_state.into(),
        lsn,
    }
}

fn on() -> Value {
    json!({"synchronous_mode": true})
}

#[test]
fn sync_value_round_trips_in_patronis_form() {
    let s = SyncState::new("node1", vec!["node3".into(), "node2".into()]);
    assert_eq!(
        s.to_json(),
        r#"{"leader":"node1","quorum":0,"sync_standby":"node2,node3"}"#
    );
    assert_eq!(
        SyncState::parse(&serde_json::from_str(&s.to_json()).unwrap()).unwrap(),
        s
    );
    assert_eq!(
        SyncState::new("node1", vec![]).to_json(),
        r#"{"leader":"node1","quorum":0,"sync_standby":null}"#
    );
    assert!(SyncState::parse(&json!([1]))
        .unwrap_err()
        .contains("not a JSON object"));
    assert!(SyncState::parse(&json!({"sync_standby": 3}))
        .unwrap_err()
        .contains("sync_standby"));
    assert!(SyncState::parse(&json!({"leader": "A"}))
        .unwrap()
        .names("a"));
}

#[test]
fn ssn_quotes_and_counts_as_patroni_writes_it() {
    assert_eq!(ssn_value(&["node2".into()], 1), "node2");
    assert_eq!(ssn_value(&["postgres-1".into()], 1), "\"postgres-1\"");
    assert_eq!(ssn_value(&["first".into()], 1), "\"first\"");
    assert_eq!(ssn_value(&["b".into(), "a".into()], 2), "2 (a,b)");
    assert_eq!(ssn_value(&["b".into(), "a".into()], 1), "1 (a,b)");
    assert_eq!(ssn_value(&[], 1), "");
    assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
}

#[test]
fn enabling_writes_sync_first_then_ssn_then_confirms() {
    // Step 1: no /sync yet: write it (create only if absent), naming no standby.
    let v = view(on(), None);
    let obs = SyncObs {
        standbys: vec![row("node2", "async", 100), row("node3", "async", 90)],
        ..Default::default()
    };
    let (a, _) = primary_duties("node1", 100, &v, &obs).unwrap();
    assert_eq!(
        a,
        vec![Action::WriteSync {
            state: SyncState::new("node1", vec![]),
            revision: None
        }]
    );
    // Step 2: SSN names the most advanced candidate; /sync untouched.
    let v = view(on(), Some(json!({"leader": "node1", "sync_standby": null})));
    let (a, _) = primary_duties("node1", 100, &v, &obs).unwrap();
    assert_eq!(
        a,
        vec![Action::SetSsn {
            value: Some("node2".into())
        }]
    );
    // Step 3: PostgreSQL reports node2 synchronous, but it has not reached the position of the
    // SSN change yet: not named in /sync.
    let mut obs = SyncObs {
        standbys: vec![row("node2", "sync", 100), row("node3", "async", 90)],
        ssn: "node2".into(),
        managed: Some("node2".into()),
        ssn_changed_lsn: 150,
    };
    assert_eq!(primary_duties("node1", 160, &v, &obs), None);
    // Step 4: it has: /sync names it.
    obs.standbys[0].lsn = 150;
    let (a, _) = primary_duties("node1", 160, &v, &obs).unwrap();
    assert_eq!(
        a,
        vec![Action::WriteSync {
            state: SyncState::new("node1", vec!["node2".into()]),
            revision: Some(9)
        }]
    );
    // Steady state.
    let v = view(
        on(),
        Some(json!({"leader": "node1", "sync_standby": "node2"})),
    );
    assert_eq!(primary_duties("node1", 160, &v, &obs), None);
}

#[test]
fn a_standby_that_leaves_is_removed_from_sync_before_ssn_changes() {
    let v = view(
        on(),
        Some(json!({"leader": "node1", "sync_standby": "node2"})),
    );
    let obs = SyncObs {
        standbys: vec![row("node3", "async", 100)],
        ssn: "node2".into(),
        managed: Some("node2".into()),
        ssn_changed_lsn: 50,
    };
    let (a, why) = primary_duties("node1", 100, &v, &obs).unwrap();
    assert_eq!(
        a,
        vec![
            Action::WriteSync {
                state: SyncState::new("node1", vec![]),
                revision: Some(9)
            },
            Action::SetSsn {
                value: Some("node3".into())
            }
        ]
    );
    assert!(why.contains("node2"), "{why}");
}

#[test]
fn strict_mode_keeps_naming_the_last_standby_and_uses_the_placeholder() {
    let cfg = json!({"synchronous_mode": true, "synchronous_mode_strict": true});
    // Both replicas gone: /sync unchanged, SSN keeps node2 (commits wait for it).
    let v = view(
        cfg.clone(),
        Some(json!({"leader": "node1", "sync_standby": "node2"})),
    );
    let obs = SyncObs {
        ssn: "node2".into(),
        managed: Some("node2".into()),
        ..Default::default()
    };
    assert_eq!(primary_duties("node1", 100, &v, &obs), None);
    // Nobody was ever synchronous: the placeholder.
    let v = view(cfg, Some(json!({"leader": "node1", "sync_standby": null})));
    let (a, _) = primary_duties("node1", 100, &v, &SyncObs::default()).unwrap();
    assert_eq!(
        a,
        vec![Action::SetSsn {
            value: Some(PLACEHOLDER.into())
        }]
    );
}

#[test]
fn candidates_honour_tags_priority_count_and_lag() {
    let mut v = view(
        json!({"synchronous_mode": true, "synchronous_node_count": 2, "maximum_lag_on_syncnode": 10}),
        None,
    );
    v.members.insert(
        "node4".into(),
        member("node4", "replica", json!({"nosync": true})),
    );
    v.members.insert(
        "node5".into(),
        member("node5", "replica", json!({"sync_priority": 0})),
    );
    v.members.insert(
        "node6".into(),
        member("node6", "replica", json!({"sync_priority": 5})),
    );
    v.members.insert(
        "node7".into(),
        member("node7", "replica", json!({"nofailover": true})),
    );
    let rows = vec![
        row("node2", "async", 100),
        row("node3", "async", 80), // lags 20 > 10
        row("node4", "async", 100),
        row("node5", "async", 100),
        row("node6", "async", 95),
        row("node7", "async", 100),
        row("stranger", "async", 100),
    ];
    let cfg = v.dynamic();
    let c = candidates("node1", 100, &v, &cfg, &SyncState::default(), &rows);
    assert_eq!(c, vec!["node6".to_string(), "node2".to_string()]);
    // An already-synchronous standby is preferred over an equally placed one.
    let cur = SyncState::new("node1", vec!["node7".into()]);
    let cfg1 = DynamicConfig {
        synchronous_node_count: 1,
        maximum_lag_on_syncnode: -1,
        ..cfg.clone()
    };
    let rows2 = vec![row("node2", "async", 100), row("node3", "sync", 100)];
    let cur3 = SyncState::new("node1", vec!["node3".into()]);
    assert_eq!(
        candidates("node1", 100, &v, &cfg1, &cur3, &rows2),
        vec!["node3".to_string()]
    );
    // nofailover members come last.
    let rows3 = vec![row("node7", "async", 100), row("node3", "async", 50)];
    assert_eq!(
        candidates("node1", 100, &v, &cfg1, &cur, &rows3),
        vec!["node3".to_string()]
    );
}

#[test]
fn turning_synchronous_mode_off_deletes_sync_and_returns_ssn() {
    let v = view(
        json!({}),
        Some(json!({"leader": "node1", "sync_standby": "node2"})),
    );
    let obs = SyncObs {
        managed: Some("node2".into()),
        ..Default::default()
    };
    let (a, _) = primary_duties("node1", 100, &v, &obs).unwrap();
    assert_eq!(
        a,
        vec![
            Action::DeleteSync { revision: 9 },
            Action::SetSsn { value: None }
        ]
    );
    assert_eq!(
        primary_duties("node1", 100, &view(json!({}), None), &SyncObs::default()),
        None
    );
}

#[test]
fn a_promotion_writes_sync_before_and_strict_names_the_former_members() {
    let sync = json!({"leader": "node1", "sync_standby": "node2"});
    let v = view(on(), Some(sync.clone()));
    assert_eq!(
        before_promotion("node2", &v, false),
        vec![
            Action::WriteSync {
                state: SyncState::new("node2", vec![]),
                revision: Some(9)
            },
            Action::SetSsn {
                value: Some(String::new())
            }
        ]
    );
    let v = view(
        json!({"synchronous_mode": true, "synchronous_mode_strict": true}),
        Some(sync),
    );
    assert_eq!(
        before_promotion("node2", &v, false)[1],
        Action::SetSsn {
            value: Some("node1".into())
        }
    );
    assert!(before_promotion("node2", &view(json!({}), None), false).is_empty());
}
