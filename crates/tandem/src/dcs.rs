//! etcd v3 adapter: Patroni's key layout (spec §1), one lease per agent, the leader key taken with a
//! create-revision transaction, compare-and-set writes, and a watch-backed cache that wakes the HA loop.

use anyhow::{anyhow, Context, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_core::cluster::{ClusterView, RawKey};
use tokio::sync::{watch, Notify};

use crate::config::EtcdConfig;

/// One etcd endpoint and its client; the client is replaced by a new one (a new connection)
/// after a request on it timed out.
struct Endpoint {
    url: String,
    client: Mutex<Client>,
    renewing: std::sync::atomic::AtomicBool,
    /// Its client was made with TLS files that a reload has replaced since (the new client could
    /// not be made then): it is replaced after its next failure.
    stale: std::sync::atomic::AtomicBool,
}

/// How clients are made: the options (TLS identity included), replaced by [`Dcs::reload_tls`].
struct Setup {
    opts: ConnectOptions,
    /// A digest of the TLS files' paths and contents when `opts` was made.
    files: u64,
    /// Bumped by each reload: a reconnection begun before it does not install its client.
    generation: u64,
}

#[derive(Clone)]
pub struct Dcs {
    /// One client per etcd endpoint: a request that fails moves on to the next endpoint at once
    /// (a balanced channel keeps picking a dead member for a while).
    clients: Arc<Vec<Endpoint>>,
    setup: Arc<Mutex<Setup>>,
    current: Arc<AtomicUsize>,
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
        let opts = connect_options(cfg, timeout)?;
        let mut clients = Vec::new();
        for e in &endpoints {
            // Connections are made lazily: this fails only on a malformed endpoint or bad credentials.
            let c = tokio::time::timeout(
                timeout * 2,
                Client::connect([e.clone()], Some(opts.clone())),
            )
            .await
            .map_err(|_| anyhow!("timed out connecting to etcd at {e}"))?
            .with_context(|| format!("cannot connect to etcd at {e}"))?;
            clients.push(Endpoint {
                url: e.clone(),
                client: Mutex::new(c),
                renewing: std::sync::atomic::AtomicBool::new(false),
                stale: std::sync::atomic::AtomicBool::new(false),
            });
        }
        Ok(Dcs {
            clients: Arc::new(clients),
            setup: Arc::new(Mutex::new(Setup {
                opts,
                files: tls_files_digest(cfg),
                generation: 0,
            })),
            current: Arc::new(AtomicUsize::new(0)),
            prefix: prefix.to_string(),
            timeout,
        })
    }

    /// Reads `etcd3`'s TLS files again; when their contents (or paths) changed, makes a new client
    /// for every endpoint with them. Requests, and the streams opened from now on (the lease
    /// keepalive, the watch, when they next reconnect), use the new clients; a stream already
    /// open stays on its connection until that ends. The lease is untouched: its id is what
    /// the keys are bound to, and any client keeps it alive.
    ///
    /// Returns the files read ("etcd3.cacert /etc/tandem/ca.crt, ...") when they changed,
    /// `None` when they did not. On an error, which names the setting and the file, the
    /// clients stay as they were.
    pub async fn reload_tls(&self, cfg: &EtcdConfig) -> Result<Option<String>> {
        let digest = tls_files_digest(cfg);
        if self.lock_setup().files == digest {
            return Ok(None);
        }
        check_tls_files(cfg)?;
        let opts = connect_options(cfg, self.timeout)?;
        let generation = {
            let mut s = self.lock_setup();
            s.opts = opts.clone();
            s.files = digest;
            s.generation += 1;
            s.generation
        };
        for e in self.clients.iter() {
            let fresh = tokio::time::timeout(
                self.timeout * 2,
                Client::connect([e.url.clone()], Some(opts.clone())),
            )
            .await;
            match fresh {
                Ok(Ok(c)) if self.lock_setup().generation == generation => {
                    if let Ok(mut slot) = e.client.lock() {
                        *slot = c;
                    }
                    e.stale.store(false, Ordering::SeqCst);
                }
                Ok(Ok(_)) => {} // a later reload overtook this one
                Ok(Err(err)) => {
                    tracing::warn!("etcd {}: no new connection with the new certificates yet ({err}): the next one will use them", e.url);
                    e.stale.store(true, Ordering::SeqCst);
                }
                Err(_) => {
                    tracing::warn!("etcd {}: no new connection with the new certificates yet (timed out): the next one will use them", e.url);
                    e.stale.store(true, Ordering::SeqCst);
                }
            }
        }
        let files = [
            ("etcd3.cacert", &cfg.cacert),
            ("etcd3.cert", &cfg.cert),
            ("etcd3.key", &cfg.key),
        ];
        Ok(Some(
            files
                .iter()
                .filter_map(|(k, p)| p.as_ref().map(|p| format!("{k} {}", p.display())))
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }

    fn lock_setup(&self) -> std::sync::MutexGuard<'_, Setup> {
        self.setup.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client(&self, i: usize) -> Client {
        let e = &self.clients[i];
        e.client
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// A request on endpoint `i` timed out: its connection may be half-dead (packets dropped,
    /// TCP waiting out its retransmission back-off, which after a long partition takes seconds
    /// to notice the network is back). Replace its client, so the next request there opens a
    /// new connection at once. In the background; one at a time per endpoint.
    fn renew_connection(&self, i: usize) {
        let e = &self.clients[i];
        if e.renewing.swap(true, Ordering::SeqCst) {
            return;
        }
        let dcs = self.clone();
        tokio::spawn(async move {
            let e = &dcs.clients[i];
            let (opts, generation) = {
                let s = dcs.lock_setup();
                (s.opts.clone(), s.generation)
            };
            let fresh = tokio::time::timeout(
                dcs.timeout * 2,
                Client::connect([e.url.clone()], Some(opts)),
            )
            .await;
            match fresh {
                Ok(Ok(c)) if dcs.lock_setup().generation == generation => {
                    if let Ok(mut slot) = e.client.lock() {
                        *slot = c;
                    }
                    e.stale.store(false, Ordering::SeqCst);
                    tracing::debug!("etcd {}: new connection after a time-out", e.url);
                }
                Ok(Ok(_)) => {} // made with the certificates a reload has replaced since
                Ok(Err(err)) => tracing::debug!("etcd {}: cannot reconnect: {err}", e.url),
                Err(_) => tracing::debug!("etcd {}: reconnect timed out", e.url),
            }
            e.renewing.store(false, Ordering::SeqCst);
        });
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    fn key(&self, rel: &str) -> String {
        format!("{}{}", self.prefix, rel)
    }
    fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed) % self.clients.len()
    }
    /// Moves on to the next endpoint after a failure on endpoint `failed`.
    fn rotate(&self, failed: usize) {
        let n = self.clients.len();
        let _ = self.current.compare_exchange(
            failed,
            (failed + 1) % n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Runs one request; on an error or a timeout (`timeout` per try) it moves to the next
    /// endpoint and tries again, at most once per endpoint.
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for _ in 0..self.clients.len() {
            let i = self.current();
            match tokio::time::timeout(self.timeout, f(self.client(i))).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    last = Some(anyhow!("etcd {what} failed: {e}"));
                    if self.clients[i].stale.load(Ordering::SeqCst) {
                        self.renew_connection(i);
                    }
                }
                Err(_) => {
                    last = Some(anyhow!("etcd {what} timed out after {:?}", self.timeout));
                    self.renew_connection(i);
                }
            }
            self.rotate(i);
        }
        Err(last.unwrap_or_else(|| anyhow!("etcd {what} failed")))
    }

    async fn read_raw(&self) -> Result<(Vec<RawKey>, i64)> {
        let prefix = self.prefix.clone();
        let resp = self
            .call("range read", |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let keys = resp
            .kvs()
            .iter()
            .filter_map(|kv| self.raw_key(kv.key(), kv.value(), kv.mod_revision(), kv.lease()))
            .collect();
        Ok((keys, revision))
    }

    fn raw_key(&self, key: &[u8], value: &[u8], mod_revision: i64, lease: i64) -> Option<RawKey> {
        let k = std::str::from_utf8(key).ok()?;
        Some(RawKey {
            key: k.strip_prefix(&self.prefix)?.to_string(),
            value: value.to_vec(),
            mod_revision,
            lease,
        })
    }

    /// Reads every key of the cluster (linearizable) and decodes them.
    pub async fn read_cluster(&self) -> Result<(ClusterView, Vec<String>)> {
        let (keys, _) = self.read_raw().await?;
        Ok(ClusterView::from_keys(&keys))
    }

    pub async fn grant_lease(&self, ttl: i64) -> Result<i64> {
        Ok(self
            .call("lease grant", |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?
            .id())
    }

    /// Seconds etcd still gives lease `id` (`None`: etcd does not know it).
    pub async fn lease_time_to_live(&self, id: i64) -> Result<Option<i64>> {
        let r = self
            .call("lease time-to-live", |mut c| async move {
                c.lease_time_to_live(id, None).await
            })
            .await?;
        Ok((r.ttl() > 0).then_some(r.ttl()))
    }

    pub async fn revoke_lease(&self, id: i64) -> Result<()> {
        self.call(
            "lease revoke",
            |mut c| async move { c.lease_revoke(id).await },
        )
        .await
        .map(|_| ())
    }

    async fn txn(&self, what: &str, t: Txn) -> Result<bool> {
        let resp = self
            .call(what, |mut c| {
                let t = t.clone();
                async move { c.txn(t).await }
            })
            .await?;
        Ok(resp.succeeded())
    }

    /// Leader race: write `leader`, bound to my lease, only if it is absent or bound to no lease
    /// (no agent writes it so: such a key never expires and would hold the cluster leaderless
    /// forever; etcd compares a missing key's lease as 0). Refused without a valid lease of my
    /// own. On a win, the proof that I hold the key.
    pub async fn take_leader(&self, name: &str, lease: &LeaseInfo) -> Result<Option<LeaderProof>> {
        let (id, deadline) = lease.usable(Instant::now())?;
        let k = self.key("leader");
        let t = Txn::new()
            .when([Compare::lease(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, name, Some(PutOptions::new().with_lease(id)))]);
        Ok(self.txn("leader race", t).await?.then_some(LeaderProof {
            lease: id,
            lease_deadline: deadline,
        }))
    }

    /// Proves, with a linearizable transaction made now, that the leader key names me and is bound
    /// to my current lease; `None` when it does not. Promotion and a start as primary need this
    /// proof: a cache, or a view read earlier, cannot give one.
    pub async fn confirm_leader(
        &self,
        name: &str,
        lease: &LeaseInfo,
    ) -> Result<Option<LeaderProof>> {
        let (id, deadline) = lease.usable(Instant::now())?;
        let k = self.key("leader");
        let t = Txn::new().when([
            Compare::value(k.clone(), CompareOp::Equal, name),
            Compare::lease(k, CompareOp::Equal, id),
        ]);
        Ok(self
            .txn("leader confirmation", t)
            .await?
            .then_some(LeaderProof {
                lease: id,
                lease_deadline: deadline,
            }))
    }

    /// Moves my keys from lease `old` to lease `new` in one transaction: the leader key if it
    /// names me under `old` (true when it did), and my member key in any case. The leader key is
    /// never absent on the way, so a `ttl` change moves no leadership.
    pub async fn move_to_lease(
        &self,
        name: &str,
        old: i64,
        new: i64,
        member_value: &str,
    ) -> Result<bool> {
        let leader = self.key("leader");
        let member = self.key(&format!("members/{name}"));
        let put_member = TxnOp::put(
            member,
            member_value,
            Some(PutOptions::new().with_lease(new)),
        );
        let t = Txn::new()
            .when([
                Compare::value(leader.clone(), CompareOp::Equal, name),
                Compare::lease(leader.clone(), CompareOp::Equal, old),
            ])
            .and_then([
                TxnOp::put(leader, name, Some(PutOptions::new().with_lease(new))),
                put_member.clone(),
            ])
            .or_else([put_member]);
        self.txn("lease switch", t).await
    }

    /// Re-binds a leader key that still names me to my current lease (refused without a valid one).
    pub async fn reattach_leader(&self, name: &str, lease: &LeaseInfo) -> Result<bool> {
        let (id, _) = lease.usable(Instant::now())?;
        let k = self.key("leader");
        let t = Txn::new()
            .when([Compare::value(k.clone(), CompareOp::Equal, name)])
            .and_then([TxnOp::put(k, name, Some(PutOptions::new().with_lease(id)))]);
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

    /// Voluntary release: write my last WAL position to `status` and delete the leader key in one
    /// transaction, only if the key still names me (one round trip on the hand-over path).
    pub async fn release_leader_with_status(&self, name: &str, status: &str) -> Result<bool> {
        let k = self.key("leader");
        let t = Txn::new()
            .when([Compare::value(k.clone(), CompareOp::Equal, name)])
            .and_then([
                TxnOp::put(self.key("status"), status, None),
                TxnOp::delete(k, None),
            ]);
        self.txn("leader release", t).await
    }

    /// Writes `/sync` only while the leader key names me and `/sync` is as I last read it
    /// (`revision`: its mod revision, `None`: absent). `false`: either changed meanwhile.
    pub async fn write_sync(&self, name: &str, value: &str, revision: Option<i64>) -> Result<bool> {
        let k = self.key("sync");
        let unchanged = match revision {
            Some(r) => Compare::mod_revision(k.clone(), CompareOp::Equal, r),
            None => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
        };
        let t = Txn::new()
            .when([
                Compare::value(self.key("leader"), CompareOp::Equal, name),
                unchanged,
            ])
            .and_then([TxnOp::put(k, value, None)]);
        self.txn("/sync write", t).await
    }

    /// Deletes `/sync` only while the leader key names me and `/sync` is at `revision`.
    pub async fn delete_sync(&self, name: &str, revision: i64) -> Result<bool> {
        let k = self.key("sync");
        let t = Txn::new()
            .when([
                Compare::value(self.key("leader"), CompareOp::Equal, name),
                Compare::mod_revision(k.clone(), CompareOp::Equal, revision),
            ])
            .and_then([TxnOp::delete(k, None)]);
        self.txn("/sync delete", t).await
    }

    /// Bootstrap race: create `initialize` with an empty value only if absent.
    pub async fn race_initialize(&self) -> Result<bool> {
        self.create("initialize", "").await
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
        let key = self.key(rel);
        let value = value.to_string();
        self.call("put", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                c.put(key, value, lease.map(|l| PutOptions::new().with_lease(l)))
                    .await
            }
        })
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, rel: &str) -> Result<()> {
        let key = self.key(rel);
        self.call("delete", |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await
        .map(|_| ())
    }

    /// Deletes every key of the cluster (`tandem remove`).
    pub async fn delete_cluster(&self) -> Result<()> {
        let prefix = self.prefix.clone();
        self.call("delete", |mut c| {
            let prefix = prefix.clone();
            async move {
                c.delete(
                    prefix,
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                )
                .await
            }
        })
        .await
        .map(|_| ())
    }

    /// A watch-backed cache of every key under the cluster prefix: a range read, then a watch from
    /// the next revision. Each change publishes a new state (which also wakes the HA loop). On any
    /// error the cache is marked unsynced and rebuilt.
    pub fn spawn_cache(&self) -> watch::Receiver<CacheState> {
        let (tx, rx) = watch::channel(CacheState::default());
        let dcs = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            // Failures are logged as warnings at most every 30 s (a certificate etcd refuses,
            // an unreachable member), the rest at debug level.
            let mut warned: Option<tokio::time::Instant> = None;
            loop {
                if let Err(e) = dcs.follow(&tx).await {
                    if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                        tracing::warn!("etcd watch: {e:#}");
                        warned = Some(tokio::time::Instant::now());
                    } else {
                        tracing::debug!("etcd watch: {e:#}");
                    }
                    let i = dcs.current();
                    dcs.rotate(i);
                }
                tx.send_modify(|s| {
                    s.synced = false;
                    s.seq += 1;
                });
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        });
        rx
    }

    async fn follow(&self, tx: &watch::Sender<CacheState>) -> Result<()> {
        let (keys, revision) = self.read_raw().await?;
        let mut map: BTreeMap<String, RawKey> =
            keys.into_iter().map(|k| (k.key.clone(), k)).collect();
        let prefix = self.prefix.clone();
        let mut stream = self
            .call("watch", |mut c| {
                let prefix = prefix.clone();
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1)
                    .with_progress_notify();
                async move { c.watch(prefix, Some(opts)).await }
            })
            .await?;
        tx.send_modify(|s| {
            s.keys = Arc::new(map.clone());
            s.revision = revision;
            s.synced = true;
            s.seq += 1;
        });
        loop {
            let Some(resp) = stream.message().await.map_err(|e| anyhow!("{e}"))? else {
                return Err(anyhow!("watch stream closed"));
            };
            if resp.canceled() {
                return Err(anyhow!(
                    "watch canceled (compacted at {})",
                    resp.compact_revision()
                ));
            }
            if resp.events().is_empty() {
                continue;
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let Some(raw) = self.raw_key(kv.key(), kv.value(), kv.mod_revision(), kv.lease())
                else {
                    continue;
                };
                match ev.event_type() {
                    EventType::Put => {
                        map.insert(raw.key.clone(), raw);
                    }
                    EventType::Delete => {
                        map.remove(&raw.key);
                    }
                }
            }
            let rev = resp.header().map(|h| h.revision()).unwrap_or(revision);
            tx.send_modify(|s| {
                s.keys = Arc::new(map.clone());
                s.revision = rev;
                s.seq += 1;
            });
        }
    }
}

/// The client options for `cfg`: timeouts, credentials, TLS.
fn connect_options(cfg: &EtcdConfig, timeout: Duration) -> Result<ConnectOptions> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
        // HTTP/2 pings find a connection to a member cut off by dropped packets within
        // 6 s + timeout (etcd refuses pings closer than 5 s apart: --grpc-keepalive-min-time).
        .with_keep_alive(Duration::from_secs(6), timeout);
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
    Ok(opts)
}

/// A digest of the paths and contents of `etcd3`'s TLS files (an unreadable file counts as
/// empty), to tell whether a reload changes them. Not kept anywhere but in memory.
fn tls_files_digest(cfg: &EtcdConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in [&cfg.cacert, &cfg.cert, &cfg.key] {
        p.hash(&mut h);
        if let Some(p) = p {
            std::fs::read(p).unwrap_or_default().hash(&mut h);
        }
    }
    h.finish()
}

/// Parses `etcd3`'s TLS files as the client will, so that a reload with a broken file (no
/// certificate in it, a key that does not fit the certificate) is refused with the setting
/// and the file named, instead of failing on every later connection.
fn check_tls_files(cfg: &EtcdConfig) -> Result<()> {
    use crate::api::tls;
    use tokio_rustls::rustls::ClientConfig;
    let roots = match &cfg.cacert {
        Some(ca) => tls::load_roots(ca).context("etcd3.cacert")?,
        None => tokio_rustls::rustls::RootCertStore::empty(),
    };
    if let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) {
        let certs = tls::load_certs(cert).context("etcd3.cert")?;
        let private = tls::load_private_key(key).context("etcd3.key")?;
        ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, private)
            .map_err(|e| {
                anyhow!(
                    "etcd3.cert/key: the key in {} does not fit the certificate in {} ({e})",
                    key.display(),
                    cert.display()
                )
            })?;
    }
    Ok(())
}

/// The cache's content: raw keys (relative to the prefix) at an etcd revision.
#[derive(Clone, Debug, Default)]
pub struct CacheState {
    pub keys: Arc<BTreeMap<String, RawKey>>,
    pub revision: i64,
    /// False until the first range read succeeded, and again after a watch failure.
    pub synced: bool,
    /// Bumped on every change (wake-ups).
    pub seq: u64,
}

impl CacheState {
    pub fn view(&self) -> (ClusterView, Vec<String>) {
        ClusterView::from_keys(self.keys.values())
    }
}

/// Evidence that the leader key named this node under its current lease, from an etcd
/// transaction that succeeded: made only by [`Dcs::take_leader`] and [`Dcs::confirm_leader`]
/// (its fields are private to this module). Making PostgreSQL writable — a promotion or a start
/// as primary — takes one, and checks that the lease it names still has time left (DESIGN §4
/// rules 1 and 2): a view from a cache or an earlier read cannot make a primary.
#[derive(Debug)]
pub struct LeaderProof {
    lease: i64,
    /// The lease's deadline when the transaction was sent: the send time of the last successful
    /// keepalive (or grant) + TTL. etcd keeps the lease at least that long.
    lease_deadline: Instant,
}

impl LeaderProof {
    pub fn lease(&self) -> i64 {
        self.lease
    }
    /// Time left on the lease the key was proven under.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.lease_deadline.saturating_duration_since(now)
    }
}

/// The agent's lease, kept alive by its own task on its own schedule, apart from the HA loop.
#[derive(Clone, Debug, Default)]
pub struct LeaseInfo {
    pub id: i64,
    /// Send time of the last successful keepalive (or grant) + TTL.
    pub deadline: Option<Instant>,
    /// The TTL the lease was granted with.
    pub ttl: Duration,
    /// Set while the leader key may be bound to another lease that nobody renews and that etcd
    /// ends at this instant (a lease switch whose answer was lost): the lease counts as ending
    /// then, for every decision, the demotion point and the fence.
    pub cap: Option<Instant>,
}

impl LeaseInfo {
    /// The lease id and deadline, if there is a lease and its deadline is still ahead of `now`;
    /// an error saying why not otherwise.
    /// The deadline every decision uses: the keepalive deadline, or the cap if sooner.
    pub fn effective_deadline(&self) -> Option<Instant> {
        match (self.deadline, self.cap) {
            (Some(d), Some(c)) => Some(d.min(c)),
            (d, _) => d,
        }
    }

    pub fn usable(&self, now: Instant) -> Result<(i64, Instant)> {
        match self.effective_deadline() {
            Some(d) if self.id != 0 && d > now => Ok((self.id, d)),
            _ if self.id == 0 => Err(anyhow!("I have no etcd lease (not granted yet, or lost)")),
            _ => Err(anyhow!(
                "my etcd lease {:x} has run out (no keepalive succeeded in time)",
                self.id
            )),
        }
    }
}

/// Whether an etcd error says the lease a request named does not exist (expired or revoked).
pub fn is_lease_not_found(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("lease not found")
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
            .effective_deadline()
            .map(|d| d.saturating_duration_since(now))
    }

    /// Sets or clears [`LeaseInfo::cap`].
    pub fn set_cap(&self, cap: Option<Instant>) {
        self.set(|s| s.cap = cap);
    }
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// A lease with no keeper task: it changes only through `adopt` and `lost` (tests).
    pub fn detached(info: LeaseInfo) -> Lease {
        Lease {
            state: Arc::new(Mutex::new(info)),
            changed: Arc::new(Notify::new()),
            poke: Arc::new(Notify::new()),
        }
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
        loop {
            let want_ttl = get(&ttl);
            let id = self.info().id;
            // A changed ttl does not make the keeper replace a live lease: revoking it would
            // delete the leader key under the leader's feet. The agent moves its keys to a new
            // lease in one transaction and hands it over with `adopt`.
            if id == 0 {
                let sent = Instant::now();
                match dcs.grant_lease(want_ttl.as_secs().max(1) as i64).await {
                    Ok(new_id) => {
                        let mut taken = false;
                        self.set(|s| {
                            // Unless a lease was adopted meanwhile.
                            if s.id == 0 {
                                s.id = new_id;
                                s.ttl = want_ttl;
                                s.deadline = Some(sent + want_ttl);
                                taken = true;
                            }
                        });
                        if taken {
                            self.changed.notify_waiters();
                            self.changed.notify_one();
                        } else {
                            let _ = dcs.revoke_lease(new_id).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("cannot grant an etcd lease: {e}");
                        tokio::time::sleep(get(&interval)).await;
                        continue;
                    }
                }
            }
            let id = self.info().id;
            let (mut keeper, mut stream) = match dcs
                .call("lease keepalive", |mut c| async move {
                    c.lease_keep_alive(id).await
                })
                .await
            {
                Ok(pair) => pair,
                Err(e) if is_lease_not_found(&e) => {
                    // After a partition longer than the TTL, etcd has expired the lease; the
                    // client reports it when the stream opens. Without a new lease the member
                    // key can never be written again.
                    tracing::warn!("etcd no longer knows lease {id:x} (it expired while I could not reach etcd): granting a new one");
                    self.set(|s| {
                        if s.id == id {
                            s.id = 0;
                            s.deadline = None;
                        }
                    });
                    continue;
                }
                Err(e) => {
                    tracing::debug!("{e}");
                    tokio::select! {
                        _ = tokio::time::sleep(get(&interval).min(Duration::from_millis(500))) => {}
                        _ = self.poke.notified() => {}
                    }
                    continue;
                }
            };
            // Keep this stream until it fails.
            loop {
                if self.info().id != id {
                    break; // declared lost by a request that met "lease not found"
                }
                let sent = Instant::now();
                let ok = async {
                    tokio::time::timeout(dcs.timeout, keeper.keep_alive())
                        .await
                        .ok()?
                        .ok()?;
                    let resp = match tokio::time::timeout(dcs.timeout, stream.message()).await {
                        Ok(r) => r,
                        // After a stall of this process the timer can fire before the I/O
                        // driver has delivered an answer that is already here: one short
                        // second chance before the stream is given up.
                        Err(_) => {
                            tokio::time::timeout(Duration::from_millis(200), stream.message())
                                .await
                                .ok()?
                        }
                    };
                    Some(resp.ok()??.ttl())
                }
                .await;
                match ok {
                    Some(t) if t > 0 => self.set(|s| {
                        if s.id == id {
                            s.deadline = Some(sent + Duration::from_secs(t as u64).min(s.ttl));
                        }
                    }),
                    Some(_) => {
                        // Only if it is still the lease in use: the agent may have adopted
                        // another one meanwhile (a ttl switch revokes the old lease).
                        let mut forgot = false;
                        self.set(|s| {
                            if s.id == id {
                                s.id = 0;
                                s.deadline = None;
                                forgot = true;
                            }
                        });
                        if forgot {
                            tracing::warn!(
                                "etcd says lease {id:x} has expired: granting a new one"
                            );
                        }
                        break;
                    }
                    None => {
                        // This endpoint failed us: the next stream goes to another one.
                        dcs.rotate(dcs.current());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        break;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(get(&interval)) => {}
                    _ = self.poke.notified() => {}
                }
            }
        }
    }

    /// Makes `id` (granted with `ttl`, the grant sent at `sent`) the lease this keeper renews,
    /// in place of the current one (which the caller revokes once nothing is bound to it).
    pub fn adopt(&self, id: i64, sent: Instant, ttl: Duration) {
        self.set(|s| {
            s.id = id;
            s.ttl = ttl;
            s.deadline = Some(sent + ttl);
            s.cap = None;
        });
        self.changed.notify_waiters();
        self.poke.notify_one();
    }

    /// A request bound to lease `id` met "lease not found": etcd expired it (a partition longer
    /// than the TTL). Forget it and have the keeper grant a new one at once, so the member key can
    /// be written again (the keeper's own stream may not notice for a while).
    pub fn lost(&self, id: i64) {
        let mut forgot = false;
        self.set(|s| {
            if s.id == id && id != 0 {
                s.id = 0;
                s.deadline = None;
                forgot = true;
            }
        });
        if forgot {
            tracing::warn!("etcd no longer knows lease {id:x}: granting a new one");
            self.poke.notify_one();
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
