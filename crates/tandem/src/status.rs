//! The agent's view of itself, published after every HA cycle and read by the REST API
//! (and anything else that reports on the node). Plain data, cheap to clone.

use serde_json::{Map, Value};
use std::time::Instant;
use tandem_core::cluster::ClusterView;

/// One row of `pg_stat_replication` on a primary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicationRow {
    pub usename: String,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub sync_state: String,
    pub sync_priority: i32,
    pub write_lsn: Option<u64>,
    pub flush_lsn: Option<u64>,
    pub replay_lsn: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeStatus {
    /// Patroni's PostgreSQL state: running, starting, stopped, stopping, crashed, creating replica,
    /// initializing new cluster, start failed, restarting, ...
    pub pg_state: String,
    /// primary, replica, demoted, uninitialized (Patroni's member-key role names).
    pub role: String,
    /// `YYYY-MM-DD HH:MM:SS.ffffff+TZ`.
    pub postmaster_start_time: Option<String>,
    /// e.g. 150018.
    pub server_version: Option<u32>,
    /// Primary: current flush LSN.
    pub wal_location: Option<u64>,
    /// Replica: received / replayed LSN, last replayed transaction time, replay paused.
    pub received_location: Option<u64>,
    pub replayed_location: Option<u64>,
    pub replayed_timestamp: Option<String>,
    pub replay_paused: bool,
    pub timeline: Option<u64>,
    /// Replica: `streaming` or `in archive recovery`.
    pub replication_state: Option<String>,
    /// Primary: its walsenders.
    pub replication: Vec<ReplicationRow>,
    pub database_system_identifier: Option<String>,
    /// The node holds the leader key, and its lease is valid until this instant.
    pub leader_until: Option<Instant>,
    /// Last cluster view read from etcd, and when (unix seconds).
    pub cluster: Option<ClusterView>,
    pub dcs_last_seen: Option<u64>,
    pub paused: bool,
    /// Tags as published in the member key.
    pub tags: Map<String, Value>,
    /// When the HA loop last completed a cycle (for /liveness).
    pub last_cycle: Option<Instant>,
    /// When the PostgreSQL part of this status was last queried.
    pub observed_at: Option<Instant>,
    /// From the dynamic config.
    pub ttl_secs: u64,
    pub maximum_lag_on_failover: u64,
    pub pending_restart: bool,
    /// Failsafe mode keeps this primary running while etcd cannot (spec §2.6).
    pub failsafe_active: bool,
}

impl NodeStatus {
    /// Holds the leader key right now.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.leader_until.is_some_and(|t| t > now)
    }
    pub fn is_running(&self) -> bool {
        self.pg_state == "running"
    }
}
