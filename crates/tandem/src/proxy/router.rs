//! The router task: owns the cluster view (from the etcd cache), the health results and the
//! current routing table. On every change it recomputes the table with the pure
//! [`routing::route`], publishes each listener's backends, and fences the backends a listener
//! must no longer use (their connections are closed at once).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_core::cluster::ClusterView;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::config::{ProxyConfig, Role};
use super::health::{self, Checker, HealthReport, Plan};
use super::listener::{BackendStats, Routes, Slot, StatsRegistry};
use super::routing::{self, Backend, Inputs, ListenerSpec, NodeHealth, Source, Table};
use crate::dcs::CacheState;
use crate::peer::PeerClient;

/// What `/status` and `/metrics` read; written by the router task only.
#[derive(Debug, Default)]
pub struct RouterState {
    pub table: Option<Table>,
    pub etcd_synced: bool,
    pub etcd_revision: i64,
    pub view: ClusterView,
    pub health: BTreeMap<String, NodeHealth>,
    /// Changes of each listener's backend list.
    pub routing_changes: BTreeMap<Role, u64>,
    /// Time without a primary before the last new primary was routed.
    pub last_reroute: Option<Duration>,
    pub primary_since: Option<Instant>,
    pub started: Option<Instant>,
}

pub struct Router {
    cfg: Arc<ProxyConfig>,
    specs: Vec<ListenerSpec>,
    client: PeerClient,
    plan: Arc<Plan>,
    view: ClusterView,
    synced: bool,
    revision: i64,
    health: BTreeMap<String, NodeHealth>,
    checkers: HashMap<String, Checker>,
    health_tx: mpsc::Sender<HealthReport>,
    /// (leader name, role, state) per member as last seen: a change kicks every checker.
    fingerprint: Vec<(String, String, String)>,
    leader_cand: Option<Backend>,
    leader_since: Option<Instant>,
    table: Option<Table>,
    slots: HashMap<(Role, Backend), Arc<Slot>>,
    stats: StatsRegistry,
    routes: BTreeMap<Role, watch::Sender<Arc<Routes>>>,
    all_backends: watch::Sender<Arc<Vec<String>>>,
    primary_lost_at: Option<Instant>,
    state: Arc<Mutex<RouterState>>,
    born: Instant,
    ever_synced: bool,
    /// The switchover request (`failover` key, due now) last seen, and since when.
    switchover: Option<String>,
    switchover_since: Option<Instant>,
}

/// How long a starting router waits for etcd before it routes on health checks alone.
const STARTUP_WAIT: Duration = Duration::from_secs(3);

pub struct RouterParts {
    pub routes: BTreeMap<Role, watch::Receiver<Arc<Routes>>>,
    pub all_backends: watch::Receiver<Arc<Vec<String>>>,
    pub state: Arc<Mutex<RouterState>>,
    pub stats: StatsRegistry,
}

impl Router {
    pub fn new(
        cfg: Arc<ProxyConfig>,
        client: PeerClient,
    ) -> (Router, RouterParts, mpsc::Receiver<HealthReport>) {
        let specs: Vec<ListenerSpec> = cfg
            .listeners
            .iter()
            .map(|l| ListenerSpec {
                role: l.role,
                max_lag: l.max_lag,
                fallback_to_primary: l.fallback_to_primary,
            })
            .collect();
        let mut lags: Vec<Option<u64>> = specs
            .iter()
            .filter(|s| s.role != Role::Primary)
            .map(|s| s.max_lag)
            .collect();
        lags.sort();
        lags.dedup();
        let plan = Arc::new(Plan {
            primary: true,
            replica_lags: lags,
            interval: cfg.health_interval,
            timeout: cfg.health_timeout,
        });
        let mut routes = BTreeMap::new();
        let mut route_rx = BTreeMap::new();
        for s in &specs {
            let (tx, rx) = watch::channel(Arc::new(Routes {
                slots: vec![],
                reason: "the router is starting".into(),
            }));
            routes.insert(s.role, tx);
            route_rx.insert(s.role, rx);
        }
        let (all_tx, all_rx) = watch::channel(Arc::new(Vec::new()));
        let (health_tx, health_rx) = mpsc::channel(256);
        let state = Arc::new(Mutex::new(RouterState {
            started: Some(Instant::now()),
            ..Default::default()
        }));
        let stats = Arc::new(Mutex::new(HashMap::new()));
        let r = Router {
            cfg,
            specs,
            client,
            plan,
            view: ClusterView::default(),
            synced: false,
            revision: 0,
            health: BTreeMap::new(),
            checkers: HashMap::new(),
            health_tx,
            fingerprint: vec![],
            leader_cand: None,
            leader_since: None,
            table: None,
            slots: HashMap::new(),
            stats: stats.clone(),
            routes,
            all_backends: all_tx,
            primary_lost_at: Some(Instant::now()),
            state: state.clone(),
            born: Instant::now(),
            ever_synced: false,
            switchover: None,
            switchover_since: None,
        };
        let parts = RouterParts {
            routes: route_rx,
            all_backends: all_rx,
            state,
            stats,
        };
        (r, parts, health_rx)
    }

    pub async fn run(
        mut self,
        mut cache: watch::Receiver<CacheState>,
        mut health_rx: mpsc::Receiver<HealthReport>,
    ) {
        let first = cache.borrow_and_update().clone();
        self.on_cache(&first);
        self.recompute();
        let mut tick = tokio::time::interval(self.cfg.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cache_alive = true;
        loop {
            tokio::select! {
                r = cache.changed(), if cache_alive => match r {
                    Ok(()) => {
                        let st = cache.borrow_and_update().clone();
                        self.on_cache(&st);
                    }
                    Err(_) => {
                        warn!("the etcd cache stopped: routing on health checks alone");
                        cache_alive = false;
                        self.synced = false;
                    }
                },
                Some(rep) = health_rx.recv() => {
                    self.on_health(rep);
                    // Take every report already queued before recomputing.
                    while let Ok(rep) = health_rx.try_recv() {
                        self.on_health(rep);
                    }
                }
                _ = tick.tick() => {}
            }
            self.recompute();
        }
    }

    fn on_cache(&mut self, st: &CacheState) {
        if st.synced != self.synced {
            if st.synced {
                info!(
                    "etcd: in sync (revision {}): routing from the leader and member keys",
                    st.revision
                );
            } else {
                warn!("etcd: unreachable: routing on health checks alone, over the {} members last seen", self.view.members.len());
            }
        }
        self.synced = st.synced;
        if !st.synced {
            return;
        }
        self.revision = st.revision;
        tracing::debug!("etcd: revision {}", st.revision);
        let (view, warnings) = st.view();
        for w in warnings {
            tracing::debug!("etcd: {w}");
        }
        self.view = view;
        // Health checkers follow the member list.
        let members: BTreeMap<String, String> = self
            .view
            .members
            .values()
            .map(|m| (m.name.clone(), m.value.api_url.clone()))
            .collect();
        self.checkers
            .retain(|name, c| members.get(name) == Some(&c.api_url));
        self.health.retain(|name, _| members.contains_key(name));
        for (name, api_url) in &members {
            if !self.checkers.contains_key(name) {
                let c = health::spawn(
                    name.clone(),
                    api_url.clone(),
                    self.client.clone(),
                    self.plan.clone(),
                    self.health_tx.clone(),
                );
                self.checkers.insert(name.clone(), c);
            }
        }
        let mut fp: Vec<(String, String, String)> = self
            .view
            .members
            .values()
            .map(|m| (m.name.clone(), m.value.role.clone(), m.value.state.clone()))
            .collect();
        fp.push((
            "leader".into(),
            self.view.leader_name().unwrap_or_default().into(),
            String::new(),
        ));
        if fp != self.fingerprint {
            self.fingerprint = fp;
            for c in self.checkers.values() {
                c.kick();
            }
        }
        // A switchover request that is due: new connections to the leader wait (see routing).
        let due = self.view.failover_request().filter(|f| {
            f.scheduled_at.as_deref().is_none_or(|at| {
                chrono::DateTime::parse_from_rfc3339(at)
                    .map(|t| t <= chrono::Utc::now())
                    .unwrap_or(false)
            })
        });
        let key = due.map(|f| format!("{:?}", f));
        if key != self.switchover {
            self.switchover_since = key.as_ref().map(|_| Instant::now());
            self.switchover = key;
        }
        let cand = routing::etcd_leader(&self.view).ok().and_then(|m| {
            let (h, p) = m.value.conn_host_port()?;
            Some(Backend {
                name: m.name.clone(),
                addr: format!("{h}:{p}"),
            })
        });
        if cand != self.leader_cand {
            self.leader_since = cand.as_ref().map(|_| Instant::now());
            self.leader_cand = cand;
        }
        let mut addrs: Vec<String> = self
            .view
            .members
            .values()
            .filter_map(|m| {
                let (h, p) = m.value.conn_host_port()?;
                Some(if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                })
            })
            .collect();
        addrs.sort();
        if **self.all_backends.borrow() != addrs {
            self.all_backends.send_replace(Arc::new(addrs));
        }
    }

    fn on_health(&mut self, rep: HealthReport) {
        if self.checkers.get(&rep.name).map(|c| &c.api_url) != Some(&rep.api_url) {
            return;
        }
        let h = self.health.entry(rep.name.clone()).or_default();
        if let Some(o) = rep.primary {
            h.record_primary(o, rep.started, rep.finished);
        }
        for (lag, o) in rep.replica {
            h.record_replica(lag, o, rep.started, rep.finished);
        }
    }

    fn recompute(&mut self) {
        let now = Instant::now();
        // At start-up, give etcd a moment before routing on health checks alone.
        if !self.ever_synced {
            if self.synced {
                self.ever_synced = true;
            } else if now.duration_since(self.born) < STARTUP_WAIT {
                return;
            }
        }
        let stale_after = self.cfg.health_interval * 3 + self.cfg.health_timeout;
        let table = routing::route(
            &Inputs {
                view: &self.view,
                etcd_synced: self.synced,
                health: &self.health,
                leader_since: self.leader_since,
                now,
                stale_after,
                grace: (self.cfg.health_interval * 3).max(Duration::from_secs(3)),
                switchover_since: self.switchover_since,
                drain_limit: self.cfg.hold_timeout,
            },
            &self.specs,
        );
        if self.table.as_ref() != Some(&table) {
            self.apply(&table, now);
            self.table = Some(table);
        }
        if let Ok(mut st) = self.state.lock() {
            st.table = self.table.clone();
            st.etcd_synced = self.synced;
            st.etcd_revision = self.revision;
            st.view = self.view.clone();
            st.health = self.health.clone();
        }
    }

    fn stats_for(&self, role: Role, name: &str) -> Arc<BackendStats> {
        let mut m = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((role, name.to_string())).or_default().clone()
    }

    fn apply(&mut self, table: &Table, now: Instant) {
        let old_primary = self.table.as_ref().and_then(|t| t.primary.clone());
        if old_primary != table.primary || self.table.is_none() {
            match &table.primary {
                Some(p) => {
                    let waited = self.primary_lost_at.take().map(|t| now - t);
                    if let (Some(w), Some(_)) = (waited, &self.table) {
                        info!(
                            "primary: routing to {} ({}) after {} ms without a primary: {}",
                            p.name,
                            p.addr,
                            w.as_millis(),
                            table.primary_reason
                        );
                    } else {
                        info!(
                            "primary: routing to {} ({}): {}",
                            p.name, p.addr, table.primary_reason
                        );
                    }
                    if let Ok(mut st) = self.state.lock() {
                        if self.table.is_some() {
                            st.last_reroute = waited;
                        }
                        st.primary_since = Some(now);
                    }
                }
                None => {
                    if self.primary_lost_at.is_none() {
                        self.primary_lost_at = Some(now);
                    }
                    warn!(
                        "primary: none: {}; new connections wait up to {:?}",
                        table.primary_reason, self.cfg.hold_timeout
                    );
                    if let Ok(mut st) = self.state.lock() {
                        st.primary_since = None;
                    }
                }
            }
        }
        if self.table.as_ref().map(|t| t.source) != Some(table.source)
            && table.source == Source::HealthOnly
        {
            warn!("routing on health checks alone (etcd unreachable)");
        }
        for route in &table.listeners {
            let role = route.role;
            // Fence what this listener must no longer use.
            let gone: Vec<(Role, Backend)> = self
                .slots
                .keys()
                .filter(|(r, b)| *r == role && !route.keep.contains(b))
                .cloned()
                .collect();
            for key in gone {
                if let Some(slot) = self.slots.remove(&key) {
                    let n = slot.stats.active.load(Relaxed);
                    slot.fence.send_replace(true);
                    if n > 0 {
                        warn!(
                            "{role} listener: closing {n} connection(s) to {} ({}): {}",
                            key.1.name,
                            key.1.addr,
                            if role == Role::Primary {
                                table.primary_reason.as_str()
                            } else {
                                "the node is gone or unreachable"
                            }
                        );
                    }
                }
            }
            let mut slots = Vec::with_capacity(route.backends.len());
            for b in &route.backends {
                let key = (role, b.clone());
                let slot = match self.slots.get(&key) {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(Slot::new(b.clone(), self.stats_for(role, &b.name)));
                        self.slots.insert(key, s.clone());
                        s
                    }
                };
                slots.push(slot);
            }
            let reason = if role == Role::Primary {
                table.primary_reason.clone()
            } else if slots.is_empty() {
                format!(
                    "no replica passes the health check ({})",
                    table.primary_reason
                )
            } else {
                String::new()
            };
            if let Some(tx) = self.routes.get(&role) {
                let same = {
                    let cur = tx.borrow();
                    cur.slots.len() == slots.len()
                        && cur.slots.iter().zip(&slots).all(|(a, b)| Arc::ptr_eq(a, b))
                };
                if !same {
                    if role != Role::Primary {
                        info!(
                            "{role} listener: backends now [{}]",
                            slots
                                .iter()
                                .map(|s| s.backend.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                    }
                    if let Ok(mut st) = self.state.lock() {
                        *st.routing_changes.entry(role).or_default() += 1;
                    }
                }
                if !same || tx.borrow().reason != reason {
                    tx.send_replace(Arc::new(Routes { slots, reason }));
                }
            }
        }
    }
}
