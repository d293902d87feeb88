//! `GET /metrics`: Prometheus text format with Patroni's metric names (spec §5.6), labelled
//! `{scope="…",name="…"}`, followed by a few of tandem's own.

use super::{tandem_version, Identity, PATRONI_COMPAT_VERSION};
use crate::listing::{sync_mode, sync_standbys, SyncMode};
use crate::status::NodeStatus;
use std::fmt::Write as _;
use std::time::Instant;
use tandem_core::dynamic::parse_bool;

/// `4.1.5` → `040105`.
pub fn padded_semver(v: &str) -> String {
    v.split('.')
        .take(3)
        .map(|p| format!("{:02}", p.parse::<u32>().unwrap_or(0)))
        .collect()
}

/// Seconds since the epoch of a PostgreSQL timestamp (`2024-01-01 10:00:00.123456+00`, the
/// `+00:00` and ISO forms too).
pub fn epoch_seconds(ts: &str) -> Option<f64> {
    let t = ts.trim();
    let parsed = chrono::DateTime::parse_from_rfc3339(t)
        .or_else(|_| chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .or_else(|_| chrono::DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%#z"))
        .ok()?;
    Some(parsed.timestamp() as f64 + f64::from(parsed.timestamp_subsec_micros()) / 1e6)
}

/// PostgreSQL state as Patroni's `patroni_postgres_state` number.
pub fn state_number(state: &str) -> i64 {
    match state {
        "initializing new cluster" => 0,
        "initdb failed" => 1,
        "running custom bootstrap script" => 2,
        "custom bootstrap failed" => 3,
        "creating replica" => 4,
        "running" => 5,
        "starting" => 6,
        "starting after custom bootstrap" => 7,
        "start failed" => 8,
        "restarting" => 9,
        "restart failed" => 10,
        "stopping" => 11,
        "stopped" => 12,
        "stop failed" => 13,
        "crashed" => 14,
        _ => -1,
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn metric(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        let _ = writeln!(self.text, "{name}{} {value}", self.labels);
    }
}

/// The whole `/metrics` text.
pub fn render(st: &NodeStatus, node: &Identity, now: Instant) -> String {
    let mut o = Out {
        text: String::new(),
        labels: format!(
            "{{scope=\"{}\",name=\"{}\"}}",
            escape(&node.scope),
            escape(&node.name)
        ),
    };
    let b = |x: bool| u8::from(x);
    let role = super::role(st);
    let running = st.is_running();
    let view = st.cluster.as_ref();
    let in_sync = view.is_some_and(|v| sync_standbys(v).contains(&node.name));
    let quorum = view.is_some_and(|v| sync_mode(v) == SyncMode::Quorum);
    let config = view.and_then(|v| v.config.as_ref()).map(|c| &c.value);
    let failsafe_enabled = config
        .and_then(|c| c.get("failsafe_mode"))
        .and_then(parse_bool)
        .unwrap_or(false);

    o.metric(
        "patroni_version",
        "gauge",
        "Patroni semver without periods (the Patroni version tandem is compatible with).",
        padded_semver(PATRONI_COMPAT_VERSION),
    );
    o.metric(
        "patroni_postgres_running",
        "gauge",
        "Value is 1 if Postgres is running, 0 otherwise.",
        b(running),
    );
    o.metric(
        "patroni_postmaster_start_time",
        "gauge",
        "Epoch seconds since Postgres started.",
        st.postmaster_start_time
            .as_deref()
            .and_then(epoch_seconds)
            .unwrap_or(0.0),
    );
    o.metric(
        "patroni_primary",
        "gauge",
        "Value is 1 if this node is the leader, 0 otherwise.",
        b(role == "primary"),
    );
    o.metric(
        "patroni_xlog_location",
        "counter",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        if role == "primary" {
            st.wal_location.unwrap_or(0)
        } else {
            0
        },
    );
    o.metric(
        "patroni_standby_leader",
        "gauge",
        "Value is 1 if this node is the standby_leader, 0 otherwise.",
        b(role == "standby_leader"),
    );
    o.metric(
        "patroni_replica",
        "gauge",
        "Value is 1 if this node is a replica, 0 otherwise.",
        b(role == "replica"),
    );
    o.metric(
        "patroni_sync_standby",
        "gauge",
        "Value is 1 if this node is a sync standby, 0 otherwise.",
        b(in_sync && !quorum),
    );
    o.metric(
        "patroni_quorum_standby",
        "gauge",
        "Value is 1 if this node is a quorum standby, 0 otherwise.",
        b(in_sync && quorum),
    );
    o.metric(
        "patroni_xlog_received_location",
        "counter",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        st.received_location.unwrap_or(0),
    );
    o.metric(
        "patroni_xlog_replayed_location",
        "counter",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        st.replayed_location.unwrap_or(0),
    );
    o.metric(
        "patroni_xlog_replayed_timestamp",
        "gauge",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        st.replayed_timestamp
            .as_deref()
            .and_then(epoch_seconds)
            .unwrap_or(0.0),
    );
    o.metric(
        "patroni_xlog_paused",
        "gauge",
        "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
        b(st.replay_paused),
    );
    let rs = st.replication_state.as_deref();
    o.metric(
        "patroni_postgres_streaming",
        "gauge",
        "Value is 1 if Postgres is streaming, 0 otherwise.",
        b(rs == Some("streaming")),
    );
    o.metric(
        "patroni_postgres_in_archive_recovery",
        "gauge",
        "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
        b(rs == Some("in archive recovery")),
    );
    o.metric(
        "patroni_postgres_server_version",
        "gauge",
        "Version of Postgres (if running), 0 otherwise.",
        st.server_version.unwrap_or(0),
    );
    o.metric(
        "patroni_cluster_unlocked",
        "gauge",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        b(view.is_none_or(|v| v.leader.is_none())),
    );
    o.metric(
        "patroni_failsafe_mode_is_active",
        "gauge",
        "Value is 1 if failsafe mode is active, 0 if inactive.",
        b(st.failsafe_active),
    );
    o.metric(
        "patroni_failsafe_mode_enabled",
        "gauge",
        "Value is 1 if failsafe mode is enabled, 0 otherwise.",
        b(failsafe_enabled),
    );
    o.metric(
        "patroni_postgres_timeline",
        "gauge",
        "Postgres timeline of this node (if running), 0 otherwise.",
        st.timeline.unwrap_or(0),
    );
    o.metric(
        "patroni_dcs_last_seen",
        "gauge",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        st.dcs_last_seen.unwrap_or(0),
    );
    o.metric(
        "patroni_pending_restart",
        "gauge",
        "Value is 1 if the node needs a restart, 0 otherwise.",
        b(st.pending_restart),
    );
    o.metric(
        "patroni_is_paused",
        "gauge",
        "Value is 1 if auto failover is disabled, 0 otherwise.",
        b(st.paused),
    );
    o.metric(
        "patroni_postgres_state",
        "gauge",
        "Numeric representation of Postgres state.",
        state_number(&st.pg_state),
    );
    let nofailover = st.tags.get("nofailover").and_then(parse_bool) == Some(true);
    let priority = if nofailover {
        0
    } else {
        st.tags
            .get("failover_priority")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(1)
    };
    o.metric(
        "patroni_failover_priority",
        "gauge",
        "Value of the failover priority of this node (0 when it may not be promoted).",
        priority,
    );

    // tandem's own.
    o.metric(
        "tandem_leader_lease_remaining_seconds",
        "gauge",
        "Seconds left on the leader lease this node holds, 0 if it holds none.",
        format!(
            "{:.3}",
            st.leader_until
                .map(|t| t.saturating_duration_since(now).as_secs_f64())
                .unwrap_or(0.0)
        ),
    );
    o.metric(
        "tandem_ha_loop_last_cycle_age_seconds",
        "gauge",
        "Seconds since the HA loop last completed a cycle (-1 before the first one).",
        st.last_cycle
            .map(|t| format!("{:.3}", now.saturating_duration_since(t).as_secs_f64()))
            .unwrap_or_else(|| "-1".into()),
    );
    o.metric(
        "tandem_cluster_members",
        "gauge",
        "Members registered in the DCS as this node last read it.",
        view.map(|v| v.members.len()).unwrap_or(0),
    );
    let lag = match (view.and_then(|v| v.last_leader_lsn()), st.replayed_location) {
        (Some(o), Some(r)) if role != "primary" => o.saturating_sub(r),
        _ => 0,
    };
    o.metric(
        "tandem_replication_lag_bytes",
        "gauge",
        "Bytes this replica's replay position is behind the leader's last published position.",
        lag,
    );
    // Days to the end of each certificate in use (registered at start-up; empty otherwise).
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    o.text.push_str(&crate::tlscheck::expiry_metrics(
        &crate::tlscheck::in_use(),
        o.labels.trim_start_matches('{').trim_end_matches('}'),
        unix_now,
    ));
    let _ = writeln!(
        o.text,
        "# HELP tandem_info tandem build information.\n# TYPE tandem_info gauge\ntandem_info{{scope=\"{}\",name=\"{}\",version=\"{}\"}} 1",
        escape(&node.scope),
        escape(&node.name),
        tandem_version()
    );
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(padded_semver("4.1.5"), "040105");
        assert_eq!(padded_semver("10.0"), "1000");
        assert_eq!(
            epoch_seconds("2024-01-01 00:00:01.5+00"),
            Some(1_704_067_201.5)
        );
        assert_eq!(
            epoch_seconds("2024-01-01 02:00:01+02:00"),
            Some(1_704_067_201.0)
        );
        assert_eq!(epoch_seconds("yesterday"), None);
        assert_eq!(state_number("running"), 5);
        assert_eq!(state_number("who knows"), -1);
    }

    #[test]
    fn every_metric_has_help_type_and_labels() {
        let st = NodeStatus {
            pg_state: "running".into(),
            role: "primary".into(),
            wal_location: Some(42),
            postmaster_start_time: Some("2024-01-01 00:00:00.000000+00".into()),
            ..Default::default()
        };
        let node = Identity {
            scope: "batman".into(),
            name: "pg\"0".into(),
        };
        let text = render(&st, &node, Instant::now());
        assert!(text.contains("patroni_version{scope=\"batman\",name=\"pg\\\"0\"} 040105\n"));
        assert!(text.contains("patroni_primary{scope=\"batman\",name=\"pg\\\"0\"} 1\n"));
        assert!(text.contains("patroni_xlog_location{scope=\"batman\",name=\"pg\\\"0\"} 42\n"));
        assert!(text.contains(
            "patroni_postmaster_start_time{scope=\"batman\",name=\"pg\\\"0\"} 1704067200\n"
        ));
        assert!(text.contains("# TYPE patroni_xlog_location counter\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split('{').next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
