//! `/status` (the routing table as JSON), `/metrics` (Prometheus text) and `/ready` (200 or 503,
//! for `tandem vip`'s `track_router` and load balancers) of a running router, and
//! `tandem proxy status`, which prints the first for a person.

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::Role;
use super::listener::{BackendStats, ListenerShared, ListenerStats, StatsRegistry};
use super::router::RouterState;
use super::routing::{Outcome, Probe, Source};

/// What the status endpoint reads.
pub struct StatusSources {
    pub scope: String,
    pub listeners: Vec<(Arc<ListenerShared>, String)>,
    pub state: Arc<Mutex<RouterState>>,
    pub stats: StatsRegistry,
    /// How established connections are forwarded: `kernel (...)` or `user space`.
    pub forwarding: String,
}

fn probe_text(p: Option<&Probe>) -> Value {
    match p.map(|p| p.outcome) {
        None => Value::Null,
        Some(Outcome::Up) => json!(200),
        Some(Outcome::Down(c)) => json!(c),
        Some(Outcome::Unreachable) => json!("unreachable"),
    }
}

/// One listener as `/ready` sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerReadiness {
    pub role: Role,
    /// It has at least one backend to send a new connection to.
    pub routed: bool,
    /// Why it has none (the router's own words), when it has none.
    pub reason: String,
}

/// The `/ready` verdict: 200 `{"ready":true}` when at least one listener is bound (every
/// configured listener is bound before the status endpoint starts, and an accept loop never
/// ends) and the primary listener, if one is configured, has a primary routed; otherwise 503 with
/// a one-line reason. Listeners for replicas do not count: a router without replicas still routes
/// writes.
pub fn readiness(listeners: &[ListenerReadiness]) -> (u16, Value) {
    if listeners.is_empty() {
        return (
            503,
            json!({"ready": false, "reason": "no listener is bound"}),
        );
    }
    if let Some(p) = listeners.iter().find(|l| l.role == Role::Primary) {
        if !p.routed {
            let why = if p.reason.is_empty() {
                "no backend".to_string()
            } else {
                p.reason.replace('\n', " ")
            };
            return (
                503,
                json!({"ready": false, "reason": format!("primary listener has no primary to route to: {why}")}),
            );
        }
    }
    (200, json!({"ready": true}))
}

impl StatusSources {
    /// The `/ready` verdict for the listeners as they are now.
    pub fn ready(&self) -> (u16, Value) {
        let ls: Vec<ListenerReadiness> = self
            .listeners
            .iter()
            .map(|(l, _)| {
                let routes = l.routes.borrow();
                ListenerReadiness {
                    role: l.cfg.role,
                    routed: !routes.slots.is_empty(),
                    reason: routes.reason.clone(),
                }
            })
            .collect();
        readiness(&ls)
    }

    pub fn status_json(&self) -> Value {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let table = st.table.as_ref();
        let listeners: Vec<Value> = self
            .listeners
            .iter()
            .map(|(l, addr)| {
                let routes = l.routes.borrow().clone();
                let backends: Vec<Value> = routes
                    .slots
                    .iter()
                    .map(|s| {
                        json!({
                            "name": s.backend.name,
                            "addr": s.backend.addr,
                            "active": s.stats.active.load(Relaxed),
                            "total": s.stats.total.load(Relaxed),
                        })
                    })
                    .collect();
                let other_active: usize = stats
                    .iter()
                    .filter(|((r, n), _)| *r == l.cfg.role && !routes.slots.iter().any(|s| &s.backend.name == n))
                    .map(|(_, s)| s.active.load(Relaxed))
                    .sum();
                json!({
                    "name": l.cfg.role.key(),
                    "listen": addr,
                    "max_connections": l.cfg.max_connections,
                    "active": l.active.load(Relaxed),
                    "active_elsewhere": other_active,
                    "kernel_forwarded": l.stats.kernel_spliced.load(Relaxed),
                    "user_space_forwarded": l.stats.user_spliced.load(Relaxed),
                    "backlog_resets": l.stats.backlog_resets.load(Relaxed),
                    "kernel_paused": l.stats.kernel_paused.load(Relaxed),
                    "kernel_mismatches": l.stats.kernel_mismatches.load(Relaxed),
                    "backends": backends,
                    "reason": if routes.slots.is_empty() { Value::from(routes.reason.clone()) } else { Value::Null },
                })
            })
            .collect();
        let members: Vec<Value> = st
            .view
            .members
            .values()
            .map(|m| {
                let h = st.health.get(&m.name);
                let replica: serde_json::Map<String, Value> = h
                    .map(|h| {
                        h.replica
                            .iter()
                            .map(|(lag, p)| {
                                let k = lag
                                    .map(|l| format!("lag={l}"))
                                    .unwrap_or_else(|| "any".into());
                                (k, probe_text(Some(p)))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "name": m.name,
                    "conn_url": m.value.conn_url,
                    "api_url": m.value.api_url,
                    "role": m.value.role,
                    "state": m.value.state,
                    "leader": st.view.leader_name() == Some(m.name.as_str()),
                    "tags": m.value.tags,
                    "check_primary": probe_text(h.and_then(|h| h.primary.as_ref())),
                    "check_replica": replica,
                })
            })
            .collect();
        json!({
            "scope": self.scope,
            "etcd": {"synced": st.etcd_synced, "revision": st.etcd_revision},
            "forwarding": self.forwarding,
            "source": match table.map(|t| t.source) {
                Some(Source::Etcd) => "etcd",
                Some(Source::HealthOnly) => "health checks only",
                None => "starting",
            },
            "primary": table.and_then(|t| t.primary.as_ref()).map(|p| json!({
                "name": p.name,
                "addr": p.addr,
                "for_seconds": st.primary_since.map(|s| (now - s).as_secs_f64()),
            })),
            "primary_reason": table.map(|t| t.primary_reason.clone()),
            "last_reroute_seconds": st.last_reroute.map(|d| d.as_secs_f64()),
            "routing_changes": st.routing_changes.iter().map(|(r, n)| (r.key().to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "uptime_seconds": st.started.map(|s| (now - s).as_secs_f64()),
            "listeners": listeners,
            "members": members,
        })
    }

    pub fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(4096);
        let scope = escape(&self.scope);
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let sep = if labels.is_empty() { "" } else { "," };
                let _ = writeln!(out, "{name}{{scope=\"{scope}\"{sep}{labels}}} {v}");
            }
        };
        let ls = &self.listeners;
        let per_listener = |f: &dyn Fn(&ListenerShared) -> String| -> Vec<(String, String)> {
            ls.iter()
                .map(|(l, _)| (format!("listener=\"{}\"", l.cfg.role), f(l)))
                .collect()
        };
        // One series per listener and per named counter, under the label `label`.
        type Named<'a> = Vec<(&'static str, &'a AtomicU64)>;
        let per_listener_by = |label: &str,
                               f: &dyn for<'a> Fn(&'a ListenerStats) -> Named<'a>|
         -> Vec<(String, String)> {
            ls.iter()
                .flat_map(|(l, _)| {
                    f(&l.stats).into_iter().map(move |(name, v)| {
                        (
                            format!("listener=\"{}\",{label}=\"{name}\"", l.cfg.role),
                            v.load(Relaxed).to_string(),
                        )
                    })
                })
                .collect()
        };
        family(
            "tandem_proxy_connections_active",
            "gauge",
            "Open client connections per listener.",
            per_listener(&|l| l.active.load(Relaxed).to_string()),
        );
        family(
            "tandem_proxy_connections_max",
            "gauge",
            "max_connections of each listener.",
            per_listener(&|l| l.cfg.max_connections.to_string()),
        );
        family(
            "tandem_proxy_accepted_total",
            "counter",
            "Client connections accepted.",
            per_listener(&|l| l.stats.accepted.load(Relaxed).to_string()),
        );
        family(
            "tandem_proxy_forwarded_total",
            "counter",
            "Connections handed to a backend, by how their bytes are forwarded.",
            per_listener_by("mode", &|s| {
                vec![
                    ("kernel", &s.kernel_spliced),
                    ("user_space", &s.user_spliced),
                ]
            }),
        );
        family(
            "tandem_proxy_backlog_resets_total",
            "counter",
            "Kernel-forwarded connections reset because more than 16 MiB were queued in the kernel for one direction (a backstop: the budget pauses a direction at 4 MiB).",
            per_listener(&|l| l.stats.backlog_resets.load(Relaxed).to_string()),
        );
        family(
            "tandem_proxy_kernel_paused_total",
            "counter",
            "Directions of kernel-forwarded connections handed to the router's copy loop because their receiver fell 4 MiB behind (backpressure).",
            per_listener(&|l| l.stats.kernel_paused.load(Relaxed).to_string()),
        );
        family(
            "tandem_proxy_refused_total",
            "counter",
            "Client connections refused (with an ErrorResponse, or closed when not PostgreSQL).",
            per_listener_by("reason", &|s| {
                vec![
                    ("max_connections", &s.refused_full),
                    ("no_backend", &s.refused_no_backend),
                    ("bad_client", &s.bad_clients),
                ]
            }),
        );
        family(
            "tandem_proxy_held_total",
            "counter",
            "Connections that waited for a backend (no leader yet).",
            per_listener(&|l| l.stats.held.load(Relaxed).to_string()),
        );
        family(
            "tandem_proxy_held_seconds_total",
            "counter",
            "Time connections spent waiting for a backend.",
            per_listener(&|l| format!("{}", l.stats.held_micros.load(Relaxed) as f64 / 1e6)),
        );
        family(
            "tandem_proxy_cancel_requests_total",
            "counter",
            "CancelRequests relayed.",
            per_listener(&|l| l.stats.cancels.load(Relaxed).to_string()),
        );

        let stats: Vec<((Role, String), Arc<BackendStats>)> = {
            let m = self.stats.lock().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<_> = m.iter().map(|(k, s)| (k.clone(), s.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let per_backend = |f: &dyn Fn(&BackendStats) -> String| -> Vec<(String, String)> {
            stats
                .iter()
                .map(|((r, n), s)| (format!("listener=\"{r}\",backend=\"{}\"", escape(n)), f(s)))
                .collect()
        };
        family(
            "tandem_proxy_backend_connections_active",
            "gauge",
            "Open connections per listener and backend.",
            per_backend(&|s| s.active.load(Relaxed).to_string()),
        );
        family(
            "tandem_proxy_backend_connections_total",
            "counter",
            "Connections relayed per listener and backend.",
            per_backend(&|s| s.total.load(Relaxed).to_string()),
        );
        let mut bytes = Vec::new();
        for ((r, n), s) in &stats {
            for (dir, v) in [
                ("client_to_server", &s.bytes_from_client),
                ("server_to_client", &s.bytes_from_server),
            ] {
                bytes.push((
                    format!(
                        "listener=\"{r}\",backend=\"{}\",direction=\"{dir}\"",
                        escape(n)
                    ),
                    v.load(Relaxed).to_string(),
                ));
            }
        }
        family(
            "tandem_proxy_backend_bytes_total",
            "counter",
            "Bytes relayed per listener, backend and direction.",
            bytes,
        );
        family("tandem_proxy_backend_fenced_connections_total", "counter", "Connections closed because the backend stopped being eligible (the leader lost its role).", per_backend(&|s| s.fenced.load(Relaxed).to_string()));
        family(
            "tandem_proxy_backend_failures_total",
            "counter",
            "Connection attempts to a backend that failed (tried elsewhere or refused).",
            per_backend(&|s| s.failed.load(Relaxed).to_string()),
        );

        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        family(
            "tandem_proxy_routing_changes_total",
            "counter",
            "Changes of a listener's backend list.",
            ls.iter()
                .map(|(l, _)| {
                    (
                        format!("listener=\"{}\"", l.cfg.role),
                        st.routing_changes
                            .get(&l.cfg.role)
                            .copied()
                            .unwrap_or(0)
                            .to_string(),
                    )
                })
                .collect(),
        );
        let primary = st.table.as_ref().and_then(|t| t.primary.as_ref());
        family(
            "tandem_proxy_primary_routed",
            "gauge",
            "1 while the primary listener has a backend.",
            vec![(String::new(), u8::from(primary.is_some()).to_string())],
        );
        family(
            "tandem_proxy_last_reroute_seconds",
            "gauge",
            "Time without a primary before the last new primary was routed.",
            vec![(
                String::new(),
                st.last_reroute
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0)
                    .to_string(),
            )],
        );
        family(
            "tandem_proxy_etcd_synced",
            "gauge",
            "1 while the etcd watch is in sync.",
            vec![(String::new(), u8::from(st.etcd_synced).to_string())],
        );
        let mut checks = Vec::new();
        for (name, h) in &st.health {
            if let Some(p) = &h.primary {
                checks.push((
                    format!("member=\"{}\",check=\"primary\"", escape(name)),
                    u8::from(p.outcome == Outcome::Up).to_string(),
                ));
            }
            for (lag, p) in &h.replica {
                let l = lag.map(|l| l.to_string()).unwrap_or_default();
                checks.push((
                    format!("member=\"{}\",check=\"replica\",lag=\"{l}\"", escape(name)),
                    u8::from(p.outcome == Outcome::Up).to_string(),
                ));
            }
        }
        family(
            "tandem_proxy_member_check_up",
            "gauge",
            "1 when the member's last health check answered 200.",
            checks,
        );
        // Days to the end of each certificate the router uses (etcd3, ctl files).
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        out.push_str(&crate::tlscheck::expiry_metrics(
            &crate::tlscheck::in_use(),
            &format!("scope=\"{scope}\""),
            unix_now,
        ));
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/status`, `/metrics` and `/ready` (GET or HEAD) until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, src: Arc<StatusSources>) {
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::{TokioIo, TokioTimer};
    loop {
        let Ok((io, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let src = src.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let src = src.clone();
                async move {
                    let (code, ctype, body) = match (req.method().as_str(), req.uri().path()) {
                        ("GET", "/status") | ("GET", "/") => (
                            200,
                            "application/json",
                            serde_json::to_string_pretty(&src.status_json()).unwrap_or_default()
                                + "\n",
                        ),
                        ("GET", "/metrics") => {
                            (200, "text/plain; version=0.0.4", src.metrics_text())
                        }
                        // hyper leaves the body out of a HEAD answer (and keeps its length).
                        ("GET" | "HEAD", "/ready") => {
                            let (code, doc) = src.ready();
                            (code, "application/json", doc.to_string() + "\n")
                        }
                        ("GET", _) => (
                            404,
                            "text/plain",
                            "not found: try /status, /metrics or /ready\n".to_string(),
                        ),
                        _ => (
                            405,
                            "text/plain",
                            "only GET (and HEAD /ready)\n".to_string(),
                        ),
                    };
                    let resp = Response::builder()
                        .status(code)
                        .header("content-type", ctype)
                        .body(Full::new(Bytes::from(body)))
                        .expect("valid response");
                    Ok::<_, Infallible>(resp)
                }
            });
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .keep_alive(false);
            let _ = tokio::time::timeout(
                Duration::from_secs(30),
                http.serve_connection(TokioIo::new(io), svc),
            )
            .await;
        });
    }
}

/// `GET path` on the router's status endpoint: status code and body.
pub fn fetch(status_listen: &str, path: &str, timeout: Duration) -> Result<(u16, String)> {
    // A wildcard listen address is reached on loopback.
    let target = if let Some(port) = status_listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = status_listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        status_listen.to_string()
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&target)
        .with_context(|| format!("cannot resolve {target}"))?
        .next()
        .ok_or_else(|| anyhow!("{target}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot reach the router's status endpoint at {target}: is `tandem proxy` running with this configuration?"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(16 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP answer from {target}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP answer from {target}"))?;
    Ok((code, body.to_string()))
}

/// The status document as a person reads it.
pub fn render(doc: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        }
    };
    let _ = writeln!(
        out,
        "Cluster {} — routing from {} (etcd {}, revision {})",
        s(&doc["scope"]),
        s(&doc["source"]),
        if doc["etcd"]["synced"] == json!(true) {
            "in sync"
        } else {
            "UNREACHABLE"
        },
        s(&doc["etcd"]["revision"])
    );
    match doc["primary"].as_object() {
        Some(p) => {
            let _ = writeln!(
                out,
                "Primary: {} at {} ({})",
                s(&p["name"]),
                s(&p["addr"]),
                s(&doc["primary_reason"])
            );
        }
        None => {
            let _ = writeln!(out, "Primary: NONE ({})", s(&doc["primary_reason"]));
        }
    }
    if let Some(r) = doc["last_reroute_seconds"].as_f64() {
        let _ = writeln!(out, "Last reroute: {:.0} ms without a primary", r * 1000.0);
    }
    if let Some(f) = doc["forwarding"].as_str() {
        let _ = writeln!(out, "Forwarding: {f}");
    }
    let _ = writeln!(
        out,
        "\n{:<14} {:<22} {:>12}  Backends",
        "Listener", "Address", "Conns/Max"
    );
    for l in doc["listeners"].as_array().into_iter().flatten() {
        let backends: Vec<String> = l["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "{} {} ({} open)",
                    s(&b["name"]),
                    s(&b["addr"]),
                    s(&b["active"])
                )
            })
            .collect();
        let b = if backends.is_empty() {
            format!("none: {}", s(&l["reason"]))
        } else {
            backends.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<14} {:<22} {:>12}  {b}",
            s(&l["name"]),
            s(&l["listen"]),
            format!("{}/{}", s(&l["active"]), s(&l["max_connections"]))
        );
    }
    let _ = writeln!(
        out,
        "\n{:<12} {:<26} {:<10} {:<10} {:>9} {:>14}",
        "Member", "PostgreSQL", "Role", "State", "/primary", "/replica"
    );
    for m in doc["members"].as_array().into_iter().flatten() {
        let replica: Vec<String> = m["check_replica"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, v)| s(v))
            .collect();
        let name = if m["leader"] == json!(true) {
            format!("{} *", s(&m["name"]))
        } else {
            s(&m["name"])
        };
        let conn = s(&m["conn_url"]);
        let conn = conn
            .strip_prefix("postgres://")
            .unwrap_or(&conn)
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let _ = writeln!(
            out,
            "{:<12} {:<26} {:<10} {:<10} {:>9} {:>14}",
            name,
            conn,
            s(&m["role"]),
            s(&m["state"]),
            s(&m["check_primary"]),
            if replica.is_empty() {
                "-".into()
            } else {
                replica.join(",")
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(role: Role, routed: bool, reason: &str) -> ListenerReadiness {
        ListenerReadiness {
            role,
            routed,
            reason: reason.to_string(),
        }
    }

    #[test]
    fn ready_route_verdicts() {
        let (c, d) = readiness(&[l(Role::Primary, true, ""), l(Role::Replicas, false, "none")]);
        assert_eq!((c, d.to_string()), (200, r#"{"ready":true}"#.to_string()));
        let (c, d) = readiness(&[
            l(Role::Replicas, false, "no replica"),
            l(Role::ReadOnlyAny, true, ""),
        ]);
        assert_eq!(
            c, 200,
            "without a primary listener only binding counts: {d}"
        );
        let (c, d) = readiness(&[l(Role::Primary, false, "no leader in etcd\n(since 3 s)")]);
        assert_eq!(c, 503);
        let line = d.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        assert_eq!(d["ready"], json!(false));
        assert_eq!(
            d["reason"],
            json!("primary listener has no primary to route to: no leader in etcd (since 3 s)")
        );
        let (c, d) = readiness(&[l(Role::Primary, false, "")]);
        assert_eq!(
            (c, d["reason"].as_str().unwrap().ends_with("no backend")),
            (503, true)
        );
        let (c, d) = readiness(&[]);
        assert_eq!(
            (c, d["reason"].clone()),
            (503, json!("no listener is bound"))
        );
    }

    /// Through `serve`: GET and HEAD /ready on a router whose primary listener has no backend.
    #[test]
    fn serve_answers_ready_and_head() {
        use super::super::config::RouterConfig;
        use super::super::listener::{refusal_limit, Routes};
        let cfg = RouterConfig::from_yaml_str(
            "scope: demo\nnamespace: /service\netcd3:\n  hosts: 127.0.0.1:2379\nproxy:\n  primary: {listen: '127.0.0.1:0'}\n",
            "router.yml",
        )
        .unwrap();
        let lc = cfg.proxy.listener(Role::Primary).unwrap().clone();
        let (routes_tx, routes_rx) = tokio::sync::watch::channel(Arc::new(Routes {
            slots: Vec::new(),
            reason: "no leader in etcd".into(),
        }));
        let (_all_tx, all_rx) = tokio::sync::watch::channel(Arc::new(Vec::new()));
        let shared = Arc::new(ListenerShared::new(
            lc,
            "demo".into(),
            &cfg.proxy,
            routes_rx,
            all_rx,
            refusal_limit(),
        ));
        let src = Arc::new(StatusSources {
            scope: "demo".into(),
            listeners: vec![(shared, "127.0.0.1:5432".into())],
            state: Arc::new(Mutex::new(RouterState::default())),
            stats: StatsRegistry::default(),
            forwarding: "user space".into(),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let addr = rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            tokio::spawn(serve(l, src));
            a
        });
        let ask = |method: &str| -> String {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            write!(
                s,
                "{method} /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let get = ask("GET");
        assert!(get.starts_with("HTTP/1.1 503"), "{get}");
        assert!(
            get.contains("\"ready\":false") && get.contains("no leader in etcd"),
            "{get}"
        );
        let head = ask("HEAD");
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body for HEAD: {head:?}");
        // A primary is routed: 200.
        let backend = super::super::routing::Backend {
            name: "node1".into(),
            addr: "127.0.0.1:5433".into(),
        };
        routes_tx.send_replace(Arc::new(Routes {
            slots: vec![Arc::new(super::super::listener::Slot::new(
                backend,
                Default::default(),
            ))],
            reason: String::new(),
        }));
        let get = ask("GET");
        assert!(get.starts_with("HTTP/1.1 200"), "{get}");
        assert!(get.ends_with("{\"ready\":true}\n"), "{get}");
        drop(rt);
    }
}
