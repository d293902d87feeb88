//! `tandem agent`: observe → `ha::decide` → act, on every event (etcd watch, lease change, timer).
//!
//! The lease keepalive runs in its own task (`dcs::Lease`), so a slow action or a long HA cycle never
//! lets the leader key expire by accident; the leader demotes itself when its lease deadline
//! (measured from the send time of the last successful keepalive) gets within `demote_margin`.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_core::cluster::{ClusterView, HistoryEntry, MemberValue, StatusValue};
use tandem_core::dynamic::{merge_patch, DynamicConfig, Timing, TANDEM_DEFAULT_DCS};
use tandem_core::ha::{
    self, Action, DataDir, DemoteMode, LocalPg, Observation, PeerStatus, PgRole, Settings,
};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::callbacks::Event;
use crate::config::Config;
use crate::control::{Reply, Request, RestartConditions};
use crate::dcs::{Dcs, LeaderProof, Lease};
use crate::peer::PeerClient;
use crate::pg::{PgStatus, Postgres, Upstream};
use crate::status::NodeStatus;

/// Least time between a switchover's start and the old primary's fast stop (see
/// `demote_gracefully`); the CHECKPOINT before the stop counts towards it.
const SWITCHOVER_AUTH_GRACE: Duration = Duration::from_millis(200);
/// The version published in member keys and `/patroni`, so Patroni's tools treat us as a current peer.
pub const PATRONI_COMPAT_VERSION: &str = "4.1.5";

struct Agent {
    cfg: Arc<Config>,
    dcs: Dcs,
    pg: Postgres,
    lease: Lease,
    lease_ttl: Arc<Mutex<Duration>>,
    lease_interval: Arc<Mutex<Duration>>,
    dynamic: DynamicConfig,
    dynamic_revision: i64,
    timing: Timing,
    /// The client for other members' REST APIs; the REST server shares it.
    peer: PeerClient,
    /// The REST server's certificates, shared with it; replaced on reload.
    api_tls: crate::api::ServerTls,
    status_tx: watch::Sender<NodeStatus>,
    /// Patroni's PostgreSQL state string.
    pg_state: String,
    following: Option<String>,
    sysid: Option<String>,
    last_pg: Option<PgStatus>,
    last_member: Option<(String, i64)>,
    last_status_key: Option<String>,
    last_slots: Option<Vec<String>>,
    last_reason: String,
    last_cycle: Option<Instant>,
    /// Read etcd directly next cycle (after my own writes, the cache may lag behind).
    force_read: bool,
    /// `POST /failsafe` received by the REST server (failsafe mode).
    failsafe_pings: crate::control::FailsafePings,
    /// This primary runs on failsafe mode's say-so (etcd unreachable, every member confirmed).
    failsafe_active: bool,
    /// Members seen recently: their slots are kept for `member_slots_ttl` after they vanish,
    /// so a node that restarts finds its slot (and its WAL) still there.
    seen_members: std::collections::BTreeMap<String, Instant>,
    config_path: Option<std::path::PathBuf>,
    inbox: crate::control::Inbox,
    scheduled_restart: Option<ScheduledRestart>,
    /// The next clone (after a reinitialize) must come from the leader.
    reinit_from_leader: bool,
    last_full_observation: Instant,
    last_seen_seq: u64,
    /// A lease switch whose answer was lost: (new lease, grant sent at, its ttl).
    unresolved_switch: Option<(i64, Instant, Duration)>,
    /// When the cycle's etcd view was read, and when my member key was last written.
    view_read_at: Instant,
    last_member_at: Option<Instant>,
    /// Stops PostgreSQL on its own if it is still writable when the lease is about to end.
    fence: crate::fence::Fence,
    /// The cause of the last failed clone, logged once (not again on every retry).
    last_clone_error: Option<String>,
    /// PostgreSQL was demoted from primary to read-only in place and not rewound or re-cloned
    /// since (`LocalPg::former_primary`).
    former_primary: bool,
    /// Since when PostgreSQL has been continuously down: not running, or running without
    /// answering queries (`LocalPg::down_ms`).
    pg_down_since: Option<Instant>,
    /// A restart request's `timeout`: replaces `primary_start_timeout` until PostgreSQL answers.
    start_timeout_override: Option<Duration>,
    /// `postgresql.callbacks`.
    callbacks: crate::callbacks::Callbacks,
    /// PostgreSQL was running when the agent started: `on_start` fires once it answers.
    adopted_running: bool,
    /// The timeline whose `history` this agent wrote last.
    history_written: Option<u64>,
    /// A reinitialize runs (wiped, clone not finished): shared with the REST server.
    reinitializing: crate::control::Reinitializing,
    /// The primary's flush position once a change of `synchronous_standby_names` was in effect
    /// (`u64::MAX` while it is not yet): a standby reaches it before `/sync` names it.
    ssn_changed_lsn: u64,
    /// The highest timeline this replica's walreceiver streamed, for this postmaster (its start
    /// time): the replay timeline is known at least that far when it stops streaming.
    streamed_tli: Option<(String, u64)>,
    /// Each change of the managed SSN has a number; the last one a `CHECKPOINT` requested after
    /// it completed for, and whether one runs (see `sync_observation`).
    ssn_generation: u64,
    ssn_checkpointed: Arc<std::sync::atomic::AtomicU64>,
    ssn_checkpoint_running: Arc<std::sync::atomic::AtomicBool>,
}

/// Idle cycles reuse the last PostgreSQL status for at most this long.
const QUICK_CYCLE_MAX_AGE: Duration = Duration::from_secs(5);

struct ScheduledRestart {
    at_ms: i64,
    schedule: String,
    conditions: RestartConditions,
    /// Cancelled if the postmaster restarted meanwhile.
    postmaster_start_time: Option<String>,
}

/// In the data directory: this server was demoted from primary in place (`set_former_primary`).
const FORMER_PRIMARY_MARKER: &str = "tandem.former_primary";

/// Bootstrap dynamic configuration: tandem's defaults with `bootstrap.dcs` on top.
pub fn bootstrap_dynamic(cfg: &Config) -> Value {
    let mut v: Value = serde_json::from_str(TANDEM_DEFAULT_DCS)
        .unwrap_or_else(|_| Value::Object(Default::default()));
    merge_patch(&mut v, &cfg.bootstrap.dcs);
    v
}

pub async fn run(cfg: Config) -> Result<()> {
    run_with_path(cfg, None).await
}

/// Runs the agent; `path` is re-read on SIGHUP and `POST /reload`.
pub async fn run_with_path(cfg: Config, path: Option<std::path::PathBuf>) -> Result<()> {
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let cfg = Arc::new(cfg);
    // Its problems were reported (or refused) when the file was loaded.
    let (dynamic, _) = DynamicConfig::from_json(&bootstrap_dynamic(&cfg));
    if let Some(e) = dynamic.unimplemented().first() {
        return Err(anyhow!("bootstrap.dcs.{e}"));
    }
    let timing = dynamic.timing();
    let dcs = Dcs::connect(&cfg.etcd3, &cfg.base_path(), timing.request_timeout).await?;
    let mut shutdown = shutdown_signal();

    // Wait until the cluster can be read.
    let cluster = loop {
        match dcs.read_cluster().await {
            Ok((c, _)) => break c,
            Err(e) => {
                warn!("waiting for etcd: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
    };
    if let Some(e) = cluster.dynamic().unimplemented().first() {
        return Err(anyhow!(
            "the cluster's dynamic configuration in etcd asks for what tandem does not do: {e} (change it with tandem edit-config)"
        ));
    }
    let peer = PeerClient::for_daemon(&cfg)?;
    // Unique name: refuse to start when a live agent already uses my name.
    if let Some(m) = cluster.members.get(&cfg.name) {
        let url = m.value.api_url.replace("/patroni", "/liveness");
        if peer
            .request(reqwest::Method::GET, &url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .is_ok()
        {
            return Err(anyhow!(
                "another agent named '{}' is already running in cluster '{}' (its REST API answers at {}): give this node a unique `name`, or stop the other one",
                cfg.name,
                cfg.scope,
                m.value.api_url
            ));
        }
    }

    // The lease is granted with the cluster's ttl when it has one (else the next cycle would
    // switch to it at once), the bootstrap ttl otherwise.
    let timing = if cluster.config.is_some() {
        cluster.dynamic().timing()
    } else {
        timing
    };
    let lease_ttl = Arc::new(Mutex::new(timing.ttl));
    let lease_interval = Arc::new(Mutex::new(timing.keepalive_interval));
    let lease = Lease::start(dcs.clone(), lease_ttl.clone(), lease_interval.clone());
    let (status_tx, status_rx) = watch::channel(NodeStatus::default());
    let (control, inbox) = crate::control::channel();
    let failsafe_pings = control.failsafe_pings();
    let reinitializing = control.reinitializing();
    let (api_stop_tx, api_stop_rx) = watch::channel(false);
    let listener = crate::api::bind(&cfg).await?;
    let api_tls = crate::api::ServerTls::new(&cfg.restapi)?;
    let api_task = tokio::spawn(crate::api::serve(crate::api::Serve {
        cfg: cfg.clone(),
        status: status_rx,
        listener,
        shutdown: api_stop_rx,
        control,
        dcs: dcs.clone(),
        tls: api_tls.clone(),
        peer: peer.clone(),
    }));

    let fence = crate::fence::Fence::start(lease.clone(), Postgres::new(&cfg).data_dir.clone());
    let (cfg_callbacks, cfg_scope) = (cfg.postgresql.callbacks.clone(), cfg.scope.clone());
    let mut agent = Agent {
        unresolved_switch: None,
        view_read_at: Instant::now(),
        last_member_at: None,
        fence,
        pg: Postgres::new(&cfg),
        cfg: cfg.clone(),
        dcs: dcs.clone(),
        lease,
        lease_ttl,
        lease_interval,
        dynamic,
        dynamic_revision: -1,
        timing,
        peer,
        api_tls,
        status_tx,
        pg_state: "stopped".into(),
        following: None,
        sysid: None,
        last_pg: None,
        last_member: None,
        last_status_key: None,
        last_slots: None,
        last_reason: String::new(),
        last_cycle: None,
        force_read: true,
        failsafe_pings,
        failsafe_active: false,
        seen_members: Default::default(),
        config_path: path,
        inbox,
        scheduled_restart: None,
        reinit_from_leader: false,
        last_full_observation: Instant::now(),
        last_seen_seq: 0,
        last_clone_error: None,
        former_primary: false,
        pg_down_since: None,
        start_timeout_override: None,
        callbacks: crate::callbacks::Callbacks::new(&cfg_callbacks, &cfg_scope),
        adopted_running: false,
        history_written: None,
        reinitializing,
        ssn_changed_lsn: u64::MAX,
        streamed_tli: None,
        ssn_generation: 0,
        ssn_checkpointed: Default::default(),
        ssn_checkpoint_running: Default::default(),
    };
    agent.former_primary = agent.pg.data_dir.join(FORMER_PRIMARY_MARKER).exists();
    agent
        .pg
        .write_pgpass(&[])
        .context("cannot write postgresql.pgpass")?;
    if agent.pg.is_running() {
        info!(
            "PostgreSQL is already running on {}: adopting it",
            agent.pg.data_dir.display()
        );
        agent.adopted_running = true;
    }
    // Nothing is decided before the first lease is granted: the leader key and the member key
    // are bound to it, and a decision on lease 0 could write a key that never expires.
    while agent.lease.info().id == 0 {
        let granted = agent.lease.changed.clone();
        tokio::select! {
            _ = granted.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => {
                let _ = api_stop_tx.send(true);
                api_task.abort();
                return Ok(());
            }
        }
    }
    let mut changes = dcs.spawn_cache();
    let result = agent.main_loop(&mut changes, &mut shutdown).await;
    let _ = api_stop_tx.send(true);
    api_task.abort();
    match result {
        Ok(()) => {
            agent.shutdown().await;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => info!("received SIGTERM: shutting down"),
            _ = int.recv() => info!("received SIGINT: shutting down"),
        }
        let _ = tx.send(true);
    });
    rx
}

impl Agent {
    async fn main_loop(
        &mut self,
        changes: &mut watch::Receiver<crate::dcs::CacheState>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<()> {
        let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let changed = {
                let state = changes.borrow_and_update();
                let changed = state.seq != self.last_seen_seq || !state.synced;
                self.last_seen_seq = state.seq;
                changed
            };
            let (acted, failed) = self.cycle(changed).await?;
            self.force_read = acted;
            if acted && !failed {
                continue;
            }
            // After a failed action, wait out loop_wait: this node's own key writes (its state
            // changed) would otherwise wake the loop at once and retry in a tight loop (seen: a
            // failing clone retried every 10 ms).
            let wake_on_changes = !failed;
            let deadline = tokio::time::Instant::now() + self.timing.loop_wait;
            loop {
                let lease_changed = self.lease.changed.clone();
                let danger = self.lease_danger();
                let request = tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => None,
                    _ = changes.changed(), if wake_on_changes => None,
                    _ = lease_changed.notified() => None,
                    _ = shutdown.changed() => None,
                    _ = danger => None,
                    r = self.inbox.recv() => r,
                    _ = sighup.recv() => Some((Request::Reload, tokio::sync::oneshot::channel().0)),
                };
                let Some((req, reply_to)) = request else {
                    break;
                };
                let refresh = req == Request::Refresh;
                let reply = self.handle(req).await;
                let _ = reply_to.send(reply);
                if !refresh {
                    self.force_read = true;
                    break;
                }
                // A status refresh needs no HA cycle: keep waiting.
            }
        }
    }

    /// Resolves when a leader's lease gets within the demotion margin (so the check is not
    /// bound to `loop_wait`).
    fn lease_danger(&self) -> impl std::future::Future<Output = ()> + 'static {
        let holds = self.status_tx.borrow().leader_until.is_some();
        let delay = match self.lease.remaining(Instant::now()) {
            Some(r) if holds && r > self.timing.demote_margin => {
                Some(r - self.timing.demote_margin + Duration::from_millis(5))
            }
            _ => None,
        };
        async move {
            match delay {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover,
            use_pg_rewind: self
                .cfg
                .postgresql
                .use_pg_rewind
                .unwrap_or(self.dynamic.use_pg_rewind),
            check_timeline: self.dynamic.check_timeline,
            can_bootstrap: self.cfg.bootstrap.present,
            failover_priority: if self.cfg.tags.can_failover() {
                self.cfg.tags.failover_priority.unwrap_or(1)
            } else {
                0
            },
            demote_margin_ms: self.timing.demote_margin.as_millis() as u64,
            loop_wait_ms: self.timing.loop_wait.as_millis() as u64,
            primary_start_timeout_ms: self
                .start_timeout_override
                .unwrap_or(Duration::from_secs(self.dynamic.primary_start_timeout))
                .as_millis() as u64,
        }
    }

    async fn apply_dynamic(&mut self, cluster: &ClusterView) {
        let Some(c) = &cluster.config else { return };
        if c.mod_revision == self.dynamic_revision {
            return;
        }
        let (d, warnings) = DynamicConfig::from_json(&c.value);
        for w in warnings {
            warn!("cluster configuration: {w}");
        }
        for e in d.unimplemented() {
            error!("cluster configuration: {e}");
        }
        let first = self.dynamic_revision < 0;
        self.dynamic_revision = c.mod_revision;
        let timing = d.timing();
        if !first
            && self.pg.is_running()
            && self.pg.parameters(&d) != self.pg.parameters(&self.dynamic)
        {
            info!("cluster configuration changed: reloading PostgreSQL");
            let upstream = self.current_upstream(cluster);
            let upstream_ref = upstream.as_ref().map(|u| u.as_ref());
            if let Err(e) = self.pg.write_config(&d, upstream_ref) {
                warn!("{e:#}");
            }
            match self.pg.reload().await {
                Ok(()) => self.fire_reload(),
                Err(e) => warn!("{e:#}"),
            }
        }
        if let Ok(mut t) = self.lease_ttl.lock() {
            *t = timing.ttl;
        }
        if let Ok(mut i) = self.lease_interval.lock() {
            *i = timing.keepalive_interval;
        }
        self.timing = timing;
        self.dynamic = d;
    }

    fn fire_reload(&self) {
        let role = match self.last_pg.as_ref().map(|s| s.in_recovery) {
            Some(false) => "primary",
            _ => "replica",
        };
        self.callbacks.fire(Event::OnReload, role);
    }

    /// Upstream for write_config: None = primary, Some(None) = standby without upstream.
    fn current_upstream(&self, cluster: &ClusterView) -> Option<Option<Upstream>> {
        match self.last_pg.as_ref().map(|s| s.in_recovery) {
            Some(false) => None,
            _ => Some(
                self.following
                    .as_deref()
                    .and_then(|l| upstream_of(cluster, l)),
            ),
        }
    }

    async fn observe_pg(&mut self) -> LocalPg {
        self.observe_pg_with(false).await
    }

    /// `quick`: when nothing happened since the last full observation (a few seconds ago) and the
    /// postmaster is alive, reuse the last status instead of querying PostgreSQL (idle CPU).
    async fn observe_pg_with(&mut self, quick: bool) -> LocalPg {
        let running = self.pg.is_running();
        let mut status = None;
        if running && quick && self.last_pg.is_some() && self.pg_state == "running" {
            status = self.last_pg.clone();
        } else if running {
            self.last_full_observation = Instant::now();
            match self.pg.status().await {
                Ok(s) => status = Some(s),
                Err(e) => {
                    self.pg.drop_client().await;
                    tracing::debug!("status query failed: {e:#}");
                }
            }
            if self.pg_state != "running" && status.is_some() {
                self.pg_state = "running".into();
            } else if status.is_none() && self.pg_state == "running" {
                self.pg_state = "starting".into();
            }
        } else if matches!(self.pg_state.as_str(), "running" | "starting") {
            self.pg_state = if self.pg.has_data() {
                "crashed".into()
            } else {
                "stopped".into()
            };
        }
        let data = if !self.pg.has_data() {
            self.sysid = None;
            DataDir::Empty
        } else if running && self.sysid.is_some() {
            DataDir::Initialized {
                sysid: self.sysid.clone().unwrap_or_default(),
                was_primary: status.as_ref().is_some_and(|s| !s.in_recovery),
            }
        } else {
            match self.pg.controldata().await {
                Ok(cd) => {
                    let sysid = cd
                        .get("Database system identifier")
                        .cloned()
                        .unwrap_or_default();
                    self.sysid = Some(sysid.clone());
                    let state = cd
                        .get("Database cluster state")
                        .map(String::as_str)
                        .unwrap_or("");
                    let was_primary = matches!(
                        state,
                        "in production" | "shut down" | "in crash recovery" | "shutting down"
                    ) && !self.pg.data_dir.join("standby.signal").exists();
                    DataDir::Initialized { sysid, was_primary }
                }
                Err(e) => {
                    warn!("cannot read pg_control: {e:#}");
                    DataDir::Initialized {
                        sysid: self.sysid.clone().unwrap_or_default(),
                        was_primary: false,
                    }
                }
            }
        };
        self.last_pg = status.clone();
        self.update_fence();
        let local = LocalPg {
            data,
            running,
            role: status.as_ref().map(|s| {
                if s.in_recovery {
                    PgRole::Replica
                } else {
                    PgRole::Primary
                }
            }),
            wal_position: status.as_ref().map(|s| s.wal_position),
            timeline: status.as_ref().and_then(|s| s.timeline),
            following: self.following.clone(),
            former_primary: self.former_primary,
            down_ms: None,
            replay: status.as_ref().and_then(|s| self.replay_point(s)),
        };
        let mut local = local;
        if self.adopted_running {
            if let Some(role) = local.role {
                self.adopted_running = false;
                self.callbacks.fire(Event::OnStart, role_name(role));
            }
        }
        if local.role.is_some() {
            self.pg_down_since = None;
            self.start_timeout_override = None;
        } else {
            let since = *self.pg_down_since.get_or_insert_with(Instant::now);
            local.down_ms = Some(since.elapsed().as_millis() as u64);
        }
        self.last_pg = status;
        local
    }

    async fn probe_peers(&self, cluster: &ClusterView) -> Vec<PeerStatus> {
        let timeout = (self.timing.ttl / 2).min(Duration::from_secs(2));
        let probes = cluster
            .members
            .values()
            .filter(|m| m.name != self.cfg.name && !m.value.api_url.is_empty())
            .map(|m| {
                let peer = &self.peer;
                async move {
                    PeerStatus {
                        name: m.name.clone(),
                        answer: peer.probe_member(&m.value.api_url, timeout).await,
                    }
                }
            });
        futures_util::future::join_all(probes).await
    }

    /// Failsafe mode (spec §2.6), only when `failsafe_mode` is on: who pinged me lately, and —
    /// when I run as primary and cannot keep my lease — whether every other member named in
    /// `/failsafe` accepts my `POST /failsafe` right now.
    async fn failsafe_observation(
        &self,
        cluster: Option<&ClusterView>,
        pg: &LocalPg,
    ) -> tandem_core::ha::FailsafeObs {
        let mut f = tandem_core::ha::FailsafeObs::default();
        if !self.dynamic.failsafe_mode {
            return f;
        }
        f.pinged_by = self.failsafe_pings.recent(self.timing.ttl);
        let lease_low = self
            .lease
            .remaining(Instant::now())
            .is_none_or(|r| r < self.timing.demote_margin);
        if pg.running && pg.role == Some(PgRole::Primary) && (cluster.is_none() || lease_low) {
            let view = cluster
                .cloned()
                .or_else(|| self.status_tx.borrow().cluster.clone());
            match view.and_then(|v| v.failsafe) {
                Some(list) => f.peers_accepted = self.failsafe_probe(&list).await,
                None => warn!(
                    "failsafe: no /failsafe member list was read from etcd: cannot ask the members"
                ),
            }
        }
        f
    }

    /// `POST /failsafe` to every other member of `list` (2 s each, all at once): true when I am
    /// in the list and every other member answers 200.
    async fn failsafe_probe(&self, list: &BTreeMap<String, String>) -> bool {
        let me = &self.cfg.name;
        if !list.contains_key(me) {
            return false;
        }
        let mv = self.member_value();
        let body = serde_json::json!({
            "name": me,
            "conn_url": mv.conn_url,
            "api_url": mv.api_url,
            "slots": {},
        });
        let posts = list
            .iter()
            .filter(|(n, _)| *n != me)
            .map(|(name, api_url)| {
                let url = match api_url.strip_suffix("/patroni") {
                    Some(base) => format!("{base}/failsafe"),
                    None => format!("{}/failsafe", api_url.trim_end_matches('/')),
                };
                let body = body.clone();
                async move {
                    let ok = self
                        .peer
                        .request(reqwest::Method::POST, &url)
                        .timeout(Duration::from_secs(2))
                        .json(&body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().as_u16() == 200);
                    if !ok {
                        warn!("failsafe: {name} did not accept POST {url}");
                    }
                    ok
                }
            });
        futures_util::future::join_all(posts)
            .await
            .into_iter()
            .all(|ok| ok)
    }

    /// One HA cycle. Returns (acted, an action failed).
    async fn cycle(&mut self, cluster_changed: bool) -> Result<(bool, bool)> {
        // In synchronous mode the primary reads pg_stat_replication every cycle.
        let quick = !self.force_read
            && !cluster_changed
            && !self.dynamic.synchronous_mode
            && self.last_full_observation.elapsed() < QUICK_CYCLE_MAX_AGE;
        let pg = self.observe_pg_with(quick).await;
        let sync = self.sync_observation();
        // After a stall of this process (or a slow cycle) the lease of a possible primary can be
        // nearly out while etcd is fine: renew it before anything else, so that the fresh read
        // below gets its time budget and no demotion follows needlessly.
        if self
            .demotion_point()
            .is_some_and(|d| d <= tokio::time::Instant::now())
        {
            self.refresh_lease_now().await;
        }
        // Every cycle decides on a linearizable read. The watch cache only wakes the loop: a
        // watch on an etcd member cut off by dropped packets goes quiet without an error and
        // would keep showing a leader key that etcd expired long ago (seen: replicas waiting
        // ~11 s to race, a cut-off leader promoting itself again from it).
        self.view_read_at = Instant::now();
        let read = self.bounded(self.dcs.read_cluster(), "read").await;
        let cluster = match read {
            Ok((c, warnings)) => {
                for w in warnings {
                    tracing::debug!("{w}");
                }
                self.apply_dynamic(&c).await;
                Some(c)
            }
            Err(e) => {
                warn!("{e:#}");
                None
            }
        };
        if let (Some(c), Some((new, sent, ttl))) = (&cluster, self.unresolved_switch) {
            self.resolve_switch(c, new, sent, ttl).await;
        }
        let current = self.lease.info();
        let mut cluster = cluster;
        if cluster.is_some()
            && self.unresolved_switch.is_none()
            && current.id != 0
            && current.ttl != self.timing.ttl
        {
            let deadline = self.demotion_point();
            match bounded_at(deadline, self.switch_lease(), "lease switch").await {
                // Decide on a view that shows the keys on their new lease.
                Ok(()) => {
                    cluster = match self.bounded(self.dcs.read_cluster(), "read").await {
                        Ok((c, _)) => Some(c),
                        Err(e) => {
                            warn!("{e:#}");
                            None
                        }
                    }
                }
                Err(e) => warn!("cannot apply the new ttl yet (will retry): {e:#}"),
            }
        }
        let lease = self.lease.info();
        let leaderless = cluster.as_ref().is_some_and(|c| {
            // As `ha::decide` counts it: a key bound to no lease is no agent's.
            c.leader.as_ref().is_none_or(|l| l.lease == 0)
                && (!c.paused() || c.failover_request().is_some())
        });
        let switchover = cluster
            .as_ref()
            .is_some_and(|c| self.holds_lock(c) && c.failover_request().is_some());
        let needs_peers = pg.running
            && ((leaderless && pg.role == Some(PgRole::Replica))
                || (switchover && pg.role == Some(PgRole::Primary)));
        let peers = match (&cluster, needs_peers) {
            (Some(c), true) => self.probe_peers(c).await,
            _ => vec![],
        };
        let failsafe = self.failsafe_observation(cluster.as_ref(), &pg).await;
        let obs = Observation {
            failsafe,
            me: self.cfg.name.clone(),
            cluster: cluster.clone(),
            lease_id: lease.id,
            lease_remaining_ms: self
                .lease
                .remaining(Instant::now())
                .map(|d| d.as_millis() as u64),
            pg,
            peers,
            settings: self.settings(),
            now_ms: chrono::Utc::now().timestamp_millis(),
            sync,
        };
        let mut decision = ha::decide(&obs);
        // Before demoting for a lease about to expire, try one keepalive right now: after a stall of
        // this process the lease is usually still alive in etcd.
        if decision.actions.iter().any(|a| {
            matches!(
                a,
                Action::Demote {
                    mode: DemoteMode::Offline,
                    ..
                }
            )
        }) && self.refresh_lease_now().await
        {
            let mut obs2 = obs.clone();
            obs2.lease_remaining_ms = self
                .lease
                .remaining(Instant::now())
                .map(|d| d.as_millis() as u64);
            decision = ha::decide(&obs2);
        }
        let was_failsafe = self.failsafe_active;
        self.failsafe_active = obs.failsafe.peers_accepted && decision.actions.is_empty();
        if was_failsafe && !self.failsafe_active {
            info!("failsafe mode is no longer active");
        }
        if decision.reason != self.last_reason || !decision.actions.is_empty() {
            info!("{}", decision.reason);
            self.last_reason = decision.reason.clone();
        }
        let acted = !decision.actions.is_empty();
        let mut failed = false;
        // In order; a failed action ends the decision (a promotion must not follow a /sync
        // write that did not happen).
        for action in decision.actions {
            if let Err(e) = self.execute(action, cluster.as_ref()).await {
                if e.downcast_ref::<Fatal>().is_some() {
                    return Err(e);
                }
                if e.downcast_ref::<AlreadyLogged>().is_none() {
                    error!("{e:#}");
                }
                failed = true;
                break;
            }
        }
        if let Some(c) = &cluster {
            // Re-read the local state after actions, so the member key tells the truth.
            if acted {
                let _ = self.observe_pg().await;
            }
            let deadline = self.demotion_point();
            if let Err(e) = bounded_at(deadline, self.housekeeping(c), "write").await {
                warn!("{e:#}");
            }
        }
        if let Some(due) = self
            .scheduled_restart
            .as_ref()
            .filter(|s| s.at_ms <= chrono::Utc::now().timestamp_millis())
        {
            let (conditions, schedule) = (due.conditions.clone(), due.schedule.clone());
            let moved = due.postmaster_start_time.is_some()
                && due.postmaster_start_time
                    != self
                        .last_pg
                        .as_ref()
                        .and_then(|s| s.postmaster_start_time.clone());
            self.scheduled_restart = None;
            if moved {
                warn!("cancelled the restart scheduled at {schedule}: PostgreSQL was restarted meanwhile");
            } else {
                let r = self.restart(&conditions).await;
                info!("scheduled restart ({schedule}): {}", r.message);
            }
        }
        self.last_cycle = Some(Instant::now());
        self.publish(cluster);
        Ok((acted, failed))
    }

    /// While my PostgreSQL may be writable, the instant at which my lease gets within the
    /// demotion margin: no etcd request of the HA cycle may run past it, or a cut-off primary
    /// would wait out request time-outs (up to one per endpoint) instead of demoting in time.
    fn demotion_point(&self) -> Option<tokio::time::Instant> {
        let may_be_primary =
            self.pg.is_running() && self.last_pg.as_ref().is_none_or(|s| !s.in_recovery);
        if !may_be_primary {
            return None;
        }
        let left = self
            .lease
            .remaining(Instant::now())
            .unwrap_or_default()
            .saturating_sub(self.timing.demote_margin);
        Some(tokio::time::Instant::now() + left)
    }

    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T>>,
        what: &str,
    ) -> Result<T> {
        bounded_at(self.demotion_point(), f, what).await
    }

    /// Asks the keeper for a keepalive now and waits for it: at most half the demotion margin,
    /// and never later than a quarter margin before the lease fence's point (deadline −
    /// margin/2), so that a demotion that follows still comes before the fence's backstop.
    async fn refresh_lease_now(&self) -> bool {
        let before = self.lease.info().deadline;
        self.lease.poke();
        let mut deadline = Instant::now() + self.timing.demote_margin / 2;
        if let Some(d) = before {
            let latest = d
                .checked_sub(self.timing.demote_margin * 3 / 4)
                .unwrap_or(d);
            deadline = deadline.min(latest);
        }
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.lease.info().deadline > before {
                return true;
            }
        }
        false
    }

    fn upstream(&self, cluster: Option<&ClusterView>, member: &str) -> Result<Upstream> {
        cluster
            .and_then(|c| upstream_of(c, member))
            .ok_or_else(|| anyhow!("member {member} has no usable conn_url in etcd"))
    }

    async fn execute(&mut self, action: Action, cluster: Option<&ClusterView>) -> Result<()> {
        match action {
            Action::BootstrapRace => self.bootstrap().await,
            Action::Clone { from } => {
                let leader = cluster
                    .and_then(|c| c.leader_name())
                    .unwrap_or(&from)
                    .to_string();
                let from = if std::mem::take(&mut self.reinit_from_leader) {
                    leader.clone()
                } else {
                    from
                };
                let (Ok(src), Ok(up)) = (
                    self.upstream(cluster, &from),
                    self.upstream(cluster, &leader),
                ) else {
                    info!("waiting for {from}'s member key before cloning");
                    // Nothing was done: wait for the next change or loop_wait, not spin.
                    return Err(anyhow::Error::new(AlreadyLogged));
                };
                self.pg_state = "creating replica".into();
                self.publish(cluster.cloned());
                self.touch_member_now(cluster).await;
                info!("cloning from {from} with pg_basebackup");
                let started = Instant::now();
                // A failed clone is not retried here: the data directory stays empty, so the
                // next cycle decides again (after loop_wait or the next change), with a fresh view.
                let result = self.pg.basebackup(&src).await;
                // A reinitialize is over once its clone has run, whatever came of it.
                self.reinitializing.set(false);
                if let Err(e) = result {
                    self.pg_state = "stopped".into();
                    let cause = format!("{e:#}");
                    // Once per cause, with what to do; the same failure again is not repeated.
                    if self.last_clone_error.as_deref() != Some(cause.as_str()) {
                        error!(
                            "cloning from {from} failed: {cause}{}",
                            clone_failure_hint(&cause, &from)
                        );
                        self.last_clone_error = Some(cause);
                    }
                    return Err(anyhow::Error::new(AlreadyLogged));
                }
                self.last_clone_error = None;
                self.set_former_primary(false);
                info!(
                    "cloned from {from} in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                self.start_replica(Some(up)).await?;
                self.callbacks.fire(Event::OnStart, "replica");
                Ok(())
            }
            Action::StartPrimary => {
                let proof = self.prove_leadership("starting as primary").await?;
                self.pg.write_config(&self.dynamic, None)?;
                self.start_primary(&proof).await?;
                self.callbacks.fire(Event::OnStart, "primary");
                Ok(())
            }
            Action::StartReplica { leader } => {
                let up = leader
                    .as_deref()
                    .and_then(|l| cluster.and_then(|c| upstream_of(c, l)));
                self.start_replica(up).await?;
                self.callbacks.fire(Event::OnStart, "replica");
                Ok(())
            }
            Action::RewindAndFollow { leader } => {
                let up = self.upstream(cluster, &leader)?;
                let was_running = self.pg.is_running();
                self.rewind_and_follow(up).await?;
                if self.pg.is_running() {
                    // A running former primary changed role; a stopped one started.
                    let event = if was_running {
                        Event::OnRoleChange
                    } else {
                        Event::OnStart
                    };
                    self.callbacks.fire(event, "replica");
                }
                Ok(())
            }
            Action::Follow { leader } => {
                let up = self.upstream(cluster, &leader)?;
                self.pg.write_config(&self.dynamic, Some(Some(&up)))?;
                self.pg.reload().await?;
                info!("now following {}", up.member);
                self.following = Some(up.member);
                Ok(())
            }
            Action::AcquireLeader => {
                if self
                    .dcs
                    .take_leader(&self.cfg.name, &self.lease.info())
                    .await?
                    .is_some()
                {
                    info!("acquired the leader key");
                    if let Some(f) = cluster.and_then(|c| c.failover.as_ref()) {
                        if !f.value.is_empty() {
                            let _ = self.dcs.cas("failover", "{}", f.mod_revision).await;
                        }
                    }
                } else {
                    info!("lost the leader race");
                }
                Ok(())
            }
            Action::ReattachLeader => {
                self.dcs
                    .reattach_leader(&self.cfg.name, &self.lease.info())
                    .await?;
                Ok(())
            }
            Action::Promote => {
                let proof = self.prove_leadership("promoting").await?;
                self.promote(proof, cluster).await
            }
            Action::Demote {
                mode: DemoteMode::Graceful,
                then_follow,
            } => self.demote_gracefully(then_follow).await,
            Action::ClearFailover { reason } => {
                let revision = cluster.and_then(|c| {
                    c.failover
                        .as_ref()
                        .map(|f| f.mod_revision)
                        .or_else(|| c.invalid_failover().map(|b| b.mod_revision))
                });
                if let Some(rev) = revision {
                    self.dcs.cas("failover", "{}", rev).await?;
                }
                warn!("{reason}");
                Ok(())
            }
            Action::Demote { mode, then_follow } => {
                // The loop demotes by itself: the fence must not hit the read-only restart.
                self.fence.arm(false, self.timing.demote_margin);
                let how = "immediate";
                self.pg_state = "stopping".into();
                self.pg.stop(how).await?;
                self.following = None;
                self.pg_state = "stopped".into();
                if mode == DemoteMode::Offline {
                    // Its WAL may go past the fork of the next leader's timeline: the next
                    // leader is joined through pg_rewind.
                    self.set_former_primary(true);
                    let started = self.start_replica(None).await;
                    self.callbacks.fire(
                        Event::OnRoleChange,
                        if started.is_ok() {
                            "replica"
                        } else {
                            "demoted"
                        },
                    );
                    started?;
                } else {
                    self.callbacks.fire(Event::OnRoleChange, "demoted");
                }
                if let Some(l) = then_follow {
                    info!("demoted; will rejoin as a replica of {l}");
                }
                Ok(())
            }
            Action::StepDown => {
                // Writes stop before the key goes: a server that was merely slow to answer
                // must not come back writable beside the next leader.
                self.fence.arm(false, self.timing.demote_margin);
                if self.pg.is_running() {
                    self.pg_state = "stopping".into();
                    self.pg.stop("immediate").await?;
                }
                self.following = None;
                self.pg_state = "stopped".into();
                // Its WAL may go past the next leader's fork point: rejoin through pg_rewind.
                self.set_former_primary(true);
                self.callbacks.fire(Event::OnRoleChange, "demoted");
                self.dcs.delete_leader(&self.cfg.name).await?;
                warn!("released the leader key: PostgreSQL did not come up as primary in time");
                Ok(())
            }
            Action::ReleaseLeader => {
                self.dcs.delete_leader(&self.cfg.name).await?;
                Ok(())
            }
            Action::WriteInitialize { sysid } => {
                self.dcs.create("initialize", &sysid).await?;
                Ok(())
            }
            Action::RepairInitialize { sysid, found } => {
                self.dcs.put("initialize", &sysid, None).await?;
                warn!("the initialize key said {found}; rewrote it with this cluster's system identifier {sysid}");
                Ok(())
            }
            Action::WriteSync { state, revision } => {
                let value = state.to_json();
                if !self
                    .dcs
                    .write_sync(&self.cfg.name, &value, revision)
                    .await?
                {
                    // Re-read next cycle: someone else wrote /sync, or the key is not mine.
                    self.force_read = true;
                    bail!("/sync changed since it was read, or the leader key no longer names me: not going on with this decision");
                }
                info!("/sync is now {value}");
                Ok(())
            }
            Action::DeleteSync { revision } => {
                if !self.dcs.delete_sync(&self.cfg.name, revision).await? {
                    self.force_read = true;
                    bail!("/sync changed since it was read, or the leader key no longer names me: not removing it");
                }
                info!("removed /sync (synchronous mode is off)");
                Ok(())
            }
            Action::SetSsn { value } => {
                let Some(c) = cluster else {
                    bail!("no cluster view: cannot set synchronous_standby_names");
                };
                // Written first: the in-memory value changes only with the file.
                let shown = self.last_pg.as_ref().map(|s| s.ssn.clone());
                if self.pg.ssn != value || shown.as_deref() != Some(value.as_deref().unwrap_or(""))
                {
                    let old = std::mem::replace(&mut self.pg.ssn, value.clone());
                    let upstream = self.current_upstream(c);
                    if let Err(e) = self
                        .pg
                        .write_config(&self.dynamic, upstream.as_ref().map(|u| u.as_ref()))
                    {
                        self.pg.ssn = old;
                        return Err(e.context("cannot write synchronous_standby_names"));
                    }
                    if self.pg.ssn != old {
                        self.ssn_changed_lsn = u64::MAX;
                        self.ssn_generation += 1;
                    }
                }
                self.pg.reload().await?;
                match &value {
                    Some(v) => info!("synchronous_standby_names = '{v}'"),
                    None => info!("synchronous_standby_names handed back to the configuration"),
                }
                Ok(())
            }
            Action::Refuse { reason } => Err(anyhow::Error::new(Fatal(reason))),
        }
    }

    /// A replica that is not streaming: the timeline and position it replayed to. The timeline
    /// is the highest of its restartpoint's, its minimum recovery point's and what its
    /// walreceiver streamed since this postmaster started (SQL shows no replay timeline).
    fn replay_point(&mut self, st: &PgStatus) -> Option<(u64, u64)> {
        replay_point(st, &mut self.streamed_tli)
    }

    /// What the core needs of synchronous replication: on a primary, its walsenders (with the
    /// position `synchronous_commit` waits for), SSN in effect and as managed. Records the flush
    /// position once a changed SSN is in effect.
    fn sync_observation(&mut self) -> tandem_core::sync::SyncObs {
        let Some(st) = self.last_pg.as_ref().filter(|s| !s.in_recovery) else {
            return tandem_core::sync::SyncObs {
                managed: self.pg.ssn.clone(),
                ..Default::default()
            };
        };
        // The server's setting (the agent's own session runs with synchronous_commit=local).
        let commit = self
            .pg
            .parameters(&self.dynamic)
            .get("synchronous_commit")
            .cloned()
            .unwrap_or_else(|| "on".into());
        // The new setting is in effect for every backend only once the checkpointer processed
        // the reload (it sets the shared flag commits consult): after SHOW shows it, a
        // CHECKPOINT requested now proves that; only then is the flush position recorded.
        if self.ssn_changed_lsn == u64::MAX && self.pg.ssn.as_deref() == Some(st.ssn.as_str()) {
            use std::sync::atomic::Ordering::SeqCst;
            if self.ssn_checkpointed.load(SeqCst) >= self.ssn_generation {
                self.ssn_changed_lsn = st.wal_position;
            } else if !self.ssn_checkpoint_running.swap(true, SeqCst) {
                let (done, running, generation) = (
                    self.ssn_checkpointed.clone(),
                    self.ssn_checkpoint_running.clone(),
                    self.ssn_generation,
                );
                self.pg.checkpoint_in_background(move |ok| {
                    if ok {
                        done.fetch_max(generation, SeqCst);
                    }
                    running.store(false, SeqCst);
                });
            }
        }
        let standbys = st
            .replication
            .iter()
            .map(|r| tandem_core::sync::StandbyRow {
                name: r.application_name.clone(),
                state: r.state.clone(),
                sync_state: r.sync_state.clone(),
                lsn: match commit.as_str() {
                    "remote_write" => r.write_lsn,
                    "remote_apply" => r.replay_lsn,
                    _ => r.flush_lsn,
                }
                .unwrap_or(0),
            })
            .collect();
        tandem_core::sync::SyncObs {
            standbys,
            ssn: st.ssn.clone(),
            managed: self.pg.ssn.clone(),
            ssn_changed_lsn: self.ssn_changed_lsn,
        }
    }

    /// `{"<guc>": {"old_value": .., "new_value": ..}}` for parameters waiting for a restart.
    fn pending_restart_reason(&self) -> Option<Value> {
        let st = self.last_pg.as_ref()?;
        if st.pending_restart.is_empty() {
            return None;
        }
        let wanted = self.pg.parameters(&self.dynamic);
        let mut o = serde_json::Map::new();
        for (name, current) in &st.pending_restart {
            let new = wanted.get(name).cloned().unwrap_or_default();
            o.insert(
                name.clone(),
                serde_json::json!({"old_value": current, "new_value": new}),
            );
        }
        Some(Value::Object(o))
    }

    async fn handle(&mut self, req: Request) -> Reply {
        match req {
            Request::Reload => self.reload().await,
            Request::Refresh => {
                let _ = self.observe_pg().await;
                self.publish(None);
                Reply::new(200, "refreshed")
            }
            Request::Restart(c) => self.restart(&c).await,
            Request::ScheduleRestart {
                schedule,
                conditions,
            } => {
                if self.dynamic.pause {
                    return Reply::new(500, "Can't schedule restart in the paused state");
                }
                if self.scheduled_restart.is_some() {
                    return Reply::new(409, "Another restart is already scheduled");
                }
                let Some(at_ms) = tandem_core::time::parse_timestamp_ms(&schedule) else {
                    return Reply::new(
                        422,
                        format!(
                            "cannot parse the schedule '{schedule}': use ISO 8601 with a time zone"
                        ),
                    );
                };
                self.scheduled_restart = Some(ScheduledRestart {
                    at_ms,
                    schedule,
                    conditions,
                    postmaster_start_time: self
                        .last_pg
                        .as_ref()
                        .and_then(|s| s.postmaster_start_time.clone()),
                });
                Reply::new(202, "Restart scheduled")
            }
            Request::CancelScheduledRestart => match self.scheduled_restart.take() {
                Some(_) => Reply::new(200, "scheduled restart deleted"),
                None => Reply::new(404, "no restarts are scheduled"),
            },
            Request::Reinitialize {
                force: _,
                from_leader,
            } => {
                if self.reinitializing.get() {
                    return Reply::new(503, crate::control::REINIT_IN_PROGRESS);
                }
                let cluster = match self.dcs.read_cluster().await {
                    Ok((c, _)) => c,
                    Err(e) => return Reply::new(503, format!("DCS is not accessible: {e}")),
                };
                if self.holds_lock(&cluster) {
                    return Reply::new(503, "I am the leader, can not reinitialize");
                }
                if cluster.leader.is_none() {
                    return Reply::new(503, "Cluster has no leader, can not reinitialize");
                }
                info!("reinitializing: stopping PostgreSQL and removing the data directory");
                if let Err(e) = self.pg.stop("immediate").await {
                    return Reply::new(
                        503,
                        format!("reinitialize failed: cannot stop PostgreSQL: {e:#}"),
                    );
                }
                self.reinitializing.set(true);
                if let Err(e) = self.pg.wipe_data().await {
                    self.reinitializing.set(false);
                    return Reply::new(503, format!("reinitialize failed: {e:#}"));
                }
                self.following = None;
                self.set_former_primary(false);
                self.last_pg = None;
                self.sysid = None;
                self.pg_state = "stopped".into();
                self.reinit_from_leader = from_leader;
                Reply::new(200, "reinitialize started")
            }
        }
    }

    async fn reload(&mut self) -> Reply {
        if let Some(path) = &self.config_path {
            match Config::load(path) {
                Ok(cfg) => {
                    let refused = self.cfg.restart_required_changes(&cfg);
                    if !refused.is_empty() {
                        let why = format!(
                            "reload refused, keeping the running configuration: {}; restart the agent to apply {}",
                            refused.join("; "),
                            if refused.len() == 1 { "it" } else { "them" }
                        );
                        error!("{why}");
                        return Reply::new(503, why);
                    }
                    for w in &cfg.warnings {
                        warn!("{w}");
                    }
                    self.pg = Postgres::new(&cfg);
                    self.cfg = Arc::new(cfg);
                }
                Err(e) => {
                    error!("reload: keeping the current configuration: {e:#}");
                    return Reply::new(503, format!("reload failed: {e:#}"));
                }
            }
        }
        // Certificates renewed in place (same paths) are read on every reload, whether the
        // configuration file changed or not; so are PostgreSQL's, by its own reload below.
        let kept = self.reload_certificates().await;
        // The files behind /metrics' days to expiry, and their problems, as now configured.
        crate::tlscheck::register(&self.cfg);
        for f in crate::tlscheck::check_files(&self.cfg) {
            warn!("after the reload: {f}");
        }
        if self.pg.is_running() && self.pg.has_data() {
            let up = match self.last_pg.as_ref().map(|s| s.in_recovery) {
                Some(false) => None,
                _ => {
                    let cluster = self.dcs.read_cluster().await.ok().map(|(c, _)| c);
                    Some(
                        self.following
                            .as_deref()
                            .and_then(|l| cluster.as_ref().and_then(|c| upstream_of(c, l))),
                    )
                }
            };
            if let Err(e) = self
                .pg
                .write_config(&self.dynamic, up.as_ref().map(|u| u.as_ref()))
            {
                return Reply::new(503, format!("reload failed: {e:#}"));
            }
            if let Err(e) = self.pg.reload().await {
                return Reply::new(503, format!("reload failed: {e:#}"));
            }
            self.fire_reload();
        }
        if !kept.is_empty() {
            return Reply::new(
                503,
                format!(
                    "reload failed for certificates, the running ones stay in use: {}",
                    kept.join("; ")
                ),
            );
        }
        info!("reloaded the configuration");
        Reply::new(202, "reload scheduled")
    }

    /// Reads the certificate files of the REST server, of the client for other members and of
    /// the etcd client again, and uses them for new connections (connections already open keep
    /// theirs). One line in the log per component. A component whose new files fail to load
    /// keeps its running certificates: the errors, each naming the setting and the file, are
    /// returned.
    async fn reload_certificates(&mut self) -> Vec<String> {
        let cfg = self.cfg.clone();
        let mut kept = Vec::new();
        let mut report = |component: &str, result: Result<Option<String>>| match result {
            Ok(Some(files)) if !files.is_empty() => {
                info!("reloaded TLS certificates for {component} ({files})")
            }
            Ok(_) => {}
            Err(e) => {
                error!("{component}: keeping the running TLS certificates: {e:#}");
                kept.push(format!("{component}: {e:#}"));
            }
        };
        report("the REST API", self.api_tls.reload(&cfg.restapi).map(Some));
        report(
            "the REST client of other members' APIs",
            self.peer.reload(&cfg.ctl, &cfg.restapi).map(Some),
        );
        match self.dcs.reload_tls(&cfg.etcd3).await {
            Ok(None) => tracing::debug!("etcd client: its TLS files did not change"),
            other => report("the etcd client", other),
        }
        kept
    }

    /// Restart PostgreSQL in its current role, if the conditions hold.
    async fn restart(&mut self, c: &RestartConditions) -> Reply {
        let st = self.last_pg.clone();
        let role = match st.as_ref().map(|s| s.in_recovery) {
            Some(false) => "primary",
            Some(true) => "replica",
            None => return Reply::new(503, "postgres is not running"),
        };
        if c.role
            .as_deref()
            .is_some_and(|r| r != role && !(r == "master" && role == "primary"))
        {
            return Reply::new(503, "restart conditions are not satisfied");
        }
        if let Some(v) = &c.postgres_version {
            let have = st.as_ref().and_then(|s| s.server_version).unwrap_or(0);
            if version_number(v).is_none_or(|w| have >= w) {
                return Reply::new(503, "restart conditions are not satisfied");
            }
        }
        if c.restart_pending && st.as_ref().is_none_or(|s| s.pending_restart.is_empty()) {
            return Reply::new(503, "restart conditions are not satisfied");
        }
        info!("restarting PostgreSQL ({role})");
        self.start_timeout_override = c.timeout.map(Duration::from_secs);
        self.pg_state = "restarting".into();
        self.publish(None);
        if let Err(e) = self.pg.stop("fast").await {
            self.pg_state = "restart failed".into();
            return Reply::new(503, format!("restart failed: {e:#}"));
        }
        // A primary comes back writable only with a fresh proof of the leader key (DESIGN §4
        // rule 1), as any start as primary; without one it comes back read-only and the HA loop
        // decides.
        let proof = if role == "primary" && !self.dynamic.pause {
            match self.prove_leadership("restarting as primary").await {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!("{e:#}: restarting read-only");
                    None
                }
            }
        } else {
            None
        };
        let up = if role == "primary" && (proof.is_some() || self.dynamic.pause) {
            if proof.is_some() && !self.dynamic.failsafe_mode {
                self.fence.arm(true, self.timing.demote_margin);
            }
            None
        } else if role == "primary" {
            Some(None)
        } else {
            let cluster = self.dcs.read_cluster().await.ok().map(|(c, _)| c);
            Some(
                self.following
                    .as_deref()
                    .and_then(|l| cluster.as_ref().and_then(|c| upstream_of(c, l))),
            )
        };
        let r = match self
            .pg
            .write_config(&self.dynamic, up.as_ref().map(|u| u.as_ref()))
        {
            Ok(()) => self.pg.start(&self.dynamic).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                self.pg_state = "running".into();
                let _ = self.observe_pg().await;
                self.callbacks.fire(Event::OnRestart, role);
                Reply::new(200, "restarted successfully")
            }
            Err(e) => {
                self.pg_state = "restart failed".into();
                error!("restart failed: {e:#}");
                Reply::new(503, "restart failed")
            }
        }
    }

    /// Planned switchover: checkpoint, fast stop (the replicas receive everything up to the
    /// shutdown checkpoint), publish the last position, release the leader key, restart read-only.
    async fn demote_gracefully(&mut self, to: Option<String>) -> Result<()> {
        let started = Instant::now();
        if let Ok(c) = self.pg.client().await {
            if let Err(e) = c.batch_execute("CHECKPOINT").await {
                warn!("checkpoint before switchover failed: {e}");
            }
        }
        // Routers stop sending new connections here as soon as they see the switchover
        // request (the same etcd event). A client whose authentication exchange with this
        // server is already under way cannot be moved (SCRAM cannot be replayed elsewhere):
        // give it a moment to finish, so that it meets a cut session rather than a failed
        // connection, which the router's hold cannot hide.
        let grace = SWITCHOVER_AUTH_GRACE.saturating_sub(started.elapsed());
        if !grace.is_zero() {
            tokio::time::sleep(grace).await;
        }
        self.pg_state = "stopping".into();
        self.fence.arm(false, self.timing.demote_margin);
        self.pg.stop("fast").await?;
        self.following = None;
        self.pg_state = "stopped".into();
        let status = self.stopped_status().await;
        self.dcs
            .release_leader_with_status(&self.cfg.name, &status)
            .await?;
        info!(
            "released the leader key for the switchover to {} ({} ms)",
            to.as_deref().unwrap_or("the healthiest replica"),
            started.elapsed().as_millis()
        );
        self.last_pg = None;
        let started = self.start_replica(None).await;
        self.callbacks.fire(
            Event::OnRoleChange,
            if started.is_ok() {
                "replica"
            } else {
                "demoted"
            },
        );
        started
    }

    /// The `status` value a leader publishes as it releases the key after a clean stop: the
    /// shutdown checkpoint's position (from pg_controldata), so replicas know how far to catch up.
    async fn stopped_status(&self) -> String {
        let optime = self
            .pg
            .controldata()
            .await
            .ok()
            .and_then(|cd| {
                cd.get("Latest checkpoint location")
                    .and_then(|l| tandem_core::lsn::Lsn::parse(l))
            })
            .map(|l| l.0);
        serde_json::to_string(&StatusValue {
            optime,
            ..Default::default()
        })
        .unwrap_or_default()
    }

    /// Starts PostgreSQL as a primary (writable): only with a fresh proof of the leader key.
    async fn start_primary(&mut self, proof: &LeaderProof) -> Result<()> {
        let left = proof.remaining(Instant::now());
        if left <= self.timing.demote_margin {
            return Err(anyhow!(
                "not starting as primary: my lease has only {} ms left",
                left.as_millis()
            ));
        }
        if !self.dynamic.pause && !self.dynamic.failsafe_mode {
            self.fence.arm(true, self.timing.demote_margin);
        }
        self.set_former_primary(false);
        self.start().await
    }

    async fn start(&mut self) -> Result<()> {
        self.pg_state = "starting".into();
        self.publish(None);
        match self.pg.start(&self.dynamic).await {
            Ok(()) => {
                self.pg_state = "running".into();
                Ok(())
            }
            Err(e) => {
                self.pg_state = "start failed".into();
                Err(e)
            }
        }
    }

    async fn start_replica(&mut self, up: Option<Upstream>) -> Result<()> {
        // A server started read-only is no business of the lease fence.
        self.fence.arm(false, self.timing.demote_margin);
        self.pg.write_config(&self.dynamic, Some(up.as_ref()))?;
        self.following = up.map(|u| u.member);
        self.start().await
    }

    async fn rewind_and_follow(&mut self, up: Upstream) -> Result<()> {
        // Nothing is stopped or rewound unless the source answers as a primary now: its member
        // key can be stale right after its PostgreSQL died, and a pg_rewind that cannot connect
        // must not cost this node its data directory.
        if let Err(e) = self.pg.check_rewind_source(&up).await {
            bail!(
                "not rewinding against {} yet: it does not answer as a primary ({e:#})",
                up.member
            );
        }
        if self.pg.is_running() {
            // A former primary running read-only: pg_rewind needs it cleanly shut down.
            info!("stopping PostgreSQL to rewind it against {}", up.member);
            self.pg_state = "stopping".into();
            self.pg.stop("fast").await?;
            self.following = None;
            self.pg_state = "stopped".into();
        }
        let cd = self.pg.controldata().await?;
        let state = cd
            .get("Database cluster state")
            .cloned()
            .unwrap_or_default();
        if matches!(
            state.as_str(),
            "in production" | "in crash recovery" | "shutting down"
        ) {
            info!("running crash recovery in single-user mode before pg_rewind");
            self.pg
                .single_user_recovery()
                .await
                .context("single-user crash recovery failed")?;
        }
        info!("running pg_rewind against {}", up.member);
        let started = Instant::now();
        match self.pg.rewind(&up).await {
            Ok(()) => {
                info!(
                    "pg_rewind finished in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                self.set_former_primary(false);
                self.start_replica(Some(up)).await
            }
            Err(e) if rewind_could_not_connect(&format!("{e:#}")) => {
                // pg_rewind never reached the source: the data directory is as it was.
                warn!(
                    "pg_rewind could not connect to {}: {e:#}; starting PostgreSQL again as it was",
                    up.member
                );
                self.start_replica(None).await?;
                Err(anyhow::Error::new(AlreadyLogged))
            }
            Err(e) => {
                warn!("pg_rewind failed: {e:#}");
                // postgresql.remove_data_directory_on_rewind_failure: remove it; otherwise keep
                // it aside for inspection. Either way a fresh copy is cloned.
                if self.cfg.postgresql.remove_data_directory_on_rewind_failure {
                    self.pg.wipe_data().await?;
                    self.set_former_primary(false);
                    warn!("removed the data directory (remove_data_directory_on_rewind_failure) and will clone a fresh copy");
                } else {
                    let aside = self.pg.move_data_aside()?;
                    self.set_former_primary(false);
                    warn!(
                        "moved the data directory aside to {} and will clone a fresh copy (remove_data_directory_on_rewind_failure: true would remove it instead)",
                        aside.display()
                    );
                }
                Ok(())
            }
        }
    }

    /// A changed `ttl` takes effect on a new lease: grant it, move the leader key (if mine) and
    /// my member key onto it in one transaction, hand it to the keeper, then revoke the old one.
    /// The leader key is never absent on the way: no race, no promotion, no session cut.
    async fn switch_lease(&mut self) -> Result<()> {
        let old = self.lease.info();
        let ttl = self.timing.ttl;
        let sent = Instant::now();
        let new = self.dcs.grant_lease(ttl.as_secs().max(1) as i64).await?;
        let member = serde_json::to_string(&self.member_value())?;
        let moved = match self
            .dcs
            .move_to_lease(&self.cfg.name, old.id, new, &member)
            .await
        {
            Ok(moved) => moved,
            Err(e) => {
                // Outcome unknown: if the transaction applied and only its answer was lost, the
                // leader key is bound to `new`, which nobody renews and etcd ends at sent + ttl.
                // Until a fresh read tells, my lease counts as ending then too.
                self.lease.set_cap(Some(sent + ttl));
                self.unresolved_switch = Some((new, sent, ttl));
                return Err(e);
            }
        };
        self.lease.adopt(new, sent, ttl);
        self.last_member = Some((member, new));
        if let Err(e) = self.dcs.revoke_lease(old.id).await {
            warn!(
                "cannot revoke my previous lease {:x} (it expires by itself): {e:#}",
                old.id
            );
        }
        info!(
            "ttl changed from {:?} to {ttl:?}: my {}keys moved to a new lease",
            old.ttl,
            if moved {
                "leader and member "
            } else {
                "member "
            }
        );
        Ok(())
    }

    /// After a lease switch whose answer was lost, a fresh view tells where the leader key went:
    /// on the new lease, adopt it; anywhere else, the new lease is not needed.
    async fn resolve_switch(
        &mut self,
        cluster: &ClusterView,
        new: i64,
        sent: Instant,
        ttl: Duration,
    ) {
        self.unresolved_switch = None;
        let on_new = cluster
            .leader
            .as_ref()
            .is_some_and(|l| l.name == self.cfg.name && l.lease == new);
        if on_new {
            let old = self.lease.info().id;
            self.lease.adopt(new, sent, ttl);
            self.last_member = None;
            let _ = self.dcs.revoke_lease(old).await;
            info!("the lost lease switch had applied: now on lease {new:x} (ttl {ttl:?})");
        } else {
            self.lease.set_cap(None);
            let _ = self.dcs.revoke_lease(new).await;
        }
    }

    /// DESIGN §4 rules 1 and 2, in one place: before PostgreSQL is made writable, an etcd
    /// transaction made now must show the leader key naming me under my current lease, and that
    /// lease must have more than the demotion margin left. Neither a cache nor an earlier read
    /// counts; the returned proof is what `promote` and `start_primary` take.
    async fn prove_leadership(&self, what: &str) -> Result<LeaderProof> {
        let lease = self.lease.info();
        let proof = self
            .dcs
            .confirm_leader(&self.cfg.name, &lease)
            .await
            .with_context(|| format!("not {what}: cannot confirm the leader key in etcd"))?
            .ok_or_else(|| {
                anyhow!("not {what}: etcd does not show the leader key under my lease any more")
            })?;
        let left = proof.remaining(Instant::now());
        if left <= self.timing.demote_margin {
            return Err(anyhow!(
                "not {what}: my lease has only {} ms left",
                left.as_millis()
            ));
        }
        Ok(proof)
    }

    /// Records (in memory and as a marker file in the data directory, so that an agent restart
    /// does not forget it) that this server was demoted from primary in place and must rejoin
    /// through pg_rewind; cleared by a rewind, a fresh clone, or a promotion.
    fn set_former_primary(&mut self, on: bool) {
        self.former_primary = on;
        let marker = self.pg.data_dir.join(FORMER_PRIMARY_MARKER);
        let r = if on {
            std::fs::write(
                &marker,
                b"demoted from primary in place: rejoin through pg_rewind\n",
            )
        } else {
            match std::fs::remove_file(&marker) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        };
        if let Err(e) = r {
            warn!(
                "cannot {} {}: {e}",
                if on { "write" } else { "remove" },
                marker.display()
            );
        }
    }

    /// Arms the lease fence while PostgreSQL may be writable (running and not known to be in
    /// recovery), unless the cluster is paused or failsafe mode may keep a primary past its lease.
    fn update_fence(&self) {
        let writable = self.pg.is_running()
            && self.last_pg.as_ref().is_none_or(|s| !s.in_recovery)
            && !self.dynamic.pause
            && !self.dynamic.failsafe_mode;
        self.fence.arm(writable, self.timing.demote_margin);
    }

    async fn promote(&mut self, proof: LeaderProof, cluster: Option<&ClusterView>) -> Result<()> {
        let started = Instant::now();
        self.set_former_primary(false);
        self.fence.arm(true, self.timing.demote_margin);
        self.pg.promote(&proof).await?;
        info!(
            "promoted self to leader ({} ms)",
            started.elapsed().as_millis()
        );
        self.callbacks.fire(Event::OnRoleChange, "primary");
        self.following = None;
        // Drop the standby settings from postgresql.conf (they would resurface on a restart).
        if let Err(e) = self.pg.write_config(&self.dynamic, None) {
            warn!("{e:#}");
        } else if let Err(e) = self.pg.reload().await {
            warn!("{e:#}");
        }
        // Publish my new role right away (REST first: routers check it), then the bookkeeping.
        let _ = self.observe_pg().await;
        self.publish(cluster.cloned());
        if let Some(c) = cluster {
            // Slots first, so that replicas re-pointed by my new member key find theirs.
            let names = self.slot_members(c);
            if let Err(e) = self.pg.sync_slots(&names).await {
                warn!("cannot create replication slots: {e:#}");
            }
            self.last_slots = Some(names);
            self.touch_member_now(Some(c)).await;
            if let Some(tl) = self.last_pg.as_ref().and_then(|s| s.timeline) {
                self.write_history(c, tl, true).await;
            }
        }
        // Checkpoint so that pg_rewind on the old primary sees the new timeline.
        if let Ok(client) = self.pg.client().await {
            tokio::spawn(async move {
                let _ = client.batch_execute("CHECKPOINT").await;
            });
        }
        Ok(())
    }

    /// Completes `history` from PostgreSQL's timeline history files, keeping every entry that is
    /// there. Only a promotion this agent just made (`promoted`) gets a time and a leader: an
    /// entry repaired later (after `history` was lost or damaged) has them unknown (left out, as
    /// Patroni's three-field entries), never invented.
    async fn write_history(&mut self, cluster: &ClusterView, timeline: u64, promoted: bool) {
        if timeline <= 1 {
            return;
        }
        let mut entries: Vec<HistoryEntry> = cluster
            .history
            .as_ref()
            .map(|h| h.value.clone())
            .unwrap_or_default();
        for (tli, lsn, reason) in self.pg.timeline_history(timeline) {
            if !entries.iter().any(|e| e.timeline == tli) {
                let last = promoted && tli == timeline - 1;
                entries.push(HistoryEntry {
                    timeline: tli,
                    lsn,
                    reason,
                    timestamp: last.then(|| {
                        chrono::Local::now()
                            .format("%Y-%m-%dT%H:%M:%S%.6f%:z")
                            .to_string()
                    }),
                    new_leader: last.then(|| self.cfg.name.clone()),
                });
            }
        }
        entries.sort_by_key(|e| e.timeline);
        let json = Value::Array(entries.iter().map(|e| e.to_json()).collect()).to_string();
        match self.dcs.put("history", &json, None).await {
            Ok(_) => self.history_written = Some(timeline),
            Err(e) => warn!("cannot write history: {e:#}"),
        }
    }

    async fn bootstrap(&mut self) -> Result<()> {
        if !self.dcs.race_initialize().await? {
            info!("failed to acquire the initialize key: another node bootstraps");
            return Ok(());
        }
        info!("won the initialize race: bootstrapping a new cluster");
        self.pg_state = "initializing new cluster".into();
        self.publish(None);
        let started = Instant::now();
        let result = async {
            self.pg.initdb().await?;
            self.pg.write_config(&self.dynamic, None)?;
            self.pg.start(&self.dynamic).await?;
            self.pg.post_bootstrap().await?;
            let cd = self.pg.controldata().await?;
            let sysid = cd
                .get("Database system identifier")
                .cloned()
                .ok_or_else(|| anyhow!("pg_controldata shows no system identifier"))?;
            self.dcs.put("initialize", &sysid, None).await?;
            self.dcs
                .create("config", &self.dynamic.raw.to_string())
                .await?;
            // Publish my member key (conn_url) before the leader key, so replicas can clone at once.
            self.sysid = Some(sysid.clone());
            self.pg_state = "running".into();
            let _ = self.observe_pg().await;
            self.touch_member_now(None).await;
            if self
                .dcs
                .take_leader(&self.cfg.name, &self.lease.info())
                .await?
                .is_none()
            {
                return Err(anyhow!("could not take the leader key after bootstrap"));
            }
            Ok::<_, anyhow::Error>(sysid)
        }
        .await;
        match result {
            Ok(sysid) => {
                self.sysid = Some(sysid);
                self.pg_state = "running".into();
                info!(
                    "bootstrapped the cluster in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                self.callbacks.fire(Event::OnStart, "primary");
                Ok(())
            }
            Err(e) => {
                error!("bootstrap failed: {e:#}");
                let _ = self.dcs.delete("initialize").await;
                let _ = self.pg.stop("immediate").await;
                if self.pg.data_dir.exists() {
                    if let Ok(aside) = self.pg.move_data_aside() {
                        error!(
                            "moved the failed data directory aside to {}",
                            aside.display()
                        );
                    }
                }
                Err(anyhow::Error::new(Fatal(format!(
                    "bootstrap failed: {e:#}"
                ))))
            }
        }
    }

    fn member_value(&self) -> MemberValue {
        let st = self.last_pg.as_ref();
        let role = match st {
            Some(s) if !s.in_recovery => "primary",
            Some(_) => "replica",
            None if !self.pg.has_data() => "uninitialized",
            None => "replica",
        };
        let mut v = MemberValue {
            conn_url: self.cfg.conn_url(),
            api_url: self.cfg.api_url(),
            state: self.pg_state.clone(),
            role: role.into(),
            version: PATRONI_COMPAT_VERSION.into(),
            tags: self.cfg.tags.to_json(),
            ..Default::default()
        };
        if let Some(s) = st {
            v.xlog_location = Some(s.wal_position);
            v.timeline = s.timeline;
            if s.in_recovery {
                v.receive_lsn = s.receive_lsn;
                v.replay_lsn = s.replay_lsn;
                v.replication_state = Some(if s.streaming {
                    "streaming".into()
                } else {
                    "in archive recovery".into()
                });
            }
        }
        if self.dynamic.pause {
            v.pause = Some(true);
        }
        if let Some(reason) = self.pending_restart_reason() {
            v.pending_restart = Some(true);
            v.extra.insert("pending_restart_reason".into(), reason);
        }
        if let Some(s) = &self.scheduled_restart {
            let mut o = serde_json::Map::new();
            o.insert("schedule".into(), Value::from(s.schedule.clone()));
            if let Some(t) = &s.postmaster_start_time {
                o.insert("postmaster_start_time".into(), Value::from(t.clone()));
            }
            if let Some(r) = &s.conditions.role {
                o.insert("role".into(), Value::from(r.clone()));
            }
            if let Some(vv) = &s.conditions.postgres_version {
                o.insert("postgres_version".into(), Value::from(vv.clone()));
            }
            if s.conditions.restart_pending {
                o.insert("restart_pending".into(), Value::from(true));
            }
            v.extra.insert("scheduled_restart".into(), Value::Object(o));
        }
        v.extra
            .insert("tandem".into(), Value::from(env!("CARGO_PKG_VERSION")));
        v
    }

    /// Writes my member key when it changed, or when etcd no longer holds what I last wrote
    /// (deleted, overwritten, garbage, or on another lease): a damaged member key would hide me
    /// from `list`, the routers and the failover candidates.
    async fn touch_member_now(&mut self, cluster: Option<&ClusterView>) {
        let lease = self.lease.info().id;
        if lease == 0 {
            return;
        }
        let text = serde_json::to_string(&self.member_value()).unwrap_or_default();
        // As etcd readers decode them: what I write now, and what I wrote last.
        let decoded = |t: &str| serde_json::from_str::<MemberValue>(t).ok();
        let (now, last) = (
            decoded(&text),
            self.last_member.as_ref().and_then(|(t, _)| decoded(t)),
        );
        // A view read before my last write cannot tell whether etcd holds it.
        let view_after_my_write = self.last_member_at.is_none_or(|w| w < self.view_read_at);
        let damaged = view_after_my_write
            && cluster.is_some_and(|c| {
                c.members.get(&self.cfg.name).is_none_or(|m| {
                    m.lease != lease
                        || (Some(&m.value) != now.as_ref() && Some(&m.value) != last.as_ref())
                })
            });
        if damaged && self.last_member.as_ref().map(|(_, l)| *l) == Some(lease) {
            info!("my member key in etcd is missing or not what I wrote: writing it again");
        }
        if !damaged && self.last_member.as_ref() == Some(&(text.clone(), lease)) {
            return;
        }
        match self
            .dcs
            .put(&format!("members/{}", self.cfg.name), &text, Some(lease))
            .await
        {
            Ok(()) => {
                self.last_member = Some((text, lease));
                self.last_member_at = Some(Instant::now());
            }
            Err(e) => {
                warn!("cannot update my member key: {e:#}");
                if crate::dcs::is_lease_not_found(&e) {
                    self.lease.lost(lease);
                }
            }
        }
    }

    /// Members whose slots a primary keeps: current ones and those seen within member_slots_ttl
    /// (0: only current ones).
    fn slot_members(&mut self, cluster: &ClusterView) -> Vec<String> {
        let now = Instant::now();
        for name in cluster.members.keys() {
            self.seen_members.insert(name.clone(), now);
        }
        let keep = Duration::from_secs(self.dynamic.member_slots_ttl);
        self.seen_members
            .retain(|name, t| cluster.members.contains_key(name) || now.duration_since(*t) < keep);
        self.seen_members.keys().cloned().collect()
    }

    fn holds_lock(&self, cluster: &ClusterView) -> bool {
        let id = self.lease.info().id;
        cluster
            .leader
            .as_ref()
            .is_some_and(|l| l.name == self.cfg.name && l.lease == id && id != 0)
    }

    async fn housekeeping(&mut self, cluster: &ClusterView) -> Result<()> {
        // The view was read before the actions; re-read the leader key cheaply by trusting the txn
        // results: if I hold it now, the next cycle sees it.
        self.touch_member_now(Some(cluster)).await;
        let names = self.slot_members(cluster);
        if !self.holds_lock(cluster) {
            return Ok(());
        }
        let Some(st) = self.last_pg.clone() else {
            return Ok(());
        };
        if st.in_recovery {
            return Ok(());
        }
        if let Some(sysid) = &self.sysid {
            if cluster.initialize.as_deref().is_none_or(|i| i != sysid) {
                self.dcs.put("initialize", sysid, None).await?;
            }
        }
        if cluster.config.is_none() {
            self.dcs
                .create("config", &self.dynamic.raw.to_string())
                .await?;
        }
        if self.dynamic.failsafe_mode {
            // Every member with a REST API, me included (spec §1 `failsafe`).
            let mut list: BTreeMap<String, String> = cluster
                .members
                .values()
                .filter(|m| !m.value.api_url.is_empty())
                .map(|m| (m.name.clone(), m.value.api_url.clone()))
                .collect();
            list.insert(self.cfg.name.clone(), self.member_value().api_url);
            if cluster.failsafe.as_ref() != Some(&list) {
                info!(
                    "failsafe: publishing the member list ({})",
                    list.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                self.dcs
                    .put("failsafe", &serde_json::to_string(&list)?, None)
                    .await?;
            }
        }
        if self.last_slots.as_ref() != Some(&names) && self.dynamic.use_slots {
            self.pg.sync_slots(&names).await?;
            self.last_slots = Some(names);
        }
        let status = StatusValue {
            optime: Some(st.wal_position),
            ..Default::default()
        };
        let text = serde_json::to_string(&status)?;
        if self.last_status_key.as_deref() != Some(&text) {
            self.dcs.put("status", &text, None).await?;
            self.last_status_key = Some(text);
        }
        if let Some(tl) = st.timeline {
            let recorded = cluster.timeline();
            // Not right after my own promotion wrote it (this view was read before).
            if tl > 1 && recorded < tl && self.history_written != Some(tl) {
                self.write_history(cluster, tl, false).await;
            }
        }
        Ok(())
    }

    fn publish(&self, cluster: Option<ClusterView>) {
        let st = self.last_pg.clone().unwrap_or_default();
        let now = Instant::now();
        let leader_until = if self.failsafe_active {
            // Patroni: the primary counts as the leader for another ttl on every confirmed cycle.
            Some(now + self.timing.ttl)
        } else {
            cluster
                .as_ref()
                .filter(|c| self.holds_lock(c))
                .and_then(|_| self.lease.remaining(now))
                .map(|r| now + r)
        };
        let mv = self.member_value();
        self.status_tx.send_modify(|s| {
            s.pg_state = self.pg_state.clone();
            s.role = mv.role.clone();
            s.postmaster_start_time = st.postmaster_start_time.clone();
            s.server_version = st.server_version;
            s.wal_location = (!st.in_recovery && self.last_pg.is_some()).then_some(st.wal_position);
            s.received_location = st.receive_lsn.filter(|_| st.in_recovery);
            s.replayed_location = st.replay_lsn.filter(|_| st.in_recovery);
            s.replayed_timestamp = st.replayed_timestamp.clone();
            s.replay_paused = st.replay_paused;
            s.timeline = st.timeline;
            s.replication_state = mv.replication_state.clone();
            s.replication = st.replication.clone();
            s.database_system_identifier = self.sysid.clone();
            s.failsafe_active = self.failsafe_active;
            if self.failsafe_active {
                s.leader_until = leader_until;
            }
            if let Some(c) = &cluster {
                s.leader_until = leader_until;
                s.paused = c.paused();
                s.cluster = Some(c.clone());
                s.dcs_last_seen = Some(chrono::Utc::now().timestamp() as u64);
            }
            s.tags = mv.tags.clone();
            s.last_cycle = self.last_cycle;
            s.observed_at = Some(self.last_full_observation);
            s.ttl_secs = self.timing.ttl.as_secs();
            s.maximum_lag_on_failover = self.dynamic.maximum_lag_on_failover;
        });
    }

    /// SIGTERM: a leader stops PostgreSQL, records its last position and releases the key so a
    /// replica takes over at once; every node revokes its lease. Paused: leave everything as is.
    async fn shutdown(&mut self) {
        if self.dynamic.pause {
            info!("paused: leaving PostgreSQL running and the leader key in place");
            return;
        }
        let cluster = self.dcs.read_cluster().await.ok().map(|(c, _)| c);
        let was_leader = cluster.as_ref().is_some_and(|c| self.holds_lock(c));
        self.pg_state = "stopping".into();
        // Routers hold new connections from the moment the member key says `stopping`.
        self.touch_member_now(cluster.as_ref()).await;
        let started = Instant::now();
        if let Err(e) = self.pg.stop("fast").await {
            error!("cannot stop PostgreSQL: {e:#}; keeping the leader key");
            return;
        }
        self.callbacks.fire(
            Event::OnStop,
            if was_leader { "primary" } else { "replica" },
        );
        if was_leader {
            let status = self.stopped_status().await;
            match self
                .dcs
                .release_leader_with_status(&self.cfg.name, &status)
                .await
            {
                Ok(_) => info!(
                    "released the leader key ({} ms after SIGTERM)",
                    started.elapsed().as_millis()
                ),
                Err(e) => warn!("cannot release the leader key: {e:#}"),
            }
        }
        self.lease.revoke(&self.dcs).await;
        info!("PostgreSQL stopped; agent exiting");
    }
}

/// The role name callbacks get (Patroni's).
fn role_name(role: PgRole) -> &'static str {
    match role {
        PgRole::Primary => "primary",
        PgRole::Replica => "replica",
    }
}

/// An action failed and has said why in the log already.
#[derive(Debug)]
struct AlreadyLogged;
impl std::fmt::Display for AlreadyLogged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(logged)")
    }
}
impl std::error::Error for AlreadyLogged {}

/// What to do about a failed `pg_basebackup`, from its error text.
/// See `Agent::replay_point`; `streamed`: (postmaster start time, highest timeline streamed).
fn replay_point(st: &PgStatus, streamed: &mut Option<(String, u64)>) -> Option<(u64, u64)> {
    if !st.in_recovery {
        *streamed = None;
        return None;
    }
    let start = st.postmaster_start_time.clone().unwrap_or_default();
    if streamed.as_ref().is_some_and(|(s, _)| *s != start) {
        *streamed = None;
    }
    if st.streaming {
        if let Some(tl) = st.timeline {
            let seen = streamed.as_ref().map_or(0, |(_, t)| *t);
            *streamed = Some((start, tl.max(seen)));
        }
        return None;
    }
    let tl = [
        st.checkpoint_tli,
        st.min_recovery_tli,
        streamed.as_ref().map(|(_, t)| *t),
    ]
    .into_iter()
    .flatten()
    .max()?;
    Some((tl, st.replay_lsn?))
}

/// A pg_rewind error from connecting to the source (libpq: `connection to server at ... failed:
/// ...`, or `could not connect`), before it changed anything; not a connection lost midway.
fn rewind_could_not_connect(error: &str) -> bool {
    (error.contains("connection to server") && error.contains("failed:")
        || error.contains("could not connect to server"))
        && !error.contains("closed the connection")
        && !error.contains("connection lost")
}

fn clone_failure_hint(cause: &str, from: &str) -> String {
    let hint = if cause.contains("password authentication failed") {
        format!(
            "the replication user's password was refused by {from}: `postgresql.authentication.replication` in this node's configuration must match the one the cluster was bootstrapped with"
        )
    } else if cause.contains("no pg_hba.conf entry") {
        format!(
            "{from} refuses this node's address: add a `host replication <user> <this node's address>/32 scram-sha-256` line to `postgresql.pg_hba` (bootstrap.dcs or the local configuration)"
        )
    } else if cause.contains("Connection refused") || cause.contains("could not connect") {
        format!(
            "{from}'s PostgreSQL cannot be reached at the address of its `conn_url`: check its `postgresql.connect_address` and `listen`"
        )
    } else {
        return String::new();
    };
    format!(" (will keep retrying; {hint})")
}

/// Runs `f`, giving up at `deadline` (see `Agent::demotion_point`).
async fn bounded_at<T>(
    deadline: Option<tokio::time::Instant>,
    f: impl std::future::Future<Output = Result<T>>,
    what: &str,
) -> Result<T> {
    match deadline {
        None => f.await,
        Some(d) => tokio::time::timeout_at(d, f).await.unwrap_or_else(|_| {
            Err(anyhow!(
                "etcd {what} given up: my lease is too close to its end to wait any longer"
            ))
        }),
    }
}

/// Host and port of a member's PostgreSQL, from its `conn_url`.
fn upstream_of(cluster: &ClusterView, member: &str) -> Option<Upstream> {
    let m = cluster.members.get(member)?;
    let (host, port) = m.value.conn_host_port()?;
    Some(Upstream {
        member: member.to_string(),
        host,
        port,
    })
}

/// An error after which the agent must stop (it says what the operator should do).
#[derive(Debug)]
pub struct Fatal(pub String);
impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Fatal {}

/// `X.Y` (PostgreSQL ≥ 10) or `X.Y.Z` as server_version_num (e.g. 15.4 → 150004).
fn version_number(v: &str) -> Option<u32> {
    let parts: Vec<u32> = v
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts[..] {
        [major, minor] if major >= 10 => Some(major * 10000 + minor),
        [major, minor, patch] => Some(major * 10000 + minor * 100 + patch),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{replay_point, rewind_could_not_connect};
    use crate::pg::PgStatus;

    /// bench/chaos: replicas that had streamed timeline 8 reported timeline 7 (their last
    /// restartpoint's) once the leader's PostgreSQL died, and were rewound for WAL "past the
    /// fork". The replay timeline is at least what the walreceiver streamed since this
    /// postmaster started; a restarted postmaster forgets it.
    #[test]
    fn the_replay_timeline_remembers_what_was_streamed() {
        let mut streamed = None;
        let mut st = PgStatus {
            in_recovery: true,
            streaming: true,
            timeline: Some(8),
            checkpoint_tli: Some(7),
            replay_lsn: Some(5000),
            postmaster_start_time: Some("t0".into()),
            ..Default::default()
        };
        assert_eq!(
            replay_point(&st, &mut streamed),
            None,
            "streaming: not asked"
        );
        st.streaming = false;
        st.timeline = Some(7); // the restartpoint's, as status() falls back to
        assert_eq!(replay_point(&st, &mut streamed), Some((8, 5000)));
        st.min_recovery_tli = Some(9);
        assert_eq!(replay_point(&st, &mut streamed), Some((9, 5000)));
        st.min_recovery_tli = None;
        st.postmaster_start_time = Some("t1".into());
        assert_eq!(replay_point(&st, &mut streamed), Some((7, 5000)));
        st.in_recovery = false;
        assert_eq!(replay_point(&st, &mut streamed), None);
        assert_eq!(streamed, None);
    }

    /// Only a failure to connect leaves the data directory untouched; anything after that may
    /// have changed it (pg_rewind's own advice: take a fresh copy).
    #[test]
    fn a_rewind_that_could_not_connect_is_told_apart() {
        for e in [
            "pg_rewind failed: pg_rewind: error: connection to server at \"10.97.0.11\", port 5432 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
            "pg_rewind: error: connection to server at \"10.0.0.1\", port 5432 failed: FATAL:  the database system is starting up",
            "pg_rewind: error: connection to server at \"10.0.0.1\", port 5432 failed: session is read-only",
            "pg_rewind: fatal: could not connect to server: No route to host",
        ] {
            assert!(rewind_could_not_connect(e), "{e}");
        }
        for e in [
            "pg_rewind: error: could not fetch remote file \"global/pg_control\": server closed the connection unexpectedly",
            "pg_rewind: fatal: target server must be shut down cleanly",
            "pg_rewind: error: connection to server was lost",
            "pg_rewind: error: could not find common ancestor of the source and target cluster's timelines",
        ] {
            assert!(!rewind_could_not_connect(e), "{e}");
        }
    }
}
