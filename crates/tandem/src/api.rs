//! The REST API (spec §5): Patroni's paths and status codes, so that HAProxy health checks,
//! `patronictl` and Patroni peers work against tandem unchanged.
//!
//! The answers come from one pure function, [`route`], over the agent's last published
//! [`NodeStatus`]; the server around it is hyper (HTTP/1.1) with TLS from tokio-rustls.
//!
//! Deliberate differences from Patroni (spec §5.1, DESIGN.md §2):
//! - HTTP/1.1 status lines instead of HTTP/1.0. Like Patroni, the connection is closed after each
//!   response (no keep-alive): health checkers open one connection per check anyway, and it bounds
//!   what one client can hold.
//! - HEAD and OPTIONS answer with the same code GET would give on every path, `/liveness`,
//!   `/readiness`, `/patroni` and `/cluster` included (Patroni answers 503 to `HEAD /liveness`).
//! - HEAD/OPTIONS replies carry the normal headers (`Server`, `Content-Length: 0`), not a bare
//!   status line; text bodies are `text/plain`, not `text/html`.

mod metrics;
pub mod ops;
pub mod security;

use crate::config::{Config, RestApiConfig, VerifyClient};
use crate::listing::{
    is_standby_cluster, member_rows, sync_mode, sync_standbys, MemberRow, SyncMode,
};
use crate::status::NodeStatus;
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tandem_core::cluster::ClusterView;
use tandem_core::dynamic::parse_bool;
use tandem_core::lsn::Lsn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// The Patroni version tandem announces in `/patroni` (`patroni.version`), so that
/// `patronictl`'s version checks treat tandem as a current Patroni.
pub const PATRONI_COMPAT_VERSION: &str = "4.1.5";

/// tandem's own version.
pub fn tandem_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Time a client has to send the request line and headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a fresh DCS read for `GET /cluster` may take before the agent's last view is used.
const FRESH_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Time a client has to send the request body.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on one connection's life (one request, since there is no keep-alive). Slow
/// clients are cut off by the header and body timeouts; this bounds the handlers, which may wait
/// for a switchover (up to `2*max(10, loop_wait)` s) or a PostgreSQL restart.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Largest request body accepted (413 above).
const MAX_BODY_BYTES: u64 = 64 * 1024;
/// Largest request head hyper buffers.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Connections served at once; further clients wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;

/// Who this node is, as the status documents report it.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub scope: String,
    pub name: String,
}

/// A reply body.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    Empty,
    Json(Value),
    Text(String),
    /// Prometheus text format.
    Metrics(String),
}

/// What [`route`] and the handlers answer: a status code, a body and extra headers.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub code: u16,
    pub body: Body,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn json(code: u16, v: Value) -> Reply {
        Reply {
            code,
            body: Body::Json(v),
            headers: Vec::new(),
        }
    }
    pub(crate) fn code(code: u16) -> Reply {
        Reply {
            code,
            body: Body::Empty,
            headers: Vec::new(),
        }
    }
    pub(crate) fn text(code: u16, t: impl Into<String>) -> Reply {
        Reply {
            code,
            body: Body::Text(t.into()),
            headers: Vec::new(),
        }
    }
}

/// Answers one request from the node's status. Pure: no I/O, no clock (`now` is passed in).
pub fn route(
    method: &Method,
    path: &str,
    query: &str,
    st: &NodeStatus,
    node: &Identity,
    now: Instant,
) -> Reply {
    match *method {
        Method::GET => get(path, &Query::parse(query), st, node, now),
        // Health checkers: the code only.
        Method::HEAD | Method::OPTIONS => {
            Reply::code(get(path, &Query::parse(query), st, node, now).code)
        }
        _ => Reply::text(501, format!("Unsupported method ('{method}')\n")),
    }
}

fn get(path: &str, q: &Query, st: &NodeStatus, node: &Identity, now: Instant) -> Reply {
    let segment = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match segment {
        "patroni" => Reply::json(200, status_document(st, node)),
        "cluster" => match &st.cluster {
            Some(view) => Reply::json(200, cluster_document(view, &node.scope)),
            None => Reply::json(503, json!({"error": "no cluster view read from etcd yet"})),
        },
        "history" => match &st.cluster {
            Some(view) => {
                let entries = view
                    .history
                    .as_ref()
                    .map(|h| h.value.iter().map(|e| e.to_json()).collect())
                    .unwrap_or_default();
                Reply::json(200, Value::Array(entries))
            }
            None => Reply::json(503, json!({"error": "no cluster view read from etcd yet"})),
        },
        "config" => match &st.cluster {
            Some(ClusterView {
                config: Some(c), ..
            }) => Reply::json(200, c.value.clone()),
            // Patroni's 502, with a body that says why and what to do.
            Some(view) => Reply::text(
                502,
                match view.invalid_config() {
                    Some(bad) => ops::invalid_config_message(bad),
                    None => {
                        "the config key does not exist in the DCS: is the cluster bootstrapped?"
                            .to_string()
                    }
                },
            ),
            None => Reply::text(502, "no cluster view read from etcd yet"),
        },
        "metrics" => Reply {
            code: 200,
            body: Body::Metrics(metrics::render(st, node, now)),
            headers: Vec::new(),
        },
        "failsafe" => match failsafe_members(st) {
            Some(map) => Reply::json(200, Value::Object(map)),
            None => Reply::text(502, "failsafe_mode is not enabled"),
        },
        "liveness" => Reply::code(if liveness(st, now) { 200 } else { 503 }),
        "readiness" => Reply::code(if readiness(q, st, now) { 200 } else { 503 }),
        _ => Reply::json(
            if health(path, q, st, node, now) {
                200
            } else {
                503
            },
            status_document(st, node),
        ),
    }
}

/// `GET /failsafe`: with `failsafe_mode` on, the leader's `failsafe` key (`name: api_url`), or
/// every member with a REST API until the leader has written it; `None` when the mode is off.
fn failsafe_members(st: &NodeStatus) -> Option<Map<String, Value>> {
    let view = st.cluster.as_ref()?;
    if let Some(m) = view.failsafe.as_ref().filter(|_| failsafe_enabled(view)) {
        return Some(
            m.iter()
                .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                .collect(),
        );
    }
    failsafe_enabled(view).then(|| {
        view.members
            .values()
            .filter(|m| !m.value.api_url.is_empty())
            .map(|m| (m.name.clone(), Value::from(m.value.api_url.clone())))
            .collect()
    })
}

fn failsafe_enabled(view: &ClusterView) -> bool {
    view.config
        .as_ref()
        .and_then(|c| c.value.get("failsafe_mode"))
        .and_then(parse_bool)
        == Some(true)
}

/// Query-string parameters, percent-decoded, in order.
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Query {
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Query(pairs)
    }
    /// First value of `key`.
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A byte size as health checks accept it: `1048576`, `16kB`, `10MB`, `1GB`, `1TB`
/// (PostgreSQL's memory units, powers of 1024). `None` if unparsable or negative.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1024.0,
        "mb" => 1024.0 * 1024.0,
        "gb" => 1024.0 * 1024.0 * 1024.0,
        "tb" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = (n * mult).round();
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Role with the legacy `master` folded into `primary`.
fn role(st: &NodeStatus) -> &str {
    match st.role.as_str() {
        "master" => "primary",
        "" => "uninitialized",
        r => r,
    }
}

/// Tag value as health-check filters compare it: strings as they are, anything else as
/// lower-cased JSON text (`true`, `1`).
fn tag_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string().to_lowercase(),
    }
}

/// The health-check endpoints (spec §5.3), matched by substring of the path.
fn health(path: &str, q: &Query, st: &NodeStatus, node: &Identity, now: Instant) -> bool {
    let path = if path == "/" { "/primary" } else { path };
    let cluster = st.cluster.as_ref();
    let standby_cluster = cluster.is_some_and(is_standby_cluster);
    let role = role(st);
    let holds_lock = if cluster.is_none() && st.paused {
        matches!(role, "primary" | "standby_leader")
    } else {
        st.is_leader(now)
    };
    // Patroni: 200 only for a node that holds the leader lock *and* runs PostgreSQL as a
    // primary. A leader that has just demoted itself (etcd unreachable) still has a few
    // hundred ms of lease left, but must not be routed to.
    let primary_ok = holds_lock && !standby_cluster && role == "primary" && st.is_running();
    let standby_leader_ok =
        holds_lock && standby_cluster && matches!(role, "replica" | "standby_leader");
    let lag_limit = q.get("lag").and_then(parse_size);
    let latest = cluster
        .and_then(ClusterView::last_leader_lsn)
        .unwrap_or(0)
        .max(st.received_location.unwrap_or(0));
    let lagging =
        lag_limit.is_some_and(|lag| latest > st.replayed_location.unwrap_or(0).saturating_add(lag));
    let replica_ok = role == "replica"
        && st.is_running()
        && !(holds_lock && standby_cluster)
        && st.tags.get("noloadbalance").and_then(parse_bool) != Some(true)
        && !lagging
        && q.get("replication_state")
            .is_none_or(|want| st.replication_state.as_deref() == Some(want));
    let mode = cluster.map(sync_mode).unwrap_or(SyncMode::Off);
    let in_sync = cluster.is_some_and(|c| sync_standbys(c).contains(&node.name));
    let (ok, leader_type) = if path.contains("standby_leader") || path.contains("standby-leader") {
        (standby_leader_ok, true)
    } else if path.contains("leader") {
        (holds_lock, true)
    } else if path.contains("master") || path.contains("primary") || path.contains("read-write") {
        (primary_ok, true)
    } else if path.contains("replica") {
        (replica_ok, false)
    } else if path.contains("read-only") && !path.contains("sync") && !path.contains("quorum") {
        (primary_ok || standby_leader_ok || replica_ok, false)
    } else if path.contains("health") {
        (st.is_running(), false)
    } else if cluster.is_some() {
        let ok = match path {
            "/sync" | "/synchronous" => mode == SyncMode::On && in_sync && replica_ok,
            "/quorum" => mode == SyncMode::Quorum && in_sync && replica_ok,
            "/async" | "/asynchronous" => !in_sync && replica_ok,
            "/read-only-sync" | "/read-only-synchronous" => {
                primary_ok || standby_leader_ok || (mode == SyncMode::On && in_sync && replica_ok)
            }
            "/read-only-quorum" => {
                primary_ok
                    || standby_leader_ok
                    || (mode == SyncMode::Quorum && in_sync && replica_ok)
            }
            _ => false,
        };
        (ok, false)
    } else {
        (false, false)
    };
    ok && (leader_type || tags_match(q, st))
}

/// `tag_<key>=<value>` filters: every one must name a tag this node has, with that value.
fn tags_match(q: &Query, st: &NodeStatus) -> bool {
    q.0.iter()
        .filter_map(|(k, v)| k.strip_prefix("tag_").map(|k| (k, v)))
        .all(|(k, want)| st.tags.get(k).is_some_and(|have| tag_text(have) == *want))
}

/// `/liveness`: the HA loop ran recently enough (spec §5.4). Always alive while paused.
fn liveness(st: &NodeStatus, now: Instant) -> bool {
    if st.paused {
        return true;
    }
    let ttl = Duration::from_secs(if st.ttl_secs > 0 {
        st.ttl_secs
    } else {
        tandem_core::dynamic::DEFAULT_TTL
    });
    let limit = if matches!(role(st), "primary" | "standby_leader") {
        ttl
    } else {
        ttl * 2
    };
    st.last_cycle.is_some_and(|t| t + limit > now)
}

/// `/readiness?lag=&mode=apply|write`: the leader, or a streaming replica close enough to the
/// primary to take traffic (spec §5.4).
fn readiness(q: &Query, st: &NodeStatus, now: Instant) -> bool {
    if st.is_leader(now) {
        return true;
    }
    if !st.is_running() || st.replication_state.as_deref() != Some("streaming") {
        return false;
    }
    let optime = st.cluster.as_ref().and_then(ClusterView::last_leader_lsn);
    if optime.is_none() && st.received_location.is_none() {
        return false; // no reference position (Patroni: only when failsafe is active)
    }
    let latest = optime.unwrap_or(0).max(st.received_location.unwrap_or(0));
    let position = if q.get("mode") == Some("write") {
        st.received_location
    } else {
        st.replayed_location
    };
    let limit = q
        .get("lag")
        .and_then(parse_size)
        .unwrap_or(st.maximum_lag_on_failover);
    latest.saturating_sub(position.unwrap_or(0)) <= limit
}

/// The status document of `GET /patroni` and the health endpoints (spec §5.2).
pub fn status_document(st: &NodeStatus, node: &Identity) -> Value {
    let mut d = Map::new();
    let state = if st.pg_state.is_empty() {
        "unknown"
    } else {
        st.pg_state.as_str()
    };
    d.insert("state".into(), state.into());
    if let Some(t) = &st.postmaster_start_time {
        d.insert("postmaster_start_time".into(), t.clone().into());
    }
    let role = role(st);
    d.insert("role".into(), role.into());
    if let Some(v) = st.server_version {
        d.insert("server_version".into(), v.into());
    }
    if role == "primary" {
        if let Some(l) = st.wal_location {
            d.insert("xlog".into(), json!({ "location": l }));
        }
    } else if st.received_location.is_some() || st.replayed_location.is_some() {
        d.insert(
            "xlog".into(),
            json!({
                "received_location": st.received_location.or(st.replayed_location),
                "replayed_location": st.replayed_location,
                "replayed_timestamp": st.replayed_timestamp,
                "paused": st.replay_paused,
            }),
        );
    }
    if let Some(tl) = st.timeline {
        d.insert("timeline".into(), tl.into());
    }
    if let Some(rs) = &st.replication_state {
        d.insert("replication_state".into(), rs.clone().into());
    }
    if !st.replication.is_empty() {
        let rows = st
            .replication
            .iter()
            .map(|r| {
                json!({
                    "usename": r.usename,
                    "application_name": r.application_name,
                    "client_addr": r.client_addr,
                    "state": r.state,
                    "sync_state": r.sync_state,
                    "sync_priority": r.sync_priority,
                })
            })
            .collect();
        d.insert("replication".into(), Value::Array(rows));
    }
    match &st.cluster {
        Some(view) => {
            if sync_standbys(view).contains(&node.name) {
                let key = if sync_mode(view) == SyncMode::Quorum {
                    "quorum_standby"
                } else {
                    "sync_standby"
                };
                d.insert(key.into(), true.into());
            }
            if view.leader.is_none() {
                d.insert("cluster_unlocked".into(), true.into());
            }
        }
        None => {
            d.insert("cluster_unlocked".into(), true.into());
        }
    }
    if st.paused {
        d.insert("pause".into(), true.into());
    }
    if let Some(t) = st.dcs_last_seen {
        d.insert("dcs_last_seen".into(), t.into());
    }
    d.insert("tags".into(), Value::Object(st.tags.clone()));
    if let Some(id) = &st.database_system_identifier {
        d.insert("database_system_identifier".into(), id.clone().into());
    }
    if st.pending_restart {
        d.insert("pending_restart".into(), true.into());
    }
    if st.failsafe_active {
        d.insert("failsafe_mode_is_active".into(), true.into());
    }
    d.insert(
        "patroni".into(),
        json!({ "version": PATRONI_COMPAT_VERSION, "scope": node.scope, "name": node.name }),
    );
    d.insert("tandem".into(), json!({ "version": tandem_version() }));
    Value::Object(d)
}

/// `GET /cluster` (spec §5.4).
pub fn cluster_document(view: &ClusterView, scope: &str) -> Value {
    let members: Vec<Value> = member_rows(view).iter().map(member_json).collect();
    let mut d = Map::new();
    d.insert("members".into(), Value::Array(members));
    d.insert("scope".into(), scope.into());
    if view.paused() {
        d.insert("pause".into(), true.into());
    }
    if let Some(f) = view.failover_request() {
        if let Some(at) = &f.scheduled_at {
            let mut s = Map::new();
            s.insert("at".into(), at.clone().into());
            if let Some(l) = &f.leader {
                s.insert("from".into(), l.clone().into());
            }
            if let Some(m) = &f.member {
                s.insert("to".into(), m.clone().into());
            }
            d.insert("scheduled_switchover".into(), Value::Object(s));
        }
    }
    Value::Object(d)
}

fn member_json(r: &MemberRow) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), r.name.clone().into());
    m.insert("role".into(), r.role.as_str().into());
    m.insert("state".into(), r.state.clone().into());
    m.insert("api_url".into(), r.api_url.clone().into());
    if let Some(h) = &r.host {
        m.insert("host".into(), h.clone().into());
    }
    if let Some(p) = r.port {
        m.insert("port".into(), p.into());
    }
    if let Some(tl) = r.timeline {
        m.insert("timeline".into(), tl.into());
    }
    if r.pending_restart {
        m.insert("pending_restart".into(), true.into());
    }
    if let Some(v) = &r.pending_restart_reason {
        m.insert("pending_restart_reason".into(), v.clone());
    }
    if let Some(v) = &r.scheduled_restart {
        m.insert("scheduled_restart".into(), v.clone());
    }
    if !r.tags.is_empty() {
        m.insert("tags".into(), Value::Object(r.tags.clone()));
    }
    for (lsn_key, lag_key, point) in [
        ("receive_lsn", "receive_lag", r.receive),
        ("replay_lsn", "replay_lag", r.replay),
        ("lsn", "lag", r.lsn),
    ] {
        if let Some(p) = point {
            if let Some(l) = p.lsn {
                m.insert(lsn_key.into(), Lsn(l).to_string().into());
            }
            m.insert(
                lag_key.into(),
                p.lag.map(Value::from).unwrap_or_else(|| "unknown".into()),
            );
        }
    }
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------------
// The server.

/// Binds `restapi.listen` (`host:port`; an empty host or `*` means every address).
pub async fn bind(cfg: &Config) -> Result<TcpListener> {
    bind_addr(&cfg.restapi.listen).await
}

async fn bind_addr(listen: &str) -> Result<TcpListener> {
    let listen = listen.trim();
    let (host, port) = listen.rsplit_once(':').ok_or_else(|| {
        anyhow!("restapi.listen: '{listen}' is not host:port (for example 0.0.0.0:8008)")
    })?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("restapi.listen: '{port}' in '{listen}' is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let result = if host.is_empty() || host == "*" {
        // Both address families when the system allows it.
        match TcpListener::bind(("::", port)).await {
            Ok(l) => Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(e),
            Err(_) => TcpListener::bind(("0.0.0.0", port)).await,
        }
    } else {
        TcpListener::bind((host, port)).await
    };
    result.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => anyhow!(
            "restapi.listen: {listen} is already in use (another tandem or Patroni agent on this host?): stop it or choose another port"
        ),
        std::io::ErrorKind::AddrNotAvailable => {
            anyhow!("restapi.listen: {host} is not an address of this host: use one of its addresses, or 0.0.0.0")
        }
        _ => anyhow!("restapi.listen: cannot listen on {listen}: {e}"),
    })
}

/// Serves the REST API on `listener` until `shutdown` turns true (or its sender is dropped).
/// `control` carries restart/reload/reinitialize requests to the agent; `dcs` serves the
/// configuration and switchover endpoints.
/// `tls` holds the certificates (see [`ServerTls`]); `peer` is the agent's client for other
/// members, shared so that a reload renews its certificates here too.
pub struct Serve {
    pub cfg: Arc<Config>,
    pub status: watch::Receiver<NodeStatus>,
    pub listener: TcpListener,
    pub shutdown: watch::Receiver<bool>,
    pub control: crate::control::Control,
    pub dcs: crate::dcs::Dcs,
    pub tls: ServerTls,
    pub peer: crate::peer::PeerClient,
}

pub async fn serve(s: Serve) -> Result<()> {
    let node = Identity {
        scope: s.cfg.scope.clone(),
        name: s.cfg.name.clone(),
    };
    let ops = ops::Ops {
        dcs: Some(s.dcs),
        control: Some(s.control),
        peer: Some(s.peer),
    };
    Server::new(&s.cfg.restapi, s.tls, node, ops)
        .run(s.status, s.listener, s.shutdown)
        .await
}

/// The REST server's TLS setup, which a reload replaces while the server runs: each connection
/// takes the one current when it is accepted, so connections already open keep theirs. Clones
/// share it (the agent keeps one to reload, the server reads another).
#[derive(Clone, Default)]
pub struct ServerTls {
    current: Arc<std::sync::RwLock<Option<Arc<tokio_rustls::rustls::ServerConfig>>>>,
}

impl ServerTls {
    /// Reads `restapi`'s certificate files; without `restapi.certfile` the server speaks plain HTTP.
    pub fn new(api: &RestApiConfig) -> Result<ServerTls> {
        Ok(ServerTls {
            current: Arc::new(std::sync::RwLock::new(server_tls(api)?)),
        })
    }

    /// Reads the certificate, key and CA files again (the same paths with new contents, or new
    /// paths) and serves the next connections with them. On an error, which names the setting
    /// and the file, the running setup stays. Returns the files read ("restapi.certfile
    /// /etc/tandem/rest.crt, ...", empty for plain HTTP) for the log.
    pub fn reload(&self, api: &RestApiConfig) -> Result<String> {
        let new = server_tls(api)?;
        match self.current.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
        let keyfile = api.keyfile.as_ref().or(api.certfile.as_ref());
        let cafile = api
            .cafile
            .as_ref()
            .filter(|_| api.verify_client != VerifyClient::None);
        let files = [
            api.certfile.as_ref().map(|p| ("restapi.certfile", p)),
            keyfile.map(|p| ("restapi.keyfile", p)),
            cafile.map(|p| ("restapi.cafile", p)),
        ];
        Ok(match &api.certfile {
            None => String::new(),
            Some(_) => files
                .into_iter()
                .flatten()
                .map(|(k, p)| format!("{k} {}", p.display()))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The acceptor for a connection accepted now (`None`: plain HTTP).
    fn acceptor(&self) -> Option<TlsAcceptor> {
        let current = match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        current.map(TlsAcceptor::from)
    }
}

/// The endpoints that change something: (method, first path segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unsafe {
    PatchConfig,
    PutConfig,
    Switchover,
    Failover,
    DeleteSwitchover,
    Restart,
    DeleteRestart,
    Reload,
    Reinitialize,
    Failsafe,
}

impl Unsafe {
    fn of(method: &Method, path: &str) -> Option<Unsafe> {
        let segment = path.trim_start_matches('/').split('/').next().unwrap_or("");
        Some(match (method.as_str(), segment) {
            ("PATCH", "config") => Unsafe::PatchConfig,
            ("PUT", "config") => Unsafe::PutConfig,
            ("POST", "switchover") => Unsafe::Switchover,
            ("POST", "failover") => Unsafe::Failover,
            ("DELETE", "switchover") => Unsafe::DeleteSwitchover,
            ("POST", "restart") => Unsafe::Restart,
            ("DELETE", "restart") => Unsafe::DeleteRestart,
            ("POST", "reload") => Unsafe::Reload,
            ("POST", "reinitialize") => Unsafe::Reinitialize,
            ("POST", "failsafe") => Unsafe::Failsafe,
            _ => return None,
        })
    }
    /// Whether a body must be sent (411 without Content-Length, 400 when empty).
    fn body_required(self) -> bool {
        matches!(
            self,
            Unsafe::PatchConfig
                | Unsafe::PutConfig
                | Unsafe::Switchover
                | Unsafe::Failover
                | Unsafe::Failsafe
        )
    }
    fn reads_body(self) -> bool {
        self.body_required() || matches!(self, Unsafe::Restart | Unsafe::Reinitialize)
    }
}

struct Server {
    node: Identity,
    tls: ServerTls,
    /// `Server` plus `restapi.http_extra_headers`, added to every response.
    headers: HeaderMap,
    api: RestApiConfig,
    allowlist: Vec<security::AllowEntry>,
    ops: ops::Ops,
}

/// What the connection knows about the client.
#[derive(Clone, Copy, Debug)]
struct Peer {
    addr: std::net::SocketAddr,
    /// The connection is TLS (the certificates may have been switched off by a reload since).
    tls: bool,
    client_cert: bool,
}

impl Server {
    fn new(api: &RestApiConfig, tls: ServerTls, node: Identity, ops: ops::Ops) -> Server {
        let mut headers = HeaderMap::new();
        let server = format!("tandem/{}", tandem_version());
        headers.insert(
            SERVER,
            HeaderValue::from_str(&server).unwrap_or(HeaderValue::from_static("tandem")),
        );
        for (k, v) in &api.http_extra_headers {
            match (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => warn!("restapi.http_extra_headers: '{k}' is not a valid HTTP header name and value: ignored"),
            }
        }
        let mut allowlist = Vec::new();
        for entry in &api.allowlist {
            match security::AllowEntry::parse(entry) {
                Some(e) => allowlist.push(e),
                None => warn!("restapi.allowlist: '{entry}' is not an address, a network (10.0.0.0/8) or a host name: ignored"),
            }
        }
        if !api.allowlist.is_empty() && allowlist.is_empty() && !api.allowlist_include_members {
            warn!("restapi.allowlist has no usable entry: every state-changing request will be refused");
        }
        Server {
            node,
            tls,
            headers,
            api: api.clone(),
            allowlist,
            ops,
        }
    }

    async fn run(
        self,
        status: watch::Receiver<NodeStatus>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let scheme = if self.tls.acceptor().is_some() {
            "https"
        } else {
            "http"
        };
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        info!("REST API listening on {scheme}://{local}");
        let server = Arc::new(self);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.context("connection limiter closed")?,
                changed = shutdown.changed() => { if changed.is_err() { break } continue }
            };
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        warn!("REST API: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                changed = shutdown.changed() => { if changed.is_err() { break } continue }
            };
            let _ = stream.set_nodelay(true);
            let server = server.clone();
            let status = status.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let work = async {
                    match server.tls.acceptor() {
                        None => {
                            let p = Peer {
                                addr: peer,
                                tls: false,
                                client_cert: false,
                            };
                            server.connection(stream, status, p).await
                        }
                        Some(acceptor) => match tokio::time::timeout(
                            TLS_HANDSHAKE_TIMEOUT,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls)) => {
                                let p = Peer {
                                    addr: peer,
                                    tls: true,
                                    client_cert: tls
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .is_some_and(|c| !c.is_empty()),
                                };
                                server.connection(tls, status, p).await
                            }
                            Ok(Err(e)) => debug!("REST API: TLS handshake with {peer} failed: {e}"),
                            Err(_) => debug!("REST API: TLS handshake with {peer} timed out"),
                        },
                    }
                };
                if tokio::time::timeout(CONNECTION_TIMEOUT, work)
                    .await
                    .is_err()
                {
                    debug!("REST API: connection from {peer} closed after {CONNECTION_TIMEOUT:?}");
                }
            });
        }
        info!("REST API on {local} stopped");
        Ok(())
    }

    async fn connection<S>(self: &Arc<Self>, io: S, status: watch::Receiver<NodeStatus>, peer: Peer)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let server = self.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let server = server.clone();
            let status = status.clone();
            async move {
                let reply = server.handle(req, &status, peer).await;
                Ok::<_, Infallible>(server.response(reply))
            }
        });
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(false)
            .max_buf_size(MAX_HEAD_BYTES);
        if let Err(e) = http.serve_connection(TokioIo::new(io), svc).await {
            debug!("REST API: connection error: {e}");
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        status: &watch::Receiver<NodeStatus>,
        peer: Peer,
    ) -> Reply {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let reply = if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
            Reply::text(
                413,
                format!("request body larger than {MAX_BODY_BYTES} bytes\n"),
            )
        } else if let Some(op) = Unsafe::of(&method, &path) {
            self.unsafe_request(op, req, declared, status, peer).await
        } else if let Some(fresh) = self.fresh_view(&method, &path).await {
            // /cluster, /config and /history read the DCS afresh, as Patroni's do.
            let mut st = status.borrow().clone();
            st.cluster = Some(fresh);
            route(&method, &path, "", &st, &self.node, Instant::now())
        } else {
            self.refresh_if_stale(status).await;
            let st = status.borrow();
            route(
                &method,
                &path,
                req.uri().query().unwrap_or(""),
                &st,
                &self.node,
                Instant::now(),
            )
        };
        if reply.code >= 400 && !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
            info!(
                "REST API: {method} {path} from {} -> {}",
                peer.addr.ip(),
                reply.code
            );
        } else {
            debug!("REST API: {method} {path} -> {}", reply.code);
        }
        reply
    }

    /// Status answers come from the agent's snapshot; when the PostgreSQL part of it is older
    /// than a second, ask the agent for a fresh one (waiting at most a second: during a long
    /// action the snapshot serves as it is).
    async fn refresh_if_stale(&self, status: &watch::Receiver<NodeStatus>) {
        let stale = status
            .borrow()
            .observed_at
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        if let (true, Some(control)) = (stale, &self.ops.control) {
            let _ = control
                .request(crate::control::Request::Refresh, Duration::from_secs(1))
                .await;
        }
    }

    /// For `GET /cluster|/config|/history`, the cluster as the DCS holds it now (`None` for other
    /// requests, or when the DCS does not answer: the agent's last view serves then).
    async fn fresh_view(&self, method: &Method, path: &str) -> Option<ClusterView> {
        let segment = path.trim_start_matches('/').split('/').next().unwrap_or("");
        if *method != Method::GET || !matches!(segment, "cluster" | "config" | "history") {
            return None;
        }
        let dcs = self.ops.dcs.as_ref()?;
        match tokio::time::timeout(FRESH_READ_TIMEOUT, dcs.read_cluster()).await {
            Ok(Ok((view, _))) => Some(view),
            _ => None,
        }
    }

    /// A state-changing request: access checks, then the body, then the handler.
    async fn unsafe_request(
        &self,
        op: Unsafe,
        req: Request<Incoming>,
        declared: Option<u64>,
        status: &watch::Receiver<NodeStatus>,
        peer: Peer,
    ) -> Reply {
        let member_hosts = || {
            status
                .borrow()
                .cluster
                .as_ref()
                .map(|v| {
                    v.members
                        .values()
                        .filter_map(|m| security::url_host(&m.value.api_url))
                        .collect()
                })
                .unwrap_or_default()
        };
        let caller = security::Caller {
            ip: peer.addr.ip(),
            client_cert: peer.client_cert,
            tls: peer.tls,
            authorization: req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        };
        let check_members = op != Unsafe::Failsafe;
        if let Err(refusal) = security::check(
            &self.api,
            &self.allowlist,
            &caller,
            check_members,
            member_hosts,
        )
        .await
        {
            let mut r = Reply::text(refusal.code, refusal.message);
            if refusal.code == 401 {
                r.headers
                    .push(("WWW-Authenticate", "Basic realm=\"Patroni\"".into()));
            }
            return r;
        }
        let body = if op.reads_body() {
            if declared.is_none() && op.body_required() {
                return Reply::text(
                    411,
                    "Content-Length required: send a JSON object with its length",
                );
            }
            let bytes = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match ops::parse_body(&bytes, op.body_required()) {
                Ok(b) => b,
                Err(r) => return r,
            }
        } else {
            ops::Object::new()
        };
        let paused = status.borrow().paused;
        match op {
            Unsafe::PatchConfig => self.ops.patch_config(body).await,
            Unsafe::PutConfig => self.ops.put_config(body).await,
            Unsafe::Switchover => self.ops.switchover(body, ops::Action::Switchover).await,
            Unsafe::Failover => self.ops.switchover(body, ops::Action::Failover).await,
            Unsafe::DeleteSwitchover => self.ops.delete_switchover().await,
            Unsafe::Restart => self.ops.restart(body, paused).await,
            Unsafe::DeleteRestart => self.ops.delete_restart().await,
            Unsafe::Reload => self.ops.reload().await,
            Unsafe::Reinitialize => self.ops.reinitialize(body).await,
            Unsafe::Failsafe => {
                let r = failsafe_post(&status.borrow(), &body);
                if r.code == 200 {
                    if let (Some(c), Some(Value::String(name))) =
                        (&self.ops.control, body.get("name"))
                    {
                        c.failsafe_pings().record(name);
                    }
                }
                r
            }
        }
    }

    fn response(&self, reply: Reply) -> Response<Full<Bytes>> {
        let (body, content_type) = match reply.body {
            Body::Empty => (Bytes::new(), None),
            Body::Json(v) => (
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                Some("application/json"),
            ),
            Body::Text(t) => (Bytes::from(t), Some("text/plain; charset=utf-8")),
            Body::Metrics(t) => (
                Bytes::from(t),
                Some("text/plain; version=0.0.4; charset=utf-8"),
            ),
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() =
            StatusCode::from_u16(reply.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        for (k, v) in &self.headers {
            h.append(k, v.clone());
        }
        if let Some(ct) = content_type {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        for (k, v) in reply.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                h.insert(k, v);
            }
        }
        resp
    }
}

/// `POST /failsafe` (spec §2.6): a replica answers `Accepted` with its WAL position in an `lsn`
/// header; the primary refuses; without failsafe mode, 502. The body names the sender
/// (`{"name", "conn_url", "api_url", "slots"}`).
fn failsafe_post(st: &NodeStatus, body: &ops::Object) -> Reply {
    if !st.cluster.as_ref().is_some_and(failsafe_enabled) {
        return Reply::text(502, "failsafe_mode is not enabled");
    }
    match body.get("name") {
        Some(Value::String(n)) if !n.is_empty() => {}
        _ => {
            return Reply::text(
                400,
                "POST /failsafe needs a JSON body with the sender's member name: {\"name\": \"pg0\", \"api_url\": ..., \"conn_url\": ...}",
            )
        }
    }
    if role(st) == "primary" {
        return Reply::text(500, "Running as a leader");
    }
    let lsn = st
        .received_location
        .unwrap_or(0)
        .max(st.replayed_location.unwrap_or(0));
    let mut r = Reply::text(200, "Accepted");
    r.headers.push(("lsn", lsn.to_string()));
    r
}

/// Reads a request body of at most [`MAX_BODY_BYTES`], within [`BODY_READ_TIMEOUT`].
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    use http_body_util::{BodyExt, Limited};
    let limited = Limited::new(req.into_body(), MAX_BODY_BYTES as usize);
    match tokio::time::timeout(BODY_READ_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Reply::text(
            413,
            format!("request body larger than {MAX_BODY_BYTES} bytes\n"),
        )),
        Ok(Err(e)) => Err(Reply::text(
            400,
            format!("cannot read the request body: {e}"),
        )),
        Err(_) => Err(Reply::text(
            408,
            format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
        )),
    }
}

/// The rustls server configuration for `restapi`, or `None` without `certfile` (plain HTTP).
fn server_tls(api: &RestApiConfig) -> Result<Option<Arc<tokio_rustls::rustls::ServerConfig>>> {
    use tokio_rustls::rustls::server::WebPkiClientVerifier;
    use tokio_rustls::rustls::ServerConfig;
    let Some(certfile) = &api.certfile else {
        return Ok(None);
    };
    let certs = tls::load_certs(certfile).context("restapi.certfile")?;
    let keyfile = api.keyfile.as_deref().unwrap_or(certfile);
    let key = tls::load_private_key(keyfile).context(if api.keyfile.is_some() {
        "restapi.keyfile"
    } else {
        "restapi.certfile (no keyfile given)"
    })?;
    let provider = tls::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS setup")?;
    let optional = match api.verify_client {
        VerifyClient::None => None,
        VerifyClient::Optional => Some(true),
        VerifyClient::Required => Some(false),
    };
    let builder = match (optional, &api.cafile) {
        (None, _) => builder.with_no_client_auth(),
        (Some(optional), Some(cafile)) => {
            let roots = tls::load_roots(cafile).context("restapi.cafile")?;
            let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if optional {
                verifier = verifier.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(verifier.build().context("restapi.cafile")?)
        }
        (Some(_), None) => {
            return Err(anyhow!("restapi.verify_client is set but restapi.cafile is not: add the CA that signs client certificates, or set verify_client: none"))
        }
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        anyhow!(
            "restapi.certfile/keyfile: the key in {} does not fit the certificate in {} ({e})",
            keyfile.display(),
            certfile.display()
        )
    })?;
    Ok(Some(Arc::new(config)))
}

/// PEM loading shared by the server and the peer client ([`crate::peer`]).
pub mod tls {
    use anyhow::{anyhow, Context, Result};
    use std::path::Path;
    use std::sync::Arc;
    use tokio_rustls::rustls::crypto::CryptoProvider;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::RootCertStore;

    /// The crypto provider tandem uses everywhere (ring).
    pub fn provider() -> Arc<CryptoProvider> {
        Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
    }

    fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// Every certificate in a PEM file (other blocks, such as a key, are skipped).
    pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
        let pem = read(path)?;
        let certs = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("{}: invalid PEM ({e})", path.display()))?;
        if certs.is_empty() {
            return Err(anyhow!(
                "{}: no certificate found (expected a '-----BEGIN CERTIFICATE-----' block)",
                path.display()
            ));
        }
        Ok(certs)
    }

    /// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
    pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
        let pem = read(path)?;
        match rustls_pemfile::private_key(&mut pem.as_slice()) {
            Ok(Some(key)) => Ok(key),
            Ok(None) if pem.windows(9).any(|w| w == b"ENCRYPTED") => Err(anyhow!(
                "{}: the private key is encrypted, which tandem does not read yet: decrypt it (openssl pkey -in KEY -out KEY.plain) and point to the result",
                path.display()
            )),
            Ok(None) => Err(anyhow!("{}: no private key found (expected a '-----BEGIN PRIVATE KEY-----' block)", path.display())),
            Err(e) => Err(anyhow!("{}: invalid PEM ({e})", path.display())),
        }
    }

    /// A trust store holding every certificate of a PEM file.
    pub fn load_roots(path: &Path) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for cert in load_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| anyhow!("{}: not a usable CA certificate ({e})", path.display()))?;
        }
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CtlConfig;
    use crate::peer::{Caller, PeerClient};
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use tandem_core::cluster::{LeaderKey, Member, MemberValue, StatusValue, Versioned};

    const SECOND: Duration = Duration::from_secs(1);

    fn node(name: &str) -> Identity {
        Identity {
            scope: "batman".into(),
            name: name.into(),
        }
    }

    fn view() -> ClusterView {
        let member = |name: &str, role: &str| {
            let value = MemberValue {
                conn_url: format!(
                    "postgres://10.0.0.{}:5432/postgres",
                    if name == "pg0" { 1 } else { 2 }
                ),
                api_url: format!("http://{name}:8008/patroni"),
                state: "running".into(),
                role: role.into(),
                xlog_location: Some(if role == "primary" { 1000 } else { 900 }),
                receive_lsn: (role == "replica").then_some(900),
                replay_lsn: (role == "replica").then_some(800),
                replication_state: (role == "replica").then(|| "streaming".into()),
                timeline: Some(2),
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
        };
        ClusterView {
            initialize: Some("7277694203142172922".into()),
            config: Some(Versioned {
                value: json!({"ttl": 30}),
                mod_revision: 1,
            }),
            leader: Some(LeaderKey {
                name: "pg0".into(),
                lease: 1,
                mod_revision: 1,
            }),
            members: [member("pg0", "primary"), member("pg1", "replica")]
                .into_iter()
                .collect(),
            status: Some(StatusValue {
                optime: Some(1000),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn primary(now: Instant) -> NodeStatus {
        NodeStatus {
            pg_state: "running".into(),
            role: "primary".into(),
            wal_location: Some(1000),
            timeline: Some(2),
            leader_until: Some(now + 10 * SECOND),
            cluster: Some(view()),
            last_cycle: Some(now),
            ttl_secs: 30,
            maximum_lag_on_failover: 1_048_576,
            server_version: Some(160004),
            database_system_identifier: Some("7277694203142172922".into()),
            ..Default::default()
        }
    }

    fn replica(now: Instant) -> NodeStatus {
        NodeStatus {
            role: "replica".into(),
            wal_location: None,
            received_location: Some(900),
            replayed_location: Some(800),
            replication_state: Some("streaming".into()),
            leader_until: None,
            ..primary(now)
        }
    }

    fn code(method: Method, path_query: &str, st: &NodeStatus, now: Instant) -> u16 {
        let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
        route(
            &method,
            path,
            query,
            st,
            &node(if st.role == "primary" { "pg0" } else { "pg1" }),
            now,
        )
        .code
    }

    fn codes(st: &NodeStatus, now: Instant, paths: &[&str]) -> Vec<u16> {
        paths
            .iter()
            .map(|p| code(Method::GET, p, st, now))
            .collect()
    }

    const HEALTH: &[&str] = &[
        "/",
        "/primary",
        "/master",
        "/leader",
        "/read-write",
        "/standby-leader",
        "/replica",
        "/read-only",
        "/health",
        "/nonsense",
    ];

    #[test]
    fn primary_replica_and_stopped_codes() {
        let now = Instant::now();
        assert_eq!(
            codes(&primary(now), now, HEALTH),
            [200, 200, 200, 200, 200, 503, 503, 200, 200, 503]
        );
        assert_eq!(
            codes(&replica(now), now, HEALTH),
            [503, 503, 503, 503, 503, 503, 200, 200, 200, 503]
        );
        let stopped = NodeStatus {
            pg_state: "stopped".into(),
            ..replica(now)
        };
        assert_eq!(
            codes(&stopped, now, HEALTH),
            [503, 503, 503, 503, 503, 503, 503, 503, 503, 503]
        );
        // The lease ran out: no longer the leader, whatever PostgreSQL says.
        let expired = primary(now - 20 * SECOND);
        assert_eq!(
            codes(
                &expired,
                now,
                &["/primary", "/leader", "/read-only", "/health"]
            ),
            [503, 503, 503, 200]
        );
    }

    #[test]
    fn standby_cluster_leader() {
        let now = Instant::now();
        let mut st = replica(now);
        st.role = "standby_leader".into();
        st.leader_until = Some(now + SECOND);
        st.cluster.as_mut().unwrap().config = Some(Versioned {
            value: json!({"standby_cluster": {"host": "10.9.9.9", "port": 5432}}),
            mod_revision: 2,
        });
        assert_eq!(
            codes(
                &st,
                now,
                &[
                    "/standby-leader",
                    "/standby_leader",
                    "/leader",
                    "/primary",
                    "/read-write",
                    "/replica",
                    "/read-only"
                ]
            ),
            [200, 200, 200, 503, 503, 503, 200]
        );
    }

    #[test]
    fn paused_without_dcs_uses_role() {
        let now = Instant::now();
        let st = NodeStatus {
            cluster: None,
            paused: true,
            leader_until: None,
            ..primary(now)
        };
        assert_eq!(
            codes(&st, now, &["/primary", "/leader", "/replica"]),
            [200, 200, 503]
        );
        let body = route(&Method::GET, "/patroni", "", &st, &node("pg0"), now).body;
        let Body::Json(doc) = body else { panic!() };
        assert_eq!(
            (doc["pause"].clone(), doc["cluster_unlocked"].clone()),
            (json!(true), json!(true))
        );
    }

    #[test]
    fn replica_lag_state_and_tag_filters() {
        let now = Instant::now();
        let mut st = replica(now);
        st.tags.insert("zone".into(), json!("a"));
        st.tags.insert("nosync".into(), json!(true));
        // optime 1000, replayed 800: 200 bytes behind.
        let paths = [
            "/replica?lag=200",
            "/replica?lag=199",
            "/replica?lag=1kB",
            "/replica?lag=16MB",
            "/replica?lag=bogus",
            "/read-only?lag=100",
        ];
        assert_eq!(codes(&st, now, &paths), [200, 503, 200, 200, 200, 503]);
        let paths = [
            "/replica?replication_state=streaming",
            "/replica?replication_state=in%20archive%20recovery",
            "/replica?replication_state=in+archive+recovery",
        ];
        assert_eq!(codes(&st, now, &paths), [200, 503, 503]);
        let paths = [
            "/replica?tag_zone=a",
            "/replica?tag_zone=b",
            "/replica?tag_rack=1",
            "/replica?tag_nosync=true",
            "/replica?tag_zone=a&tag_nosync=false",
            "/health?tag_zone=b",
        ];
        assert_eq!(codes(&st, now, &paths), [200, 503, 503, 200, 503, 503]);
        // Tag filters do not apply to leader checks.
        assert_eq!(
            code(Method::GET, "/primary?tag_zone=b", &primary(now), now),
            200
        );
        st.tags.insert("noloadbalance".into(), json!(true));
        assert_eq!(
            codes(&st, now, &["/replica", "/read-only", "/health"]),
            [503, 503, 200]
        );
    }

    #[test]
    fn sync_endpoints() {
        let now = Instant::now();
        let mut st = replica(now);
        assert_eq!(
            codes(&st, now, &["/sync", "/async", "/read-only-sync"]),
            [503, 200, 503]
        );
        let c = st.cluster.as_mut().unwrap();
        c.config = Some(Versioned {
            value: json!({"synchronous_mode": true}),
            mod_revision: 2,
        });
        c.sync = Some(Versioned {
            value: json!({"leader": "pg0", "sync_standby": "pg1"}),
            mod_revision: 2,
        });
        assert_eq!(
            codes(
                &st,
                now,
                &[
                    "/sync",
                    "/synchronous",
                    "/async",
                    "/read-only-sync",
                    "/quorum"
                ]
            ),
            [200, 200, 503, 200, 503]
        );
        assert_eq!(
            codes(&primary(now), now, &["/read-only-sync", "/sync"]),
            [200, 503]
        );
        let Body::Json(doc) = route(&Method::GET, "/patroni", "", &st, &node("pg1"), now).body
        else {
            panic!()
        };
        assert_eq!(doc["sync_standby"], json!(true));
    }

    #[test]
    fn liveness_follows_the_ha_loop() {
        let now = Instant::now();
        let p = primary(now);
        assert_eq!(code(Method::GET, "/liveness", &p, now), 200);
        assert_eq!(code(Method::GET, "/liveness", &p, now + 31 * SECOND), 503);
        let r = replica(now);
        assert_eq!(code(Method::GET, "/liveness", &r, now + 31 * SECOND), 200);
        assert_eq!(code(Method::GET, "/liveness", &r, now + 61 * SECOND), 503);
        // HEAD answers like GET here (Patroni answers 503 to HEAD /liveness).
        assert_eq!(code(Method::HEAD, "/liveness", &r, now + 31 * SECOND), 200);
        let paused = NodeStatus {
            paused: true,
            ..replica(now)
        };
        assert_eq!(
            code(Method::GET, "/liveness", &paused, now + 600 * SECOND),
            200
        );
        let never = NodeStatus {
            last_cycle: None,
            ..replica(now)
        };
        assert_eq!(code(Method::GET, "/liveness", &never, now), 503);
        assert_eq!(
            route(&Method::GET, "/liveness", "", &p, &node("pg0"), now).body,
            Body::Empty
        );
    }

    #[test]
    fn readiness_checks_lag_and_mode() {
        let now = Instant::now();
        assert_eq!(code(Method::GET, "/readiness", &primary(now), now), 200);
        let r = replica(now);
        // behind 1000: received 900 (write lag 100), replayed 800 (apply lag 200).
        let paths = [
            "/readiness",
            "/readiness?lag=199",
            "/readiness?lag=200",
            "/readiness?lag=100&mode=write",
            "/readiness?lag=99&mode=write",
        ];
        assert_eq!(codes(&r, now, &paths), [200, 503, 200, 200, 503]);
        let archive = NodeStatus {
            replication_state: Some("in archive recovery".into()),
            ..replica(now)
        };
        assert_eq!(code(Method::GET, "/readiness", &archive, now), 503);
        let blind = NodeStatus {
            cluster: None,
            received_location: None,
            ..replica(now)
        };
        assert_eq!(code(Method::GET, "/readiness", &blind, now), 503);
    }

    #[test]
    fn methods_and_bodies() {
        let now = Instant::now();
        let p = primary(now);
        for m in [Method::HEAD, Method::OPTIONS] {
            for (path, want) in [
                ("/primary", 200),
                ("/replica", 503),
                ("/patroni", 200),
                ("/cluster", 200),
                ("/readiness", 200),
                ("/whatever", 503),
            ] {
                assert_eq!(
                    route(&m, path, "", &p, &node("pg0"), now),
                    Reply::code(want),
                    "{m} {path}"
                );
            }
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(route(&m, "/whatever", "", &p, &node("pg0"), now).code, 501);
        }
        // Unknown GET paths: 503 with the status document, like Patroni.
        let r = route(&Method::GET, "/whatever", "", &p, &node("pg0"), now);
        assert!(
            matches!(r, Reply { code: 503, body: Body::Json(ref d), .. } if d["role"] == "primary")
        );
        assert_eq!(
            route(&Method::GET, "/config", "", &p, &node("pg0"), now),
            Reply::json(200, json!({"ttl": 30}))
        );
        assert_eq!(
            route(&Method::GET, "/history", "", &p, &node("pg0"), now),
            Reply::json(200, json!([]))
        );
        let lost = NodeStatus {
            cluster: None,
            ..primary(now)
        };
        assert_eq!(
            route(&Method::GET, "/cluster", "", &lost, &node("pg0"), now).code,
            503
        );
        assert_eq!(
            route(&Method::GET, "/config", "", &lost, &node("pg0"), now).code,
            502
        );
    }

    #[test]
    fn status_documents() {
        let now = Instant::now();
        let Body::Json(doc) = route(
            &Method::GET,
            "/patroni",
            "",
            &primary(now),
            &node("pg0"),
            now,
        )
        .body
        else {
            panic!()
        };
        assert_eq!(doc["state"], "running");
        assert_eq!(doc["role"], "primary");
        assert_eq!(doc["xlog"], json!({"location": 1000}));
        assert_eq!(doc["timeline"], 2);
        assert_eq!(doc["server_version"], 160004);
        assert_eq!(doc["database_system_identifier"], "7277694203142172922");
        assert_eq!(
            doc["patroni"],
            json!({"version": PATRONI_COMPAT_VERSION, "scope": "batman", "name": "pg0"})
        );
        assert_eq!(doc["tandem"]["version"], tandem_version());
        assert_eq!(doc["tags"], json!({}));
        assert!(doc.get("cluster_unlocked").is_none() && doc.get("pause").is_none());
        let Body::Json(doc) = route(
            &Method::GET,
            "/replica",
            "",
            &replica(now),
            &node("pg1"),
            now,
        )
        .body
        else {
            panic!()
        };
        assert_eq!(
            doc["xlog"],
            json!({"received_location": 900, "replayed_location": 800, "replayed_timestamp": null, "paused": false})
        );
        assert_eq!(doc["replication_state"], "streaming");
        // A peer reading it sees the right answer.
        let a = crate::peer::peer_answer(&doc).unwrap();
        assert_eq!(
            (a.is_primary, a.wal_position, a.failover_priority),
            (false, 900, 1)
        );
    }

    #[test]
    fn cluster_document_lists_members() {
        let mut v = view();
        v.config = Some(Versioned {
            value: json!({"pause": true}),
            mod_revision: 1,
        });
        v.failover = Some(Versioned {
            value: tandem_core::cluster::FailoverValue {
                leader: Some("pg0".into()),
                member: Some("pg1".into()),
                scheduled_at: Some("2030-01-01T00:00:00+00:00".into()),
            },
            mod_revision: 1,
        });
        v.members
            .get_mut("pg1")
            .unwrap()
            .value
            .tags
            .insert("nofailover".into(), json!(true));
        let doc = cluster_document(&v, "batman");
        assert_eq!(
            doc,
            json!({
                "scope": "batman",
                "pause": true,
                "scheduled_switchover": {"at": "2030-01-01T00:00:00+00:00", "from": "pg0", "to": "pg1"},
                "members": [
                    {"name": "pg0", "role": "leader", "state": "running", "api_url": "http://pg0:8008/patroni", "host": "10.0.0.1", "port": 5432, "timeline": 2},
                    {"name": "pg1", "role": "replica", "state": "streaming", "api_url": "http://pg1:8008/patroni", "host": "10.0.0.2", "port": 5432, "timeline": 2,
                     "tags": {"nofailover": true},
                     "receive_lsn": "0/384", "receive_lag": 100, "replay_lsn": "0/320", "replay_lag": 200, "lsn": "0/384", "lag": 100}
                ]
            })
        );
    }

    #[test]
    fn sizes_and_query_decoding() {
        assert_eq!(parse_size("1048576"), Some(1_048_576));
        assert_eq!(parse_size("16kB"), Some(16_384));
        assert_eq!(parse_size("10MB"), Some(10 * 1_048_576));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("1.5MB"), Some(1_572_864));
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("10XB"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999999999999999TB"), None);
        assert_eq!(percent_decode("a%20b+c%2"), "a b c%2");
        assert_eq!(percent_decode("%zz%"), "%zz%");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        let q = Query::parse("lag=1&&tag_x=%41&lag=2&flag");
        assert_eq!(
            (q.get("lag"), q.get("tag_x"), q.get("flag"), q.get("no")),
            (Some("1"), Some("A"), Some(""), None)
        );
    }

    #[test]
    fn route_never_panics_on_odd_input() {
        let now = Instant::now();
        let odd = [
            "",
            "/",
            "//",
            "/%",
            "/replica?%",
            "/replica?lag=%ZZ&&==&tag_=",
            "/\u{1F600}?tag_\u{1F600}=\u{1F600}",
            "/readiness?lag=1e400",
        ];
        for st in [primary(now), replica(now), NodeStatus::default()] {
            for p in odd {
                let (path, query) = p.split_once('?').unwrap_or((p, ""));
                for m in [Method::GET, Method::HEAD, Method::POST] {
                    let _ = route(&m, path, query, &st, &node("x"), now);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The real server.

    /// A test CA, and a server and a client certificate it signed (ECDSA P-256, valid until
    /// 2126). The server's names are 127.0.0.1 and localhost.
    const CA_CRT: &str = "-----BEGIN CERTIFICATE-----
MIIBmTCCAT+gAwIBAgIUfrBvqDQMBXp0Z0CceJYPSzPNyEYwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOdGFuZGVtIHRlc3QgQ0EwIBcNMjYxMTI3MDkyODM1WhgPMjEy
NjExMDMwOTI4MzVaMBkxFzAVBgNVBAMMDnRhbmRlbSB0ZXN0IENBMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEjigFMqVJk28GA+ogEW559Acoc9dkdcDxANEqosqp
MvN8MmlCbHQydjlykW8UL5N5D5A4svNtEfV5D7ONEdkdpKNjMGEwHQYDVR0OBBYE
FL9baH9eHEXR/Co61XZU//OfQDauMB8GA1UdIwQYMBaAFL9baH9eHEXR/Co61XZU
//OfQDauMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQDAgEGMAoGCCqGSM49
BAMCA0gAMEUCIQD60+uWfGqo6regS1cgeMKlxVQh6kXp2XQq1ofvLcl/0wIgGhb3
O9jo8JREU+JY/r9E8SpNpvN2fPblDaYs8F3Iky8=
-----END CERTIFICATE-----
";
    /// Certificate and key in one file, like the seed's `server.pem`.
    const SERVER_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIByjCCAXCgAwIBAgIUF8KHD5525B8lLJUpVc3bNS9O6gkwCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOdGFuZGVtIHRlc3QgQ0EwIBcNMjYxMTI3MDkyODM1WhgPMjEy
NjExMDMwOTI4MzVaMB0xGzAZBgNVBAMMEnRhbmRlbSB0ZXN0IHNlcnZlcjBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABCNc6c/YgK2sa3ezELEzIi9YeNb6Hi6/PC+0
zUGLzihSDXZY+fV3Ez1YpUDabIfibM53HcJv0BvXIUvtEIaGND6jgY8wgYwwGgYD
VR0RBBMwEYcEfwAAAYIJbG9jYWxob3N0MBMGA1UdJQQMMAoGCCsGAQUFBwMBMAkG
A1UdEwQCMAAwDgYDVR0PAQH/BAQDAgeAMB0GA1UdDgQWBBTHN4gzLL60TXR6v4S2
pNMTy/IvdzAfBgNVHSMEGDAWgBS/W2h/XhxF0fwqOtV2VP/zn0A2rjAKBggqhkjO
PQQDAgNIADBFAiAr8Js8EfXx+RaqjYNwrpTFgP6OgSNSc6+LxnzjqSgbqQIhAPMi
w6V0wNInSxeHlzGmjputQoT1UqcDVIniAmlNCpoI
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgKjQBMSgZm9EJJ1e9
SYycdfb+oKhphTN3t6FRoUlD6k+hRANCAAQjXOnP2ICtrGt3sxCxMyIvWHjW+h4u
vzwvtM1Bi84oUg12WPn1dxM9WKVA2myH4mzOdx3Cb9Ab1yFL7RCGhjQ+
-----END PRIVATE KEY-----
";
    const CLIENT_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBwjCCAWegAwIBAgIUF8KHD5525B8lLJUpVc3bNS9O6gowCgYIKoZIzj0EAwIw
GTEXMBUGA1UEAwwOdGFuZGVtIHRlc3QgQ0EwIBcNMjYxMTI3MDkyODM1WhgPMjEy
NjExMDMwOTI4MzVaMB0xGzAZBgNVBAMMEnRhbmRlbSB0ZXN0IGNsaWVudDBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABFji2L0RkvzvbAmTdbc5c+RTSufdm+qN5TsC
fGlm5GzplcwWVJphxSTfHtk8SPvqLqCQfdXq7uksy8VsX+KW/rWjgYYwgYMwEQYD
VR0RBAowCIIGY2xpZW50MBMGA1UdJQQMMAoGCCsGAQUFBwMCMAkGA1UdEwQCMAAw
DgYDVR0PAQH/BAQDAgeAMB0GA1UdDgQWBBT8E/wPhSHsN+IrP3Dh9a8FriHb7TAf
BgNVHSMEGDAWgBS/W2h/XhxF0fwqOtV2VP/zn0A2rjAKBggqhkjOPQQDAgNJADBG
AiEA/3+NJ9VAGNOTXHCwWpPmockrBsBCuHQQo20O/hRvjJACIQDHuMcPxpE3UckS
39jb0X/ccz50tlXrnfeumBNa9h9H6g==
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZS0KDRDuditm5OZ7
IvGwCOs2/j3UydTZKR3HLg8VIzqhRANCAARY4ti9EZL872wJk3W3OXPkU0rn3Zvq
jeU7AnxpZuRs6ZXMFlSaYcUk3x7ZPEj76i6gkH3V6u7pLMvFbF/ilv61
-----END PRIVATE KEY-----
";

    fn restapi(listen: &str) -> RestApiConfig {
        RestApiConfig {
            listen: listen.into(),
            connect_address: listen.into(),
            certfile: None,
            keyfile: None,
            keyfile_password: None,
            cafile: None,
            verify_client: VerifyClient::None,
            authentication: None,
            allowlist: Vec::new(),
            allowlist_include_members: false,
            http_extra_headers: BTreeMap::new(),
        }
    }

    fn ctl(cacert: Option<PathBuf>, certfile: Option<PathBuf>) -> CtlConfig {
        CtlConfig {
            insecure: false,
            cacert,
            certfile,
            keyfile: None,
            authentication: None,
        }
    }

    /// Starts a server; returns its port, the status sender and the shutdown sender.
    async fn start(
        api: &RestApiConfig,
        st: NodeStatus,
    ) -> (
        u16,
        watch::Sender<NodeStatus>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        start_with_tls(api, st, ServerTls::new(api).unwrap()).await
    }

    /// As [`start`], serving with `tls` (which the test can reload).
    async fn start_with_tls(
        api: &RestApiConfig,
        st: NodeStatus,
        tls: ServerTls,
    ) -> (
        u16,
        watch::Sender<NodeStatus>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<Result<()>>,
    ) {
        let listener = bind_addr(&api.listen).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (status_tx, status_rx) = watch::channel(st);
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = Server::new(api, tls, node("pg0"), ops::Ops::default());
        let task = tokio::spawn(server.run(status_rx, listener, stop_rx));
        (port, status_tx, stop_tx, task)
    }

    #[tokio::test]
    async fn serves_plain_http() {
        let mut api = restapi("127.0.0.1:0");
        api.http_extra_headers
            .insert("X-Frame-Options".into(), "SAMEORIGIN".into());
        api.http_extra_headers
            .insert("bad header".into(), "x".into());
        let (port, status_tx, stop_tx, task) = start(&api, primary(Instant::now())).await;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().no_proxy().build().unwrap();

        let resp = http.get(format!("{base}/primary")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["server"],
            format!("tandem/{}", tandem_version()).as_str()
        );
        assert_eq!(resp.headers()["x-frame-options"], "SAMEORIGIN");
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(resp.headers()["connection"], "close");
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["role"], "primary");

        let resp = http.head(format!("{base}/replica")).send().await.unwrap();
        assert_eq!(resp.status(), 503);
        assert!(resp.bytes().await.unwrap().is_empty());
        assert_eq!(
            http.request(Method::OPTIONS, format!("{base}/liveness"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        // No agent behind this server: the agent's endpoints say so; unknown paths are 501.
        assert_eq!(
            http.post(format!("{base}/restart"))
                .send()
                .await
                .unwrap()
                .status(),
            503
        );
        assert_eq!(
            http.post(format!("{base}/nonsense"))
                .send()
                .await
                .unwrap()
                .status(),
            501
        );
        let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        assert!(metrics
            .text()
            .await
            .unwrap()
            .contains("patroni_primary{scope=\"batman\",name=\"pg0\"} 1"));

        // The server reads the latest published status.
        status_tx.send(replica(Instant::now())).unwrap();
        assert_eq!(
            http.get(format!("{base}/replica"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let peer = PeerClient::new(&ctl(None, None), &api, Caller::Daemon).unwrap();
        let answer = peer
            .probe_member(&format!("{base}/patroni"), 2 * SECOND)
            .await
            .unwrap();
        assert_eq!((answer.is_primary, answer.wal_position), (false, 900));
        assert!(peer
            .get_json(&format!("{base}/primary"), 2 * SECOND)
            .await
            .unwrap_err()
            .to_string()
            .contains("503"));

        // A second agent on the same port gets a clear error.
        let taken = bind_addr(&format!("127.0.0.1:{port}"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            taken.contains("restapi.listen") && taken.contains("already in use"),
            "{taken}"
        );

        stop_tx.send(true).unwrap();
        tokio::time::timeout(5 * SECOND, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(peer
            .probe_member(&format!("{base}/patroni"), 2 * SECOND)
            .await
            .is_none());
    }

    #[tokio::test]
    async fn bad_requests_get_4xx_and_the_server_stays_up() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let api = restapi("127.0.0.1:0");
        let (port, _status_tx, _stop_tx, _task) = start(&api, primary(Instant::now())).await;
        for (request, answer) in [
            (&b"\x00\x01garbage\r\n\r\n"[..], &b"HTTP/1.1 400"[..]),
            (
                b"POST /config HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n",
                b"HTTP/1.1 413",
            ),
        ] {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(request).await.unwrap();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(5 * SECOND, s.read_to_end(&mut buf))
                .await
                .unwrap();
            assert!(buf.starts_with(answer), "{}", String::from_utf8_lossy(&buf));
        }
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }

    /// One raw HTTP/1.1 request; returns the whole response text.
    async fn raw(port: u16, request: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(15 * SECOND, s.read_to_end(&mut buf))
            .await
            .unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test]
    async fn protected_endpoints_check_access_then_the_body() {
        let mut api = restapi("127.0.0.1:0");
        api.authentication = Some(crate::config::Credentials {
            username: "admin".into(),
            password: crate::config::Secret::new("s3cret"),
        });
        let (port, _status_tx, _stop_tx, _task) = start(&api, primary(Instant::now())).await;
        let auth = "Authorization: Basic YWRtaW46czNjcmV0\r\n";
        let req = |method: &str, path: &str, headers: &str, body: &str| {
            let len = if body.is_empty() && method == "DELETE" {
                String::new()
            } else {
                format!("Content-Length: {}\r\n", body.len())
            };
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}{len}\r\n{body}")
        };
        // No credentials: 401 with the challenge; GET endpoints stay open.
        let r = raw(port, &req("PATCH", "/config", "", "{}")).await;
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"patroni\""),
            "{r}"
        );
        assert!(r.ends_with("no auth header received"), "{r}");
        let r = raw(
            port,
            &req("POST", "/restart", "Authorization: Basic eDp5\r\n", ""),
        )
        .await;
        assert!(
            r.starts_with("HTTP/1.1 401") && r.ends_with("not authenticated"),
            "{r}"
        );
        assert!(raw(port, "GET /patroni HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200"));
        // With credentials: the body is checked.
        for (method, path, body, want) in [
            ("PATCH", "/config", "{", "400"),
            ("PATCH", "/config", "[1,2]", "400"),
            ("PATCH", "/config", "{}", "400"),
            ("PUT", "/config", "\"x\"", "400"),
            ("POST", "/switchover", "{\"leader\": 1}", "400"),
            ("POST", "/failover", "{\"leader\": \"pg0\"}", "503"), // no DCS behind this server
            ("POST", "/restart", "{\"role\": \"boss\"}", "400"),
            ("POST", "/restart", "{\"timeout\": -1}", "400"),
            (
                "POST",
                "/restart",
                "{\"schedule\": \"2000-01-01T00:00:00+00:00\"}",
                "422",
            ),
            (
                "POST",
                "/restart",
                "{\"schedule\": \"2100-01-01T00:00:00\"}",
                "400",
            ),
            ("POST", "/restart", "", "503"), // no agent behind this server
            ("POST", "/reinitialize", "{\"force\": \"perhaps\"}", "400"),
            ("POST", "/failsafe", "{\"name\": \"pg1\"}", "502"),
            ("DELETE", "/switchover", "", "503"),
        ] {
            let r = raw(port, &req(method, path, auth, body)).await;
            assert!(
                r.starts_with(&format!("HTTP/1.1 {want}")),
                "{method} {path} {body}: {r}"
            );
        }
        // A body is required: no Content-Length is 411.
        let r = raw(
            port,
            &format!("POST /switchover HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 411"), "{r}");
        // Too large, declared or chunked.
        let r = raw(
            port,
            &format!("PUT /config HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 999999\r\n\r\n"),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 413"), "{r}");
        let big = "x".repeat(70_000);
        let r = raw(port, &format!("POST /restart HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n", big.len())).await;
        assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    }

    #[tokio::test]
    async fn allowlist_refuses_other_addresses() {
        let mut api = restapi("127.0.0.1:0");
        api.allowlist = vec!["10.0.0.0/8".into()];
        let (port, _status_tx, _stop_tx, _task) = start(&api, primary(Instant::now())).await;
        let r = raw(
            port,
            "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(
            r.starts_with("HTTP/1.1 403") && r.ends_with("Access is denied"),
            "{r}"
        );
        let mut api = restapi("127.0.0.1:0");
        api.allowlist = vec!["127.0.0.0/8".into()];
        let (port, _s, _t, _k) = start(&api, primary(Instant::now())).await;
        let r = raw(
            port,
            "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}"); // allowed; no agent here
    }

    #[tokio::test]
    async fn serves_https_with_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (ca, server_pem, client_pem) = (
            write("ca.crt", CA_CRT),
            write("server.pem", SERVER_PEM),
            write("client.pem", CLIENT_PEM),
        );

        // Client certificates required, on 127.0.0.1 (a name in the server certificate).
        let mut api = restapi("127.0.0.1:0");
        api.certfile = Some(server_pem.clone());
        api.cafile = Some(ca.clone());
        api.verify_client = VerifyClient::Required;
        let (port, _s, _stop, _t) = start(&api, primary(Instant::now())).await;
        let url = format!("https://127.0.0.1:{port}/patroni");
        let cli = PeerClient::new(
            &ctl(Some(ca.clone()), Some(client_pem.clone())),
            &restapi(""),
            Caller::Cli,
        )
        .unwrap();
        assert_eq!(
            cli.get_json(&url, 5 * SECOND).await.unwrap()["role"],
            "primary"
        );
        let anonymous =
            PeerClient::new(&ctl(Some(ca.clone()), None), &restapi(""), Caller::Cli).unwrap();
        assert!(anonymous.get_json(&url, 5 * SECOND).await.is_err());
        assert!(reqwest::get(format!("http://127.0.0.1:{port}/patroni"))
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true));

        // Client certificates optional: the handshake works without one, but the endpoints that
        // change something refuse (403) until a certificate is shown.
        let mut api = restapi("127.0.0.1:0");
        api.certfile = Some(server_pem.clone());
        api.cafile = Some(ca.clone());
        api.verify_client = VerifyClient::Optional;
        let (port, _s3, _stop3, _t3) = start(&api, primary(Instant::now())).await;
        let base = format!("https://127.0.0.1:{port}");
        let post = |client: &PeerClient| {
            client
                .request(reqwest::Method::POST, &format!("{base}/reload"))
                .timeout(5 * SECOND)
                .send()
        };
        let r = post(&anonymous).await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.text().await.unwrap(), "client certificate required");
        assert_eq!(
            anonymous
                .get_json(&format!("{base}/patroni"), 5 * SECOND)
                .await
                .unwrap()["role"],
            "primary"
        );
        // With a certificate the request reaches the handler (no agent here: 503).
        assert_eq!(post(&cli).await.unwrap().status(), 503);

        // No client certificates, on 127.0.0.2 (not a name in the certificate): the CLI checks
        // the name, the agent only the chain, and without a CA the agent accepts any certificate.
        let mut api = restapi("127.0.0.2:0");
        api.certfile = Some(server_pem);
        let (port, _s2, _stop2, _t2) = start(&api, replica(Instant::now())).await;
        let url = format!("https://127.0.0.2:{port}/patroni");
        let err = anonymous
            .get_json(&url, 5 * SECOND)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("ctl.cacert"), "{err}");
        let daemon =
            PeerClient::new(&ctl(Some(ca.clone()), None), &restapi(""), Caller::Daemon).unwrap();
        assert_eq!(
            daemon
                .probe_member(&url, 5 * SECOND)
                .await
                .map(|a| a.wal_position),
            Some(900)
        );
        let daemon = PeerClient::new(&ctl(None, None), &restapi(""), Caller::Daemon).unwrap();
        assert!(daemon.probe_member(&url, 5 * SECOND).await.is_some());
        // A CA that did not sign the server certificate is refused, by the agent too.
        let other_ca = write("other.crt", CLIENT_PEM);
        let wrong =
            PeerClient::new(&ctl(Some(other_ca), None), &restapi(""), Caller::Daemon).unwrap();
        assert!(wrong.probe_member(&url, 5 * SECOND).await.is_none());
    }

    /// A TLS connection to the server on `port`, trusting `ca` (PEM), showing `client` (a
    /// certificate and key, PEM) if given. Returns the connection and the common name of the
    /// certificate the server showed.
    async fn tls_connect(
        port: u16,
        ca: &str,
        client: Option<(&str, &str)>,
    ) -> std::io::Result<(
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        String,
    )> {
        use tokio_rustls::rustls::pki_types::ServerName;
        use tokio_rustls::rustls::{ClientConfig, RootCertStore};
        let mut roots = RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    rustls_pemfile::certs(&mut cert.as_bytes())
                        .collect::<Result<_, _>>()
                        .unwrap(),
                    rustls_pemfile::private_key(&mut key.as_bytes())
                        .unwrap()
                        .unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("")
            .to_string();
        Ok((stream, cn))
    }

    /// `GET /health` on a connection; the status line, or the error that ended it.
    async fn health_over<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if let Err(e) = s
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
        {
            return format!("error: {e}");
        }
        let mut buf = Vec::new();
        match tokio::time::timeout(5 * SECOND, s.read_to_end(&mut buf)).await {
            Ok(Ok(_)) if !buf.is_empty() => {}
            Ok(Ok(_)) => return "error: closed without an answer".into(),
            Ok(Err(e)) => return format!("error: {e}"),
            Err(_) => return "error: no answer".into(),
        }
        let text = String::from_utf8_lossy(&buf);
        text.lines().next().unwrap_or("").to_string()
    }

    /// Issue 14 point 4: renewed certificates (same paths, new contents) are read on reload;
    /// new connections get them, connections already open keep going, and a broken file keeps
    /// the running certificates with an error naming the file.
    #[tokio::test]
    async fn reload_serves_renewed_certificates_to_new_connections() {
        use crate::certs::{Ca, Host, Role};
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        let issue = |ca: &Ca, name: &str, role: Role| {
            let host = Host::parse(&format!("{name}=127.0.0.1"), &[role], "test").unwrap();
            ca.issue(&host, role, 1).unwrap()
        };
        let ca1 = Ca::create("tandem test CA 1", 2).unwrap();
        let (cert_a, key_a) = issue(&ca1, "rest-a", Role::Restapi);
        let (client1, client1_key) = issue(&ca1, "client-1", Role::Client);
        std::fs::write(path("rest.crt"), &cert_a).unwrap();
        std::fs::write(path("rest.key"), &key_a).unwrap();
        std::fs::write(path("ca.crt"), ca1.cert_pem()).unwrap();

        let mut api = restapi("127.0.0.1:0");
        api.certfile = Some(path("rest.crt"));
        api.keyfile = Some(path("rest.key"));
        api.cafile = Some(path("ca.crt"));
        api.verify_client = VerifyClient::Required;
        let tls = ServerTls::new(&api).unwrap();
        let (port, _s, _stop, _t) =
            start_with_tls(&api, primary(Instant::now()), tls.clone()).await;
        let id1 = Some((client1.as_str(), client1_key.as_str()));
        let (conn, cn) = tls_connect(port, ca1.cert_pem(), id1).await.unwrap();
        assert_eq!(cn, "rest-a");
        assert_eq!(health_over(conn).await, "HTTP/1.1 200 OK");
        // Opened before the renewal; used after it.
        let (held, _) = tls_connect(port, ca1.cert_pem(), id1).await.unwrap();

        // Renewal: a new CA, a new server certificate and key, a new client CA, same paths.
        let ca2 = Ca::create("tandem test CA 2", 2).unwrap();
        let (cert_b, key_b) = issue(&ca2, "rest-b", Role::Restapi);
        let (client2, client2_key) = issue(&ca2, "client-2", Role::Client);
        let id2 = Some((client2.as_str(), client2_key.as_str()));
        std::fs::write(path("rest.crt"), &cert_b).unwrap();
        std::fs::write(path("rest.key"), &key_b).unwrap();
        std::fs::write(path("ca.crt"), ca2.cert_pem()).unwrap();
        // Nothing changes until the reload.
        let (_, cn) = tls_connect(port, ca1.cert_pem(), id1).await.unwrap();
        assert_eq!(cn, "rest-a");
        let files = tls.reload(&api).unwrap();
        for want in [
            "restapi.certfile",
            "restapi.keyfile",
            "restapi.cafile",
            "rest.key",
        ] {
            assert!(files.contains(want), "{files}");
        }
        assert!(!files.contains("PRIVATE"), "{files}");
        let (conn, cn) = tls_connect(port, ca2.cert_pem(), id2).await.unwrap();
        assert_eq!(cn, "rest-b");
        assert_eq!(health_over(conn).await, "HTTP/1.1 200 OK");
        // The old client certificate's CA is no longer trusted; the old server certificate is
        // gone from new connections.
        let old_client = match tls_connect(port, ca2.cert_pem(), id1).await {
            Ok((conn, _)) => health_over(conn).await,
            Err(e) => format!("error: {e}"),
        };
        assert!(old_client.starts_with("error"), "{old_client}");
        assert!(tls_connect(port, ca1.cert_pem(), id1).await.is_err());
        // The connection opened before the reload still works.
        assert_eq!(health_over(held).await, "HTTP/1.1 200 OK");

        // The REST client (the CLI's and the agent's) renews its files the same way; its clones
        // (the agent's and the REST server's copies) follow.
        std::fs::write(path("client.crt"), format!("{client1}{client1_key}")).unwrap();
        std::fs::write(path("client-ca.crt"), ca1.cert_pem()).unwrap();
        let ctl = ctl(Some(path("client-ca.crt")), Some(path("client.crt")));
        let cli = PeerClient::new(&ctl, &restapi(""), Caller::Cli).unwrap();
        let copy = cli.clone();
        let url = format!("https://127.0.0.1:{port}/patroni");
        assert!(copy.get_json(&url, 5 * SECOND).await.is_err());
        std::fs::write(path("client.crt"), format!("{client2}{client2_key}")).unwrap();
        std::fs::write(path("client-ca.crt"), ca2.cert_pem()).unwrap();
        assert!(copy.get_json(&url, 5 * SECOND).await.is_err());
        let files = cli.reload(&ctl, &restapi("")).unwrap();
        assert!(
            files.contains("ctl.cacert") && files.contains("client.crt"),
            "{files}"
        );
        assert_eq!(
            copy.get_json(&url, 5 * SECOND).await.unwrap()["role"],
            "primary"
        );
        std::fs::write(path("client.crt"), &client2).unwrap(); // the key is gone
        let err = format!("{:#}", cli.reload(&ctl, &restapi("")).unwrap_err());
        assert!(
            err.contains("ctl.certfile") && err.contains(&path("client.crt").display().to_string()),
            "{err}"
        );
        assert_eq!(
            copy.get_json(&url, 5 * SECOND).await.unwrap()["role"],
            "primary"
        );

        // A broken certificate file, then a key that does not fit: errors naming the file and
        // the setting; the running certificates stay.
        std::fs::write(path("rest.crt"), "not a certificate\n").unwrap();
        let err = format!("{:#}", tls.reload(&api).unwrap_err());
        assert!(
            err.contains("restapi.certfile")
                && err.contains(&path("rest.crt").display().to_string()),
            "{err}"
        );
        std::fs::write(path("rest.crt"), &cert_b).unwrap();
        std::fs::write(path("rest.key"), &key_a).unwrap();
        let err = format!("{:#}", tls.reload(&api).unwrap_err());
        assert!(
            err.contains("does not fit") && err.contains(&path("rest.key").display().to_string()),
            "{err}"
        );
        assert!(!err.contains("PRIVATE KEY"), "{err}");
        let (conn, cn) = tls_connect(port, ca2.cert_pem(), id2).await.unwrap();
        assert_eq!(cn, "rest-b");
        assert_eq!(health_over(conn).await, "HTTP/1.1 200 OK");
    }

    #[test]
    fn tls_setup_errors_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let mut api = restapi("127.0.0.1:0");
        api.certfile = Some(dir.path().join("missing.pem"));
        let err = format!("{:#}", server_tls(&api).unwrap_err());
        assert!(
            err.contains("restapi.certfile") && err.contains("missing.pem"),
            "{err}"
        );
        let cert_only = dir.path().join("cert.pem");
        std::fs::write(&cert_only, CA_CRT).unwrap();
        api.certfile = Some(cert_only);
        let err = format!("{:#}", server_tls(&api).unwrap_err());
        assert!(err.contains("no private key"), "{err}");
        let pem = dir.path().join("server.pem");
        std::fs::write(&pem, SERVER_PEM).unwrap();
        api.certfile = Some(pem);
        api.verify_client = VerifyClient::Required;
        let err = format!("{:#}", server_tls(&api).unwrap_err());
        assert!(err.contains("restapi.cafile"), "{err}");
    }

    /// Issue 16 point 8: GET /config on a `config` key holding garbage says so and how to repair
    /// it (it answered 502 with an empty body); an absent key says so too.
    #[test]
    fn config_answers_name_an_unparsable_key() {
        let now = Instant::now();
        let body = |st: &NodeStatus| match route(&Method::GET, "/config", "", st, &node("pg0"), now)
        {
            Reply {
                code: 502,
                body: Body::Text(t),
                ..
            } => t,
            other => panic!("{other:?}"),
        };
        let mut st = primary(now);
        let raw = |v: &[u8]| tandem_core::cluster::RawKey {
            key: "config".into(),
            value: v.to_vec(),
            mod_revision: 5,
            lease: 0,
        };
        st.cluster = Some(ClusterView::from_keys(&[raw(b"{not json")]).0);
        let t = body(&st);
        assert!(t.starts_with("the config key holds invalid JSON ("), "{t}");
        assert!(t.contains("tandem edit-config --replace <file>") && t.contains("PUT /config"));
        st.cluster = Some(ClusterView::from_keys(&[raw(b"\"x\"")]).0);
        assert!(body(&st).starts_with("the config key holds a JSON string, not a JSON object"));
        st.cluster = Some(ClusterView::from_keys(&[raw(b"\xff")]).0);
        assert!(body(&st).contains("not UTF-8"));
        st.cluster = Some(ClusterView::default());
        assert!(body(&st).contains("does not exist"));
    }

    /// Property tests: any path, query string or POST /failsafe body gets an answer, never a
    /// panic; query strings decode what was encoded.
    mod properties {
        use super::*;
        use crate::api::ops::arbitrary;
        use proptest::prelude::*;

        fn encode(s: &str) -> String {
            s.bytes().map(|b| format!("%{b:02X}")).collect()
        }

        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "patroni",
                    "primary",
                    "master",
                    "leader",
                    "replica",
                    "read-only",
                    "read-write",
                    "standby-leader",
                    "standby_leader",
                    "sync",
                    "async",
                    "synchronous",
                    "asynchronous",
                    "quorum",
                    "health",
                    "liveness",
                    "readiness",
                    "cluster",
                    "history",
                    "config",
                    "metrics",
                    "failsafe",
                    "",
                ])
                .prop_map(str::to_string),
                ".{0,10}",
            ]
        }

        fn query() -> impl Strategy<Value = String> {
            let pair = (
                prop_oneof![
                    prop::sample::select(vec![
                        "lag",
                        "mode",
                        "tag_nofailover",
                        "tag_clonefrom",
                        "tag_x",
                        "replication_state",
                    ])
                    .prop_map(str::to_string),
                    ".{0,6}",
                ],
                prop_oneof![
                    arbitrary::text(),
                    prop::sample::select(vec!["apply", "write", "true", "16kB", "1e400"])
                        .prop_map(str::to_string),
                ],
            )
                .prop_map(|(k, v)| format!("{k}={}", encode(&v)));
            prop_oneof![
                prop::collection::vec(pair, 0..4).prop_map(|p| p.join("&")),
                ".{0,24}",
            ]
        }

        fn status(now: Instant, which: u8, config: &[u8]) -> NodeStatus {
            let mut st = match which % 3 {
                0 => primary(now),
                1 => replica(now),
                _ => NodeStatus::default(),
            };
            if let Some(view) = st.cluster.as_mut() {
                let raw = tandem_core::cluster::RawKey {
                    key: "config".into(),
                    value: config.to_vec(),
                    mod_revision: 2,
                    lease: 0,
                };
                let parsed = ClusterView::from_keys(&[raw]).0;
                view.config = parsed.config;
                view.invalid = parsed.invalid;
            }
            st
        }

        proptest! {
            #[test]
            fn any_request_line_gets_an_answer(
                seg in segment(),
                rest in ".{0,8}",
                q in query(),
                method in prop::sample::select(vec![
                    Method::GET, Method::HEAD, Method::OPTIONS, Method::POST, Method::PUT,
                ]),
                which in any::<u8>(),
                config in prop_oneof![
                    Just(br#"{"ttl":30,"failsafe_mode":true}"#.to_vec()),
                    prop::collection::vec(any::<u8>(), 0..16),
                ],
            ) {
                let now = Instant::now();
                let st = status(now, which, &config);
                let path = format!("/{seg}{rest}");
                let r = route(&method, &path, &q, &st, &node("pg0"), now);
                prop_assert!([200, 501, 502, 503].contains(&r.code), "{} {path}?{q}: {}", method, r.code);
                if r.code == 502 && seg == "config" && method == Method::GET {
                    // GET /config's 502 says why.
                    prop_assert!(matches!(&r.body, Body::Text(t) if !t.is_empty()));
                }
            }

            #[test]
            fn query_strings_decode_what_was_encoded(
                k in "[^&=]{1,8}",
                v in ".{0,16}",
                raw in ".{0,32}",
                bytes in prop::collection::vec(any::<u8>(), 0..32),
            ) {
                prop_assume!(k != "x");
                prop_assert_eq!(percent_decode(&encode(&v)), v.clone());
                let q = Query::parse(&format!("x=1&{}={}&{}=other", encode(&k), encode(&v), encode(&k)));
                prop_assert_eq!(q.get(&k), Some(v.as_str()));
                let _ = Query::parse(&raw);
                let _ = percent_decode(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn sizes_parse_with_their_units(
                n in 0u64..1_000_000,
                unit in prop::sample::select(vec![
                    ("", 1u64), ("B", 1), ("kB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30),
                    ("TB", 1 << 40), ("mb", 1 << 20),
                ]),
                any_text in ".{0,16}",
            ) {
                prop_assert_eq!(parse_size(&format!("{n}{}", unit.0)), Some(n * unit.1));
                let _ = parse_size(&any_text);
            }

            #[test]
            fn failsafe_bodies_get_an_answer(b in arbitrary::body(), which in any::<u8>()) {
                let now = Instant::now();
                let st = status(now, which, br#"{"failsafe_mode":true}"#);
                let r = failsafe_post(&st, &b);
                prop_assert!([200, 400, 500, 502].contains(&r.code), "{}", r.code);
                let named = matches!(b.get("name"), Some(Value::String(n)) if !n.is_empty());
                if st.cluster.is_some() && !named {
                    prop_assert_eq!(r.code, 400);
                }
            }
        }
    }
}
