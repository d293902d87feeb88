//! `tandem proxy`: the router that sends PostgreSQL connections to the leader (and reads to
//! replicas), following etcd directly and confirming with each node's REST health checks.
//!
//! - [`config`]: the `proxy:` section of `router.yml`;
//! - [`routing`]: the routing table as a pure function of the cluster view and health checks;
//! - [`health`]: the REST health-check tasks;
//! - [`router`]: the task that keeps the table current and fences backends;
//! - [`listener`]: accept, connection setup (hold, retry, PostgreSQL negotiation), copy loop;
//! - [`sockmap`]: in-kernel forwarding of spliced connections (BPF sockhash, hand-assembled);
//! - [`pgwire`]: the protocol bits (first packets, ErrorResponse);
//! - [`status`]: `/status`, `/metrics`, `tandem proxy status`.

pub mod config;
pub mod health;
pub mod listener;
pub mod pgwire;
pub mod router;
pub mod routing;
pub mod sockmap;
pub mod status;

use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::info;

pub use config::{KernelForwarding, ProxyConfig, Role, RouterConfig};

use crate::dcs::Dcs;
use crate::peer::{Caller, PeerClient};
use listener::ListenerShared;
use status::StatusSources;

/// A running router (in this process). Dropping it stops every task it started.
pub struct ProxyHandle {
    /// The address each listener is bound to (useful with port 0).
    pub addrs: BTreeMap<Role, SocketAddr>,
    pub status_addr: Option<SocketAddr>,
    pub sources: Arc<StatusSources>,
    tasks: Vec<JoinHandle<()>>,
    /// Where connections' bytes move: "kernel (BPF sockhash, ...)" or "user space".
    pub forwarding: String,
    /// The configuration in effect: the file's at start, with what reloads took since.
    running: RouterConfig,
    dcs: Dcs,
    /// The health checks' REST client (its clones in the health tasks follow its reloads).
    client: PeerClient,
}

impl ProxyHandle {
    pub fn addr(&self, role: Role) -> Option<SocketAddr> {
        self.addrs.get(&role).copied()
    }
    /// The `/status` document, without HTTP.
    pub fn status(&self) -> serde_json::Value {
        self.sources.status_json()
    }
    pub fn metrics(&self) -> String {
        self.sources.metrics_text()
    }
    /// Reads the certificate files again, at the paths `new` gives (SIGHUP): the etcd client's
    /// (`etcd3.cacert`, `etcd3.cert`, `etcd3.key`) and the health checks' (`ctl`, with
    /// `restapi.cafile` and credentials). New connections use them; open ones keep theirs. One
    /// line in the log per component. Every other setting takes a restart: those that differ
    /// are named in the log. Returns the errors, each naming the setting and the file; the
    /// component concerned keeps its running certificates.
    pub async fn reload(&mut self, new: &RouterConfig) -> Vec<String> {
        let mut kept = Vec::new();
        match self.dcs.reload_tls(&new.base.etcd3).await {
            Ok(files) => {
                match files {
                    Some(f) => info!("reloaded TLS certificates for the etcd client ({f})"),
                    None => info!("the etcd client's TLS files did not change"),
                }
                let (etcd, next) = (&mut self.running.base.etcd3, &new.base.etcd3);
                (etcd.cacert, etcd.cert, etcd.key) =
                    (next.cacert.clone(), next.cert.clone(), next.key.clone());
            }
            Err(e) => kept.push(format!("the etcd client: {e:#}")),
        }
        match self.client.reload(&new.base.ctl, &new.base.restapi) {
            Ok(files) => {
                if files.is_empty() {
                    info!("reloaded the health checks' REST client (it reads no certificate files)")
                } else {
                    info!("reloaded TLS certificates for the health checks' REST client ({files})")
                }
                self.running.base.ctl = new.base.ctl.clone();
                self.running.base.restapi = new.base.restapi.clone();
            }
            Err(e) => kept.push(format!("the health checks' REST client: {e:#}")),
        }
        for e in &kept {
            tracing::error!("keeping the running TLS certificates of {e}");
        }
        let ignored = self.running.restart_required_changes(new);
        if !ignored.is_empty() {
            tracing::warn!(
                "changed in the configuration file but not applied until the router restarts: {}",
                ignored.join(", ")
            );
        }
        kept
    }

    /// Stops accepting and routing; open connections end with their tasks' runtime.
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds the listeners, connects to etcd and starts routing. Call inside a tokio runtime.
pub async fn start(cfg: RouterConfig) -> Result<ProxyHandle> {
    raise_fd_limit();
    let proxy = Arc::new(cfg.proxy.clone());
    let scope = cfg.base.scope.clone();
    let client = PeerClient::new(&cfg.base.ctl, &cfg.base.restapi, Caller::Daemon)
        .context("REST client for the health checks")?;
    let dcs = Dcs::connect(
        &cfg.base.etcd3,
        &cfg.base.base_path(),
        Duration::from_secs(2),
    )
    .await?;
    let cache = dcs.spawn_cache();

    let mut bound = Vec::new();
    for l in &proxy.listeners {
        let sock = listener::bind(&l.listen)
            .with_context(|| format!("proxy.{}.listen: cannot listen on {}", l.role, l.listen))?;
        bound.push((l.clone(), sock));
    }
    let status_sock = match &proxy.status_listen {
        Some(a) => Some(
            listener::bind(a)
                .with_context(|| format!("proxy.status_listen: cannot listen on {a}"))?,
        ),
        None => None,
    };

    let kernel = kernel_forwarding(&proxy)?;
    let forwarding = match &kernel {
        Some(m) => format!("kernel (BPF sockhash, {})", m.attach),
        None => "user space".to_string(),
    };

    let (router, parts, health_rx) = router::Router::new(proxy.clone(), client.clone());
    let mut tasks = vec![tokio::spawn(router.run(cache, health_rx))];
    let refusals = listener::refusal_limit();
    let mut addrs = BTreeMap::new();
    let mut shared = Vec::new();
    for (lc, sock) in bound {
        let local = sock.local_addr()?;
        addrs.insert(lc.role, local);
        let routes = parts
            .routes
            .get(&lc.role)
            .cloned()
            .ok_or_else(|| anyhow!("no routes for {}", lc.role))?;
        let l = Arc::new(
            ListenerShared::new(
                lc.clone(),
                scope.clone(),
                &proxy,
                routes,
                parts.all_backends.clone(),
                refusals.clone(),
            )
            .with_kernel_forwarding(kernel.clone()),
        );
        info!(
            "{} listener on {local} (max_connections {})",
            lc.role, lc.max_connections
        );
        shared.push((l.clone(), local.to_string()));
        tasks.push(tokio::spawn(listener::accept_loop(sock, l)));
    }
    let sources = Arc::new(StatusSources {
        scope,
        listeners: shared,
        state: parts.state.clone(),
        stats: parts.stats.clone(),
        forwarding: forwarding.clone(),
    });
    let status_addr = match status_sock {
        Some(s) => {
            let a = s.local_addr()?;
            info!("status on http://{a}/status and http://{a}/metrics");
            tasks.push(tokio::spawn(status::serve(s, sources.clone())));
            Some(a)
        }
        None => None,
    };
    Ok(ProxyHandle {
        addrs,
        status_addr,
        sources,
        tasks,
        forwarding,
        running: cfg,
        dcs,
        client,
    })
}

/// Loads the in-kernel forwarding program as `proxy.kernel_forwarding` asks, and says which
/// mode is active.
fn kernel_forwarding(proxy: &ProxyConfig) -> Result<Option<Arc<sockmap::SockMap>>> {
    // Two sockets per connection, plus room for connections still closing.
    let sockets: usize = proxy.listeners.iter().map(|l| l.max_connections).sum();
    let max_entries = (sockets * 2 + 1024).min(u32::MAX as usize) as u32;
    let why = "it needs root (or CAP_BPF and CAP_NET_ADMIN) and a kernel with CONFIG_BPF_SYSCALL and CONFIG_NET_SOCK_MSG";
    let fixed = sockmap::DUPLICATION_FIXED_IN;
    let kernel = sockmap::kernel_version();
    let kernel_name = kernel.map_or("of unknown version".to_string(), |(a, b)| {
        format!("{a}.{b}")
    });
    let old_kernel = kernel.is_none_or(|v| v < fixed);
    let old_why = format!(
        "kernel {kernel_name} predates {}.{}, whose sockmap fix (\"bpf, sockmap: fix duplicated data transmission\") stops a segment that the receiving socket took only in part from being sent again",
        fixed.0, fixed.1
    );
    match proxy.kernel_forwarding {
        KernelForwarding::Auto if old_kernel => {
            let msg = format!("forwarding in user space: {old_why}; set proxy.kernel_forwarding: on to forward in the kernel anyway (only where that fix was backported to this kernel)");
            if proxy.kernel_forwarding_set {
                tracing::warn!("{msg}");
            } else {
                info!("{msg}");
            }
            Ok(None)
        }
        KernelForwarding::Off => {
            info!("forwarding in user space (proxy.kernel_forwarding: off)");
            Ok(None)
        }
        KernelForwarding::On => {
            let m = sockmap::SockMap::load(max_entries).map_err(|e| {
                anyhow!("proxy.kernel_forwarding is on but the BPF forwarding program cannot be loaded: {e}; {why}, or set proxy.kernel_forwarding: auto to fall back to copying in user space")
            })?;
            if old_kernel {
                tracing::warn!("proxy.kernel_forwarding is on although the {old_why}: make sure that fix was backported to this kernel, or the router may deliver some bytes twice under load");
            }
            info!(
                "forwarding in the kernel (BPF sockhash, attached as {})",
                m.attach
            );
            Ok(Some(Arc::new(m)))
        }
        KernelForwarding::Auto => match sockmap::SockMap::load(max_entries) {
            Ok(m) => {
                info!(
                    "forwarding in the kernel (BPF sockhash, attached as {})",
                    m.attach
                );
                Ok(Some(Arc::new(m)))
            }
            Err(e) if !proxy.kernel_forwarding_set => {
                info!("forwarding in user space: the BPF forwarding program cannot be loaded ({e}); {why}");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(
                    "forwarding in user space: the BPF forwarding program cannot be loaded ({e}); {why}. Run the router with those privileges for in-kernel forwarding, or set proxy.kernel_forwarding: off to choose user space and silence this warning"
                );
                Ok(None)
            }
        },
    }
}

/// Raises the soft limit on open files to the hard limit: each client connection takes two.
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// `tandem proxy -c router.yml`: runs the router until SIGINT or SIGTERM; SIGHUP reloads its
/// certificates ([`ProxyHandle::reload`]).
pub fn main_entry(config: &Path) -> Result<()> {
    let cfg = RouterConfig::load(config)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
    for w in &cfg.warnings {
        tracing::warn!("{}: {w}", config.display());
    }
    let threads = cfg.proxy.threads;
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async {
        // The same TLS checks as the agent's (etcd3 and ctl files, etcd's certificate).
        crate::tlscheck::at_startup(&cfg.base).await?;
        crate::tlscheck::register(&cfg.base);
        use tokio::signal::unix::{signal, SignalKind};
        let mut handle = start(cfg).await?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hup.recv() => match RouterConfig::load(config) {
                    Ok(new) => {
                        info!("received SIGHUP: reloading the certificates");
                        handle.reload(&new).await;
                        crate::tlscheck::register(&new.base);
                    }
                    Err(e) => tracing::error!(
                        "received SIGHUP: keeping the running configuration and certificates: {e:#}"
                    ),
                },
            }
        }
        info!("stopping the router");
        handle.stop();
        Ok::<(), anyhow::Error>(())
    })?;
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// `tandem proxy status -c router.yml`: prints the routing table of the running router.
pub fn status_entry(config: &Path) -> Result<()> {
    let cfg = RouterConfig::load(config)?;
    let Some(addr) = cfg.proxy.status_listen.as_deref() else {
        return Err(anyhow!(
            "{}: proxy.status_listen is not set, so the router has no status endpoint to ask; add e.g. `status_listen: 127.0.0.1:5009` under proxy: and restart it",
            config.display()
        ));
    };
    let (code, body) = status::fetch(addr, "/status", Duration::from_secs(5))?;
    if code != 200 {
        return Err(anyhow!("GET http://{addr}/status answered {code}: {body}"));
    }
    let doc: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("GET http://{addr}/status: the answer is not JSON"))?;
    print!("{}", status::render(&doc));
    Ok(())
}
