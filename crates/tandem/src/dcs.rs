//! etcd v3 adapter: Patroni's key layout (spec §1), one lease per agent, the leader key taken with a
//! create-revision transaction, compare-and-set writes, and a watch that wakes the HA loop.

use anyhow::{anyhow, Context, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_core::cluster::{ClusterView, RawKey};
use tokio::sync::{watch, Notify};

use crate::config::EtcdConfig;

#[derive(Clone)]
pub struct Dcs {
    client: Client,
    /// `/<namespace>/<scope>/`
    prefix: String,
    timeout: Duration,
}

impl Dcs {
    pub async fn connect(cfg: &EtcdConfig, prefix: &str, timeout: Duration) -> Result<Dcs> {
        let endpoints = cfg.endpoints();
        if endpoints.is_empty() {
            return Err(anyhow!("etcd3.hosts is empty: list the etcd client endpoints, e.g. `hosts: 10.0.0.1:2379,10.0.0.2:2379`"));
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(10), timeout);
        if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
            opts = opts.with_user(user.clone(), password.expose().to_string());
        }
        if cfg.protocol == "https" || cfg.cacert.is_some() || cfg.cert.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &cfg.cacert {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("etcd3.cacert: cannot read {}", ca.display()))?;
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) {
                let c = std::fs::read(cert)
                    .with_context(|| format!("etcd3.cert: cannot read {}", cert.display()))?;
                let k = std::fs::read(key)
                    .with_context(|| format!("etcd3.key: cannot read {}", key.display()))?;
                tls = tls.identity(etcd_client::Identity::from_pem(c, k));
            }
            opts = opts.with_tls(tls);
        }
        let client =
            tokio::time::timeout(timeout * 2, Client::connect(endpoints.clone(), Some(opts)))
                .await
                .map_err(|_| anyhow!("timed out connecting to etcd at {}", endpoints.join(",")))?
                .with_context(|| format!("cannot connect to etcd at {}", endpoints.join(",")))?;
        Ok(Dcs {
            client,
            prefix: prefix.to_string(),
            timeout,
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    fn key(&self, rel: &str) -> String {
        format!("{}{}", self.prefix, rel)
    }

    async fn timed<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(anyhow!("etcd {what} failed: {e}")),
            Err(_) => Err(anyhow!("etcd {what} timed out after {:?}", self.timeout)),
        }
    }

    /// Reads every key of the cluster (linearizable) and decodes them.
    pub async fn read_cluster(&self) -> Result<(ClusterView, Vec<String>)> {
        let mut c = self.client.clone();
        let resp = self
            .timed(
                "range read",
                c.get(self.prefix.clone(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let keys: Vec<RawKey> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let k = std::str::from_utf8(kv.key()).ok()?;
                Some(RawKey {
                    key: k.strip_prefix(&self.prefix)?.to_string(),
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                    lease: kv.lease(),
                })
            })
            .collect();
        Ok(ClusterView::from_keys(&keys))
    }

    pub async fn grant_lease(&self, ttl: i64) -> Result<i64> {
        let mut c = self.client.clone();
        Ok(self
            .timed("lease grant", c.lease_grant(ttl, None))
            .await?
            .id())
    }

    pub async fn revoke_lease(&self, id: i64) -> Result<()> {
        let mut c = self.client.clone();
        self.timed("lease revoke", c.lease_revoke(id))
            .await
            .map(|_| ())
    }

    async fn txn(&self, what: &str, t: Txn) -> Result<bool> {
        let mut c = self.client.clone();
        Ok(self.timed(what, c.txn(t)).await?.succeeded())
    }

    /// Leader race: create `leader` only if it does not exist, bound to my lease.
    pub async fn take_leader(&self, name: &str, lease: i64) -> Result<bool> {
        let k = self.key("leader");
        let t = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                k,
                name,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        self.txn("leader race", t).await
    }

    /// Re-binds a leader key that still names me to my current lease.
    pub async fn reattach_leader(&self, name: &str, lease: i64) -> Result<bool> {
        let k = self.key("leader");
        let t = Txn::new()
            .when([Compare::value(k.clone(), CompareOp::Equal, name)])
            .and_then([TxnOp::put(
                k,
                name,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        self.txn("leader re-attach", t).await
    }

    /// Deletes the leader key only if it still names me.
    pub async fn delete_leader(&self, name: &str) -> Result<bool> {
        let k = self.key("leader");
        let t = Txn::new()
            .when([Compare::value(k.clone(), CompareOp::Equal, name)])
            .and_then([TxnOp::delete(k, None)]);
        self.txn("leader release", t).await
    }

    /// Bootstrap race: create `initialize` with an empty value only if absent.
    pub async fn race_initialize(&self) -> Result<bool> {
        let k = self.key("initialize");
        let t = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, "", None)]);
        self.txn("initialize race", t).await
    }

    /// Creates `rel` only if it does not exist yet.
    pub async fn create(&self, rel: &str, value: &str) -> Result<bool> {
        let k = self.key(rel);
        let t = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, value, None)]);
        self.txn("create", t).await
    }

    /// Compare-and-set on the key's mod revision.
    pub async fn cas(&self, rel: &str, value: &str, mod_revision: i64) -> Result<bool> {
        let k = self.key(rel);
        let t = Txn::new()
            .when([Compare::mod_revision(
                k.clone(),
                CompareOp::Equal,
                mod_revision,
            )])
            .and_then([TxnOp::put(k, value, None)]);
        self.txn("compare-and-set", t).await
    }

    pub async fn put(&self, rel: &str, value: &str, lease: Option<i64>) -> Result<()> {
        let mut c = self.client.clone();
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        self.timed("put", c.put(self.key(rel), value, opts))
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, rel: &str) -> Result<()> {
        let mut c = self.client.clone();
        self.timed("delete", c.delete(self.key(rel), None))
            .await
            .map(|_| ())
    }

    /// Deletes every key of the cluster (`tandem remove`).
    pub async fn delete_cluster(&self) -> Result<()> {
        let mut c = self.client.clone();
        self.timed(
            "delete",
            c.delete(
                self.prefix.clone(),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            ),
        )
        .await
        .map(|_| ())
    }

    /// Watches the cluster prefix; every change bumps the returned counter. Reconnects on its own.
    pub fn spawn_watch(&self) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0u64);
        let dcs = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let mut c = dcs.client.clone();
                match c
                    .watch(dcs.prefix.clone(), Some(WatchOptions::new().with_prefix()))
                    .await
                {
                    Ok(mut stream) => {
                        backoff = Duration::from_millis(200);
                        tx.send_modify(|n| *n += 1);
                        loop {
                            match stream.message().await {
                                Ok(Some(resp)) => {
                                    if resp.canceled() {
                                        break;
                                    }
                                    if resp.events().iter().any(|e| {
                                        matches!(e.event_type(), EventType::Put | EventType::Delete)
                                    }) {
                                        tx.send_modify(|n| *n += 1);
                                    }
                                }
                                Ok(None) | Err(_) => break,
                            }
                        }
                    }
                    Err(e) => tracing::debug!("etcd watch failed: {e}"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
        rx
    }
}

/// The agent's lease, kept alive by its own task on its own schedule, apart from the HA loop.
#[derive(Clone, Debug, Default)]
pub struct LeaseInfo {
    pub id: i64,
    /// Send time of the last successful keepalive (or grant) + TTL.
    pub deadline: Option<Instant>,
}

#[derive(Clone)]
pub struct Lease {
    state: Arc<Mutex<LeaseInfo>>,
    /// Signalled when the lease is lost and a new one granted (keys must be re-written).
    pub changed: Arc<Notify>,
    /// Ask the keeper to send a keepalive now.
    poke: Arc<Notify>,
}

impl Lease {
    pub fn info(&self) -> LeaseInfo {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.info()
            .deadline
            .map(|d| d.saturating_duration_since(now))
    }
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// Starts the keeper task: grant a lease of `ttl` seconds and refresh it every `interval`.
    pub fn start(dcs: Dcs, ttl: Arc<Mutex<Duration>>, interval: Arc<Mutex<Duration>>) -> Lease {
        let lease = Lease {
            state: Arc::new(Mutex::new(LeaseInfo::default())),
            changed: Arc::new(Notify::new()),
            poke: Arc::new(Notify::new()),
        };
        let l = lease.clone();
        tokio::spawn(async move { l.run(dcs, ttl, interval).await });
        lease
    }

    fn set(&self, f: impl FnOnce(&mut LeaseInfo)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s)
        }
    }

    async fn run(self, dcs: Dcs, ttl: Arc<Mutex<Duration>>, interval: Arc<Mutex<Duration>>) {
        let get = |m: &Arc<Mutex<Duration>>| m.lock().map(|d| *d).unwrap_or(Duration::from_secs(1));
        let mut granted_ttl = Duration::ZERO;
        loop {
            let want_ttl = get(&ttl);
            let id = self.info().id;
            if id == 0 || want_ttl != granted_ttl {
                let sent = Instant::now();
                match dcs.grant_lease(want_ttl.as_secs().max(1) as i64).await {
                    Ok(new_id) => {
                        if id != 0 {
                            let _ = dcs.revoke_lease(id).await;
                        }
                        granted_ttl = want_ttl;
                        self.set(|s| {
                            s.id = new_id;
                            s.deadline = Some(sent + want_ttl);
                        });
                        self.changed.notify_waiters();
                        self.changed.notify_one();
                    }
                    Err(e) => {
                        tracing::warn!("cannot grant an etcd lease: {e}");
                        tokio::time::sleep(get(&interval)).await;
                        continue;
                    }
                }
            }
            let id = self.info().id;
            let mut c = dcs.client.clone();
            let (mut keeper, mut stream) =
                match dcs.timed("lease keepalive", c.lease_keep_alive(id)).await {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::debug!("{e}");
                        tokio::time::sleep(get(&interval).min(Duration::from_millis(500))).await;
                        continue;
                    }
                };
            // Keep this stream until it fails.
            loop {
                let sent = Instant::now();
                let ok = async {
                    keeper.keep_alive().await.ok()?;
                    let resp = tokio::time::timeout(dcs.timeout, stream.message())
                        .await
                        .ok()?
                        .ok()??;
                    Some(resp.ttl())
                }
                .await;
                match ok {
                    Some(t) if t > 0 => self.set(|s| {
                        if s.id == id {
                            s.deadline =
                                Some(sent + Duration::from_secs(t as u64).min(granted_ttl));
                        }
                    }),
                    Some(_) => {
                        tracing::warn!("etcd says lease {id:x} has expired: granting a new one");
                        self.set(|s| {
                            s.id = 0;
                            s.deadline = None;
                        });
                        break;
                    }
                    None => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        break;
                    }
                }
                if get(&ttl) != granted_ttl {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(get(&interval)) => {}
                    _ = self.poke.notified() => {}
                }
            }
        }
    }

    /// Revokes the lease (graceful shutdown): all my keys vanish at once.
    pub async fn revoke(&self, dcs: &Dcs) {
        let id = self.info().id;
        if id != 0 {
            let _ = dcs.revoke_lease(id).await;
        }
    }
}
