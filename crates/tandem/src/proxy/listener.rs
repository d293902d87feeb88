//! The adapter between clients and backends: accept, read the client's first packet, pick a
//! backend (waiting up to `hold_timeout` when there is none), connect, relay the PostgreSQL
//! encryption negotiation, then copy bytes both ways until either side closes or the backend is
//! fenced.
//!
//! The copy loop takes no lock: it reads into a per-thread scratch buffer and writes straight
//! out; only bytes the peer cannot take yet are kept, in a per-connection buffer that exists
//! only while the peer is slow (at most one read, 64 KiB, per direction).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use super::config::{Balance, ListenerConfig, ProxyConfig, Role};
use super::pgwire::{self, Packet};
use super::routing::Backend;
use super::sockmap::{self, SockMap};

/// Read size of the copy loop (the scratch buffer of each thread).
const SCRATCH: usize = 64 * 1024;
/// Refusals (ErrorResponse to a client we cannot serve) in flight at once; beyond, clients
/// are just closed.
const MAX_REFUSALS: usize = 256;
/// Pause between two tries after a backend failed during a connection's setup.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// Counters per (listener, backend name), shared by the router, the listeners and `/status`.
pub type StatsRegistry =
    Arc<std::sync::Mutex<std::collections::HashMap<(Role, String), Arc<BackendStats>>>>;

/// Counters of one backend behind one listener (kept across re-routings).
#[derive(Debug, Default)]
pub struct BackendStats {
    pub active: AtomicUsize,
    pub total: AtomicU64,
    pub bytes_from_client: AtomicU64,
    pub bytes_from_server: AtomicU64,
    /// Connections closed because the backend was fenced.
    pub fenced: AtomicU64,
    /// Connects or setups that failed (and were retried elsewhere or refused).
    pub failed: AtomicU64,
}

/// A backend as one listener sees it. `fence` turns true once: every connection through this
/// slot is then closed at once.
#[derive(Debug)]
pub struct Slot {
    pub backend: Backend,
    pub fence: watch::Sender<bool>,
    pub stats: Arc<BackendStats>,
}

impl Slot {
    pub fn new(backend: Backend, stats: Arc<BackendStats>) -> Slot {
        Slot {
            backend,
            fence: watch::channel(false).0,
            stats,
        }
    }
}

/// What a listener may route to right now.
#[derive(Debug, Default)]
pub struct Routes {
    pub slots: Vec<Arc<Slot>>,
    /// Said to clients that cannot be served: why there is no backend.
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct ListenerStats {
    pub accepted: AtomicU64,
    pub refused_full: AtomicU64,
    pub refused_no_backend: AtomicU64,
    /// Not PostgreSQL, or no first packet within `client_timeout`.
    pub bad_clients: AtomicU64,
    pub cancels: AtomicU64,
    /// Connections that had to wait for a backend, and the time they waited in total.
    pub held: AtomicU64,
    pub held_micros: AtomicU64,
    /// Connections whose bytes moved inside the kernel, and in the user-space copy loop.
    pub kernel_spliced: AtomicU64,
    pub user_spliced: AtomicU64,
    /// Bytes the router itself moved for kernel-forwarded connections (data that was already
    /// queued when the sockets joined the map; 0 with well-behaved PostgreSQL clients).
    pub kernel_leftover_bytes: AtomicU64,
    /// Kernel-forwarded connections reset because a receiver fell too far behind (see
    /// [`BACKLOG_LIMIT`]).
    pub backlog_resets: AtomicU64,
    /// Directions of kernel-forwarded connections handed back to the router because their
    /// receiver fell [`KERNEL_BUDGET`] behind (backpressure).
    pub kernel_paused: AtomicU64,
    /// Kernel-forwarded connections that ended cleanly with bytes unaccounted for (see
    /// `KernelPair::accounting`): expected 0.
    pub kernel_mismatches: AtomicU64,
}

pub struct ListenerShared {
    pub cfg: ListenerConfig,
    pub scope: String,
    pub routes: watch::Receiver<Arc<Routes>>,
    pub active: AtomicUsize,
    pub stats: ListenerStats,
    rr: AtomicUsize,
    /// Every member's PostgreSQL address: cancel requests go to all of them.
    pub all_backends: watch::Receiver<Arc<Vec<String>>>,
    hold_timeout: Duration,
    connect_timeout: Duration,
    client_timeout: Duration,
    refusals: Arc<Semaphore>,
    /// In-kernel forwarding, when the BPF program is loaded (`proxy.kernel_forwarding`).
    pub kernel: Option<Arc<SockMap>>,
    /// [`KERNEL_BUDGET`] (smaller in tests, to pause often).
    kernel_budget: u64,
}

impl ListenerShared {
    /// Moves the bytes of this listener's connections inside the kernel through `map`.
    pub fn with_kernel_forwarding(mut self, map: Option<Arc<SockMap>>) -> ListenerShared {
        self.kernel = map;
        self
    }

    #[cfg(test)]
    fn with_kernel_budget(mut self, bytes: u64) -> ListenerShared {
        self.kernel_budget = bytes;
        self
    }

    pub fn new(
        cfg: ListenerConfig,
        scope: String,
        proxy: &ProxyConfig,
        routes: watch::Receiver<Arc<Routes>>,
        all_backends: watch::Receiver<Arc<Vec<String>>>,
        refusals: Arc<Semaphore>,
    ) -> ListenerShared {
        ListenerShared {
            cfg,
            scope,
            routes,
            active: AtomicUsize::new(0),
            stats: ListenerStats::default(),
            rr: AtomicUsize::new(0),
            all_backends,
            hold_timeout: proxy.hold_timeout,
            connect_timeout: proxy.connect_timeout,
            client_timeout: proxy.client_timeout,
            refusals,
            kernel: None,
            kernel_budget: KERNEL_BUDGET,
        }
    }
}

pub fn refusal_limit() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_REFUSALS))
}

/// Binds `host:port` (port 0: any free port), with a long accept queue.
pub fn bind(addr: &str) -> io::Result<TcpListener> {
    let sa: SocketAddr = match addr.parse() {
        Ok(sa) => sa,
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(addr)?
            .next()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"))
            })?,
    };
    let sock = if sa.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(sa)?;
    sock.listen(4096)
}

/// Accepts clients until the task is dropped.
pub async fn accept_loop(listener: TcpListener, l: Arc<ListenerShared>) {
    let mut last_error_log: Option<Instant> = None;
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: say so now and then, do not spin.
                if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    warn!("{} listener: accept failed: {e}", l.cfg.role);
                    last_error_log = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        l.stats.accepted.fetch_add(1, Relaxed);
        let _ = sock.set_nodelay(true);
        if l.active.load(Relaxed) >= l.cfg.max_connections {
            l.stats.refused_full.fetch_add(1, Relaxed);
            if let Ok(permit) = l.refusals.clone().try_acquire_owned() {
                let l = l.clone();
                tokio::spawn(async move {
                    let msg = format!(
                        "too many connections to the tandem proxy {} listener of cluster {} (max_connections {})",
                        l.cfg.role, l.scope, l.cfg.max_connections
                    );
                    refuse(sock, None, "53300", &msg, None, l.client_timeout).await;
                    drop(permit);
                });
            }
            continue;
        }
        l.active.fetch_add(1, Relaxed);
        let l = l.clone();
        tokio::spawn(async move {
            let _guard = ActiveGuard(&l.active);
            serve(sock, peer, &l).await;
        });
    }
}

struct ActiveGuard<'a>(&'a AtomicUsize);
impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// One client packet read during setup.
struct ClientPacket {
    kind: Packet,
    bytes: Vec<u8>,
}

async fn read_packet(s: &mut TcpStream) -> io::Result<ClientPacket> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head).await?;
    let kind = pgwire::classify(&head);
    if kind == Packet::Invalid {
        return Ok(ClientPacket {
            kind,
            bytes: Vec::new(),
        });
    }
    let mut bytes = vec![0u8; kind.size()];
    bytes[..8].copy_from_slice(&head);
    s.read_exact(&mut bytes[8..]).await?;
    Ok(ClientPacket { kind, bytes })
}

/// How far the setup of one connection got.
enum Setup {
    /// Relay bytes from now on, starting with `to_client` (bytes of the server the router has
    /// read itself). `quiet`: both ends now wait for the other (the client for `to_client`, the
    /// server for the client's next message), so nothing is in flight and the sockets may be
    /// handed to the kernel (see [`kernel_splice`]).
    Splice { to_client: Vec<u8>, quiet: bool },
    /// This backend cannot take the connection; the client saw nothing of it: try again.
    Retry(String),
    /// The client left or misbehaved.
    ClientGone,
}

async fn serve(mut client: TcpStream, peer: SocketAddr, l: &ListenerShared) {
    let first = match tokio::time::timeout(l.client_timeout, read_packet(&mut client)).await {
        Ok(Ok(p)) => p,
        Ok(Err(_)) | Err(_) => {
            l.stats.bad_clients.fetch_add(1, Relaxed);
            debug!(
                "{} listener: {peer} sent no complete first packet",
                l.cfg.role
            );
            return;
        }
    };
    match first.kind {
        Packet::Invalid => {
            l.stats.bad_clients.fetch_add(1, Relaxed);
            debug!(
                "{} listener: {peer} does not speak PostgreSQL: closed",
                l.cfg.role
            );
            return;
        }
        Packet::Cancel(_) => {
            l.stats.cancels.fetch_add(1, Relaxed);
            forward_cancel(&first.bytes, l).await;
            return;
        }
        _ => {}
    }
    let started = Instant::now();
    let deadline = started + l.hold_timeout;
    let mut neg = Negotiation {
        pending: Some(first),
        startup: None,
    };
    let mut avoid: Option<Backend> = None;
    let mut held = false;
    let mut routes = l.routes.clone();
    // Why the last try failed (a backend that refused, closed or hung).
    let mut failure: Option<String> = None;
    loop {
        let picked = if failure.is_some() && Instant::now() >= deadline {
            None
        } else {
            pick(l, &mut routes, deadline, avoid.as_ref(), &mut held).await
        };
        let Some(slot) = picked else {
            l.stats.refused_no_backend.fetch_add(1, Relaxed);
            let what = match l.cfg.role {
                Role::Primary => "primary",
                Role::Replicas => "replica",
                Role::ReadOnlyAny => "node",
            };
            let msg = format!("no {what} available for cluster {}, retry", l.scope);
            let reason = failure.unwrap_or_else(|| routes.borrow().reason.clone());
            let hint = format!(
                "the tandem proxy waited {:.1} s: {reason}",
                started.elapsed().as_secs_f64()
            );
            refuse(
                client,
                Some(neg),
                "57P03",
                &msg,
                Some(&hint),
                l.client_timeout,
            )
            .await;
            return;
        };
        if held {
            debug!(
                "{} listener: {peer} waited {:?} for {}",
                l.cfg.role,
                started.elapsed(),
                slot.backend.name
            );
            held = false;
            l.stats.held.fetch_add(1, Relaxed);
            l.stats
                .held_micros
                .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        }
        let mut fence = slot.fence.subscribe();
        if *fence.borrow_and_update() {
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let budget = l.connect_timeout.min(left.max(Duration::from_millis(100)));
        let server = match tokio::time::timeout(budget, connect(&slot.backend.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                slot.stats.failed.fetch_add(1, Relaxed);
                debug!(
                    "{} listener: connect to {} failed: {e}",
                    l.cfg.role, slot.backend.name
                );
                failure = Some(format!(
                    "cannot connect to {} ({}): {e}",
                    slot.backend.name, slot.backend.addr
                ));
                avoid = Some(slot.backend.clone());
                pause(&mut routes, deadline).await;
                continue;
            }
            Err(_) => {
                slot.stats.failed.fetch_add(1, Relaxed);
                debug!(
                    "{} listener: connect to {} timed out",
                    l.cfg.role, slot.backend.name
                );
                failure = Some(format!(
                    "connecting to {} ({}) timed out",
                    slot.backend.name, slot.backend.addr
                ));
                avoid = Some(slot.backend.clone());
                continue;
            }
        };
        let t_setup = Instant::now();
        let setup = negotiate(&mut client, &server, &mut neg, l).await;
        tracing::trace!(
            "{} listener: {peer} set up with {} in {:?}",
            l.cfg.role,
            slot.backend.name,
            t_setup.elapsed()
        );
        match setup {
            Setup::Splice { to_client, quiet } => {
                drop(neg);
                slot.stats.total.fetch_add(1, Relaxed);
                slot.stats.active.fetch_add(1, Relaxed);
                let _guard = ActiveGuard(&slot.stats.active);
                let (client, server) = match (&l.kernel, quiet) {
                    (Some(map), true) if !map.disabled() => {
                        match kernel_splice(map, client, server, &to_client, l, &slot, &mut fence)
                            .await
                        {
                            // Handed back: the sockets could not join the map.
                            Some(pair) => pair,
                            None => return,
                        }
                    }
                    _ => (client, server),
                };
                l.stats.user_spliced.fetch_add(1, Relaxed);
                if write_all(&client, &to_client).await.is_err() {
                    return;
                }
                let fenced = tokio::select! {
                    _ = copy_both(&client, &server, &slot.stats) => false,
                    _ = fence.wait_for(|cut| *cut) => true,
                };
                if fenced {
                    slot.stats.fenced.fetch_add(1, Relaxed);
                    // Reset both ends: the client learns at once, the server ends the session.
                    linger_zero(client.as_raw_fd());
                    linger_zero(server.as_raw_fd());
                }
                return;
            }
            Setup::Retry(why) => {
                slot.stats.failed.fetch_add(1, Relaxed);
                debug!(
                    "{} listener: {} could not take {peer}: {why}; trying again",
                    l.cfg.role, slot.backend.name
                );
                failure = Some(format!(
                    "{} could not take the connection: {why}",
                    slot.backend.name
                ));
                avoid = Some(slot.backend.clone());
                pause(&mut routes, deadline).await;
            }
            Setup::ClientGone => return,
        }
    }
}

/// Most bytes, per direction, that the kernel may hold for a receiver that does not keep up.
/// The kernel puts no limit of its own on this queue: a redirected segment leaves the receiving
/// socket's accounting at once (so its TCP window stays open) and waits, uncharged, in the
/// peer's psock queue until the peer's send buffer takes it (measured on Linux 6.18: 400 MiB
/// queued in 0.7 s for a receiver reading nothing). So the verdict program redirects at most
/// this much beyond what the peer socket has taken; past it, it pauses that direction for good
/// and the router copies it (see `sockmap::verdict_program`): the sender then meets TCP's
/// window, as with the user-space copy.
pub const KERNEL_BUDGET: u64 = 4 << 20;
/// A backstop that should never be reached (the budget above bounds the queue): a direction
/// with more than this queued in the kernel resets the connection.
pub const BACKLOG_LIMIT: u64 = 16 << 20;
/// How often an active kernel-forwarded connection is looked at (byte counters, backlog); an
/// idle one backs off to [`CHECK_MAX`].
const CHECK_MIN: Duration = Duration::from_millis(100);
const CHECK_MAX: Duration = Duration::from_secs(1);
/// While a direction moves more than a quarter of [`KERNEL_BUDGET`] between two checks (a bulk
/// transfer): its limit is raised this often, so a receiver that keeps up is not paused.
const CHECK_FAST: Duration = Duration::from_millis(10);
/// While a side has ended and its last bytes are still queued for the peer.
const CHECK_DRAIN: Duration = Duration::from_millis(2);

/// Why a kernel-forwarded connection ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Both sides sent FIN and everything reached the other side.
    Done,
    /// A reset or another socket error.
    Error,
    Fenced,
    /// A receiver fell more than [`BACKLOG_LIMIT`] behind.
    Overrun,
    /// A socket received more from the kernel than the program redirected into it (bytes sent
    /// twice): the stream is corrupt.
    Duplicated(String),
}

/// A spliced connection whose bytes the kernel moves. Index 0 is the client side, 1 the
/// backend side.
struct KernelPair {
    socks: [std::net::TcpStream; 2],
    /// Each socket's map key (its own 4-tuple; the entry holds the *other* socket).
    keys: [[u8; sockmap::KEY_SIZE]; 2],
    /// `tcpi_bytes_received` when last reported to /metrics.
    reported: [u64; 2],
    /// Bytes written into each socket (acknowledged + in its send queue) before it joined.
    written0: [u64; 2],
    /// Bytes the router itself read from / wrote to each socket after joining.
    user_read: [u64; 2],
    user_written: [u64; 2],
    /// Side `i` has sent FIN (and, for a user-space direction, the router has read up to it).
    eof: [bool; 2],
    /// Bytes arriving on side `i` now move through the router, once the kernel's queue for
    /// that direction is empty (`drained`): the program has stopped redirecting them for good,
    /// because their receiver fell behind (the budget), or at a FIN (the router passes FIN on
    /// after the last byte), or because the other side has ended.
    user_dir: [bool; 2],
    /// The kernel's queue for a `user_dir` direction has been seen empty: the router copies.
    drained: [bool; 2],
    /// Bytes read from side `i` by the router and not yet written to the other side.
    pending: [Vec<u8>; 2],
    /// The budget of socket `i` (bytes the program may redirect from it).
    budgets: [Option<sockmap::Budget>; 2],
    /// `redirected` of each budget at the last check.
    redirected_seen: [u64; 2],
    /// Bytes read from socket `i` before it joined the map (so every byte it receives later is
    /// redirected by the program or read by the router: see `unclaimed`).
    consumed0: [u64; 2],
    /// What happened to this pair, with the byte counters at the time (kept only in tests,
    /// printed with an accounting mismatch).
    trace: Vec<String>,
}

impl KernelPair {
    /// A pair that has just joined the map, with the counters read before it did.
    fn new(
        socks: [std::net::TcpStream; 2],
        keys: [[u8; sockmap::KEY_SIZE]; 2],
        budgets: [Option<sockmap::Budget>; 2],
        received0: [u64; 2],
        written0: [u64; 2],
        consumed0: [u64; 2],
    ) -> KernelPair {
        KernelPair {
            socks,
            keys,
            reported: received0,
            written0,
            user_read: [0; 2],
            user_written: [0; 2],
            eof: [false; 2],
            user_dir: [false; 2],
            drained: [false; 2],
            pending: [Vec::new(), Vec::new()],
            budgets,
            redirected_seen: [0; 2],
            consumed0,
            trace: Vec::new(),
        }
    }
    /// Data bytes received on socket `i`.
    fn received(&self, i: usize) -> u64 {
        received(self.socks[i].as_raw_fd())
    }
    fn written(&self, i: usize) -> u64 {
        written(self.socks[i].as_raw_fd())
    }
    /// Notes an event with side `i`'s counters (tests only).
    fn note(&mut self, map: &SockMap, i: usize, what: &str) {
        if cfg!(test) && self.trace.len() < 400 {
            let redirected = self.budgets[i].as_ref().map_or(0, |b| map.redirected(b));
            // Memory reads only: a system call here takes the socket's lock and changes the
            // timing being investigated.
            let line = format!(
                "{what} side {i}: redirected {redirected} user_read {} user_written other {}",
                self.user_read[i],
                self.user_written[1 - i],
            );
            self.trace.push(line);
        }
    }
    /// Bytes received on socket `i` that neither the program nor the router has taken yet
    /// (exact, from the counters; `inq` may not see them yet).
    fn unclaimed(&self, map: &SockMap, i: usize) -> u64 {
        let redirected = self.budgets[i].as_ref().map_or(0, |b| map.redirected(b));
        self.received(i)
            .saturating_sub(self.consumed0[i] + redirected + self.user_read[i])
    }
    /// Bytes the kernel has put into socket `o` (for the other side's direction).
    fn kernel_written(&self, o: usize) -> u64 {
        self.written(o)
            .saturating_sub(self.written0[o] + self.user_written[o])
    }
    /// Bytes the program redirected from side `i` that are not yet in the other socket (exact:
    /// the program's counter against the other socket's, both counted from before the join).
    fn backlog(&self, map: &SockMap, i: usize) -> u64 {
        let redirected = self.budgets[i].as_ref().map_or(0, |b| map.redirected(b));
        redirected.saturating_sub(self.kernel_written(1 - i))
    }
    /// Signs of bytes moved twice, if any: more bytes taken from a socket (redirected by the
    /// program + read by the router) than it received, or more put into a socket by the kernel
    /// than the program redirected into it. `shut[o]`: the router shut socket `o`'s write
    /// side, whose FIN counts as one byte in what the socket took.
    fn oversent(&self, map: &SockMap, shut: &[bool; 2]) -> Option<String> {
        // Every byte taken from a socket (redirected by the program or read by the router) was
        // received on it first: more taken than received means some were taken twice. The
        // counter is read before what the socket received, so that bytes arriving in between
        // only make the received count larger.
        let overclaimed = (0..2).find_map(|i| {
            let redirected = self.budgets[i].as_ref().map_or(0, |b| map.redirected(b));
            let claimed = self.consumed0[i] + redirected + self.user_read[i];
            let received = self.received(i);
            (claimed > received).then(|| {
                let mut why =
                    format!("{claimed} bytes taken from side {i}, which received {received}");
                if cfg!(test) {
                    why += &format!(
                        " (consumed0 {}, redirected {redirected}, read by the router {}); trace:\n{}",
                        self.consumed0[i],
                        self.user_read[i],
                        self.trace.join("\n")
                    );
                }
                why
            })
        });
        if overclaimed.is_some() {
            return overclaimed;
        }
        (0..2).find_map(|i| {
            let o = 1 - i;
            // In this order: the program counts a segment before the kernel sends it, so a
            // count read after what the socket took covers all of it (read before, segments
            // redirected and sent in between would look like a duplicate).
            let sent = self.kernel_written(o);
            let redirected = self.budgets[i].as_ref().map_or(0, |b| map.redirected(b));
            (sent > redirected + u64::from(shut[o])).then(|| {
                format!(
                    "side {o} took {sent} bytes from the kernel, {redirected} were redirected into it"
                )
            })
        })
    }
    /// After both sides have ended: checks, per direction, that every byte received was
    /// redirected by the program or read by the router, that the receiving side's socket took
    /// exactly the redirected bytes plus those the router wrote, and that the router wrote what
    /// it read. None if all hold, else what did not.
    fn accounting(&self, map: &SockMap, to_client: u64) -> Option<String> {
        let mut bad = Vec::new();
        for i in 0..2 {
            let o = 1 - i;
            let redirected = self.budgets[i].as_ref().map_or(0, |b| map.redirected(b));
            let claimed = self.consumed0[i] + redirected + self.user_read[i];
            let received = self.received(i);
            if claimed != received {
                bad.push(format!(
                    "side {i}: received {received}, redirected + read {claimed}"
                ));
            }
            // Our FIN counts in the peer's acknowledged bytes.
            let took = self.written(o);
            let put = self.written0[o] + self.user_written[o] + redirected;
            if took != put && took != put + 1 {
                bad.push(format!("side {o}: took {took}, given {put}"));
            }
            let extra = if o == 0 { to_client } else { 0 };
            if self.user_written[o] != self.user_read[i] + extra {
                bad.push(format!(
                    "router read {} from side {i}, wrote {} to side {o}",
                    self.user_read[i],
                    self.user_written[o] - extra
                ));
            }
        }
        if !bad.is_empty() && cfg!(test) {
            bad.push(format!("trace:\n{}", self.trace.join("\n")));
        }
        (!bad.is_empty()).then(|| bad.join("; "))
    }
    /// Adds the bytes received since the last report to the backend's counters.
    fn report(&mut self, stats: &BackendStats) {
        for (i, counter) in [&stats.bytes_from_client, &stats.bytes_from_server]
            .into_iter()
            .enumerate()
        {
            let now = self.received(i);
            counter.fetch_add(now.saturating_sub(self.reported[i]), Relaxed);
            self.reported[i] = self.reported[i].max(now);
        }
    }
}

/// Data bytes a socket has received.
fn received(fd: std::os::fd::RawFd) -> u64 {
    sockmap::tcp_bytes(fd).map_or(0, |(r, _)| r)
}

/// Bytes written into a socket (acknowledged by the peer + still in its send queue), from
/// two readings of the acknowledged count that agree (an ACK between the two system calls
/// would otherwise make the sum too small).
fn written(fd: std::os::fd::RawFd) -> u64 {
    let acked = || sockmap::tcp_bytes(fd).map_or(0, |(_, a)| a);
    let mut before = acked();
    for _ in 0..8 {
        let queued = sockmap::unacked(fd).unwrap_or(0);
        let after = acked();
        if after == before {
            return after + queued;
        }
        before = after;
    }
    before + sockmap::unacked(fd).unwrap_or(0)
}

fn fionread(fd: std::os::fd::RawFd) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    n.max(0) as u64
}

/// Data bytes of a socket not (yet) in the map that have been read from it: received minus
/// queued, read until two readings of the counter agree.
fn consumed(fd: std::os::fd::RawFd) -> u64 {
    let mut before = received(fd);
    loop {
        let queued = fionread(fd);
        let after = received(fd);
        if after == before {
            return after.saturating_sub(queued);
        }
        before = after;
    }
}

/// Writes all of `data` to a non-blocking socket (small amounts: a server's first answer).
async fn write_all_std(mut s: &std::net::TcpStream, mut data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.is_empty() {
        match s.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Moves whatever socket `from` holds for the router itself to socket `to`: bytes that were
/// queued before the pair joined the map, or that arrived before the second entry was in.
/// Returns true at EOF.
async fn move_leftovers(
    pair: &mut KernelPair,
    from: usize,
    l: &ListenerShared,
) -> io::Result<bool> {
    use std::io::Read;
    // On the heap, and only for the call: an array held across the `.await` below would sit in
    // every connection task's future for its whole life (16 KiB per idle session).
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match (&pair.socks[from]).read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                pair.user_read[from] += n as u64;
                write_all_std(&pair.socks[1 - from], &buf[..n]).await?;
                pair.user_written[1 - from] += n as u64;
                l.stats.kernel_leftover_bytes.fetch_add(n as u64, Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Copies, without waiting, what socket `from` holds for the router (a direction the kernel no
/// longer moves) to the other socket. What the other cannot take yet stays in
/// `pair.pending[from]` (at most one read) and reading stops until it is written: the sender
/// meets TCP's window, as in the user-space copy loop.
fn pump(pair: &mut KernelPair, from: usize, map: &SockMap) -> io::Result<Pumped> {
    use std::io::{Read, Write};
    let to = 1 - from;
    let mut buf = [0u8; 64 * 1024];
    loop {
        while !pair.pending[from].is_empty() {
            match (&pair.socks[to]).write(&pair.pending[from]) {
                Ok(n) => {
                    pair.pending[from].drain(..n);
                    pair.user_written[to] += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pumped::Waiting),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        pair.pending[from] = Vec::new();
        match (&pair.socks[from]).read(&mut buf) {
            // A socket in the map that has received FIN reads 0 while bytes that stayed on it
            // are still on their way to its queue (in the psock's work queue, behind segments
            // redirected to this socket; FIONREAD does not count them either): seen on Linux
            // 6.18, megabytes lost before this check. EOF only once every byte is claimed.
            Ok(0) if pair.unclaimed(map, from) > 0 => {
                pair.note(map, from, "read 0, retry");
                return Ok(Pumped::Retry);
            }
            Ok(0) => return Ok(Pumped::Eof),
            Ok(n) => {
                pair.user_read[from] += n as u64;
                let mut done = 0;
                while done < n {
                    match (&pair.socks[to]).write(&buf[done..n]) {
                        Ok(w) => done += w,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                pair.user_written[to] += done as u64;
                if done < n {
                    pair.pending[from] = buf[done..n].to_vec();
                    return Ok(Pumped::Waiting);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pumped::Waiting),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What [`pump`] did.
enum Pumped {
    /// The sender's FIN, everything before it written.
    Eof,
    /// For data, or for room in the receiver.
    Waiting,
    /// Bytes are on their way into the socket's queue: look again shortly.
    Retry,
}

/// Hands the direction from socket `i` to the router (at a FIN: the router reads the last
/// bytes and the EOF, and passes the FIN on after them; and at the other side's EOF). The
/// program stops redirecting from `i`.
fn to_router(
    map: &SockMap,
    ep: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    pair: &mut KernelPair,
    i: usize,
) {
    if pair.user_dir[i] {
        return;
    }
    if let Some(b) = &pair.budgets[i] {
        map.force_pause(b);
        // A program run that read `paused` just before the store may still redirect its
        // segment and count it afterwards. Every run holds the socket's lock, and a recv takes
        // it: once this peek returns, such a run has finished and `redirected` is final (the
        // drain check relies on it).
        let mut b = [0u8; 1];
        // SAFETY: recv(2) into a 1-byte buffer we own; MSG_PEEK leaves the data queued.
        unsafe {
            libc::recv(
                pair.socks[i].as_raw_fd(),
                b.as_mut_ptr() as *mut libc::c_void,
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
    }
    pair.user_dir[i] = true;
    pair.note(map, i, "to router");
    watch_data(ep, pair, i);
}

/// Adds "data arrived" to what the pair's epoll instance reports for socket `i`: its direction
/// is now copied by the router.
fn watch_data(ep: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>, pair: &KernelPair, i: usize) {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLOUT | libc::EPOLLET) as u32,
        u64: i as u64,
    };
    // SAFETY: epoll_ctl on descriptors we own.
    unsafe {
        libc::epoll_ctl(
            ep.get_ref().as_raw_fd(),
            libc::EPOLL_CTL_MOD,
            pair.socks[i].as_raw_fd(),
            &mut ev,
        )
    };
}

/// An epoll instance of its own watching both sockets for FIN, errors and send-buffer space
/// only: the sockets' "data arrived" wakeups (which the kernel still raises for every segment
/// it redirects) match no interest here, so they do not wake the router.
fn watch_pair(pair: &KernelPair) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain system calls on descriptors we own; the epoll fd is owned by the OwnedFd.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    let ep = unsafe { std::os::fd::OwnedFd::from_raw_fd(ep) };
    for (i, s) in pair.socks.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLOUT | libc::EPOLLET) as u32,
            u64: i as u64,
        };
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: `ep` is a valid epoll descriptor owned by the AsyncFd until it is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(ep, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Hands a spliced connection to the kernel: both sockets join the sockhash (each under its
/// own 4-tuple, holding the other), `to_client` is written, and from then on the verdict
/// program moves every byte; this task only waits for FIN, errors, the fence, and now and then
/// reads the byte counters (TCP_INFO) for /metrics and the backlog guard.
///
/// Called at a quiet point (both ends wait for the other), so no byte is queued in either
/// socket when it joins; bytes that are (a client that does not wait) are moved by the router
/// itself, once. Half-close is passed on: when one side sends FIN, the router waits until its
/// last bytes are in the other socket, then shuts that socket's write side; the connection
/// ends when both sides have ended. Returns the streams unchanged if they cannot join the map
/// (the caller then copies in user space).
async fn kernel_splice(
    map: &SockMap,
    client: TcpStream,
    server: TcpStream,
    to_client: &[u8],
    l: &ListenerShared,
    slot: &Slot,
    fence: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, TcpStream)> {
    let addrs = (
        client.local_addr(),
        client.peer_addr(),
        server.local_addr(),
        server.peer_addr(),
    );
    let (Ok(cl), Ok(cp), Ok(sl), Ok(sp)) = addrs else {
        return Some((client, server));
    };
    let keys = [sockmap::key(cl, cp), sockmap::key(sl, sp)];
    // Budgets first, so that the program counts every byte it redirects.
    let budgets = match (
        map.take_budget(&keys[0], l.kernel_budget),
        map.take_budget(&keys[1], l.kernel_budget),
    ) {
        (Ok(a), Ok(b)) => [Some(a), Some(b)],
        (a, b) => {
            for r in [a, b] {
                match r {
                    Ok(x) => map.release_budget(x),
                    Err(e) => debug!(
                        "{} listener: kernel forwarding not possible for this connection: {e}",
                        l.cfg.role
                    ),
                }
            }
            return Some((client, server));
        }
    };
    let release = |budgets: [Option<sockmap::Budget>; 2]| {
        for b in budgets.into_iter().flatten() {
            map.release_budget(b);
        }
    };
    // Off tokio's epoll: the data wakeups of sockets in the map must not reach the runtime.
    let (Ok(c), Ok(s)) = (client.into_std(), server.into_std()) else {
        release(budgets);
        return None;
    };
    // A bounded receive buffer (see KERNEL_RCVBUF), before any byte is passed on.
    let rcvbuf = kernel_rcvbuf();
    if rcvbuf > 0 {
        for fd in [c.as_raw_fd(), s.as_raw_fd()] {
            if let Err(e) = set_rcvbuf(fd, rcvbuf) {
                debug!(
                    "{} listener: could not bound a kernel-forwarded socket's receive buffer: {e}",
                    l.cfg.role
                );
            }
        }
    }
    // Counted before the sockets join, when only the router reads and writes them.
    let consumed0 = [consumed(c.as_raw_fd()), consumed(s.as_raw_fd())];
    let written0 = [written(c.as_raw_fd()), written(s.as_raw_fd())];
    let received0 = [received(c.as_raw_fd()), received(s.as_raw_fd())];
    // The entry of the server's key holds the client socket: data from the server goes to the
    // client. Whichever entry is in first, data arriving before the second one stays queued
    // on its own socket (the program never drops) and is moved below.
    if let Err(e) = map.insert(&keys[1], c.as_raw_fd()) {
        debug!(
            "{} listener: kernel forwarding not possible for this connection: {e}",
            l.cfg.role
        );
        release(budgets);
        return Some((TcpStream::from_std(c).ok()?, TcpStream::from_std(s).ok()?));
    }
    if let Err(e) = map.insert(&keys[0], s.as_raw_fd()) {
        debug!(
            "{} listener: kernel forwarding not possible for this connection: {e}",
            l.cfg.role
        );
        let _ = map.remove(&keys[1]);
        release(budgets);
        return Some((TcpStream::from_std(c).ok()?, TcpStream::from_std(s).ok()?));
    }
    l.stats.kernel_spliced.fetch_add(1, Relaxed);
    let mut pair = KernelPair::new([c, s], keys, budgets, received0, written0, consumed0);
    pair.note(map, 0, "joined");
    pair.note(map, 1, "joined");
    let end = kernel_wait(map, &mut pair, to_client, l, &slot.stats, fence).await;
    if end == End::Done {
        if let Some(why) = pair.accounting(map, to_client.len() as u64) {
            l.stats.kernel_mismatches.fetch_add(1, Relaxed);
            warn!(
                "{} listener: kernel-forwarded connection to {} ended with bytes unaccounted for ({why}); please report it, and set proxy.kernel_forwarding: off",
                l.cfg.role, slot.backend.name
            );
        }
    }
    pair.report(&slot.stats);
    for k in &pair.keys {
        let _ = map.remove(k);
    }
    release(std::mem::take(&mut pair.budgets));
    match end {
        End::Fenced => {
            slot.stats.fenced.fetch_add(1, Relaxed);
            linger_zero(pair.socks[0].as_raw_fd());
            linger_zero(pair.socks[1].as_raw_fd());
        }
        End::Overrun => {
            l.stats.backlog_resets.fetch_add(1, Relaxed);
            warn!(
                "{} listener: connection to {} reset: a receiver fell more than {} MiB behind (kernel forwarding keeps at most that much queued per direction)",
                l.cfg.role,
                slot.backend.name,
                BACKLOG_LIMIT >> 20
            );
            linger_zero(pair.socks[0].as_raw_fd());
            linger_zero(pair.socks[1].as_raw_fd());
        }
        End::Duplicated(why) => {
            // Fail closed: this stream is corrupt, and the kernel is not trusted with new ones.
            l.stats.kernel_mismatches.fetch_add(1, Relaxed);
            map.disable();
            tracing::error!(
                "{} listener: connection to {} reset: the kernel delivered bytes twice on its forwarding path ({why}); kernel forwarding is off for new connections until the router restarts. Please report it with the kernel version, and set proxy.kernel_forwarding: off",
                l.cfg.role,
                slot.backend.name
            );
            linger_zero(pair.socks[0].as_raw_fd());
            linger_zero(pair.socks[1].as_raw_fd());
        }
        End::Done | End::Error => {}
    }
    None
}

async fn kernel_wait(
    map: &SockMap,
    pair: &mut KernelPair,
    to_client: &[u8],
    l: &ListenerShared,
    stats: &BackendStats,
    fence: &mut watch::Receiver<bool>,
) -> End {
    pair.user_written[0] += to_client.len() as u64;
    if write_all_std(&pair.socks[0], to_client).await.is_err() {
        return End::Error;
    }
    let Ok(ep) = watch_pair(pair) else {
        return End::Error;
    };
    // shut[i]: the router shut socket i's write side.
    let mut shut = [false; 2];
    for i in 0..2 {
        match move_leftovers(pair, i, l).await {
            // The router reads the rest of that side, and its EOF, itself (see `pump`).
            Ok(true) => to_router(map, &ep, pair, i),
            Ok(false) => {}
            Err(_) => return End::Error,
        }
    }
    let mut interval = CHECK_MIN;
    let mut last_seen = [0u64; 2];
    let mut next = Instant::now();
    loop {
        let mut draining = false;
        // Directions copied by the router (after the other side's FIN, or paused by their
        // budget), once the kernel's queue for them is empty: no redirected byte may follow
        // a byte the router writes.
        for i in 0..2 {
            if pair.user_dir[i] && !pair.eof[i] {
                if !pair.drained[i] && pair.backlog(map, i) == 0 {
                    pair.drained[i] = true;
                    pair.note(map, i, "drained");
                }
                if pair.drained[i] {
                    match pump(pair, i, map) {
                        Ok(Pumped::Eof) => {
                            pair.note(map, i, "eof");
                            // Side i has ended. Older kernels refuse to redirect into a socket
                            // that has received FIN (not ESTABLISHED), which would leave the
                            // other direction's bytes unclaimed: the router copies it too.
                            pair.eof[i] = true;
                            to_router(map, &ep, pair, 1 - i);
                        }
                        Ok(Pumped::Waiting) => {}
                        Ok(Pumped::Retry) => draining = true,
                        Err(_) => return End::Error,
                    }
                } else {
                    draining = true;
                }
            }
        }
        // Pass a FIN on once the bytes before it are in the other socket.
        for i in 0..2 {
            let o = 1 - i;
            if pair.eof[i] && !shut[o] {
                if pair.pending[i].is_empty() && pair.backlog(map, i) == 0 {
                    // SAFETY: shutdown(2) on a descriptor we own.
                    unsafe { libc::shutdown(pair.socks[o].as_raw_fd(), libc::SHUT_WR) };
                    shut[o] = true;
                } else {
                    draining = true;
                }
            }
        }
        if shut[0] && shut[1] {
            return End::Done;
        }
        if draining {
            next = next.min(Instant::now() + CHECK_DRAIN);
        }
        tokio::select! {
            ready = ep.readable() => {
                let Ok(mut guard) = ready else { return End::Error };
                let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
                // SAFETY: epoll_wait writes at most 4 events into the array.
                let n = unsafe {
                    libc::epoll_wait(ep.get_ref().as_raw_fd(), events.as_mut_ptr(), 4, 0)
                };
                if n <= 0 {
                    guard.clear_ready();
                    continue;
                }
                for e in &events[..n as usize] {
                    let (bits, i) = (e.events, e.u64 as usize);
                    if bits & libc::EPOLLERR as u32 != 0 {
                        return End::Error;
                    }
                    if bits & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0 {
                        // FIN from side i: the program stops redirecting its bytes, and the
                        // router reads what is left and the EOF once the kernel's queue is
                        // empty (above), then passes the FIN on after the last byte. (Data
                        // wakeups of router-copied directions just run the loop again.)
                        to_router(map, &ep, pair, i);
                    }
                    if bits & libc::EPOLLOUT as u32 != 0 {
                        // A send buffer that was full has room again: a slow receiver; look now.
                        next = Instant::now();
                    }
                }
            }
            _ = async { let _ = fence.wait_for(|cut| *cut).await; } => return End::Fenced,
            _ = tokio::time::sleep_until(next.into()) => {
                if let Some(why) = pair.oversent(map, &shut) {
                    return End::Duplicated(why);
                }
                let now = [pair.received(0), pair.received(1)];
                let backlog = pair.backlog(map, 0).max(pair.backlog(map, 1));
                if backlog > BACKLOG_LIMIT {
                    return End::Overrun;
                }
                // Budgets: a paused direction goes to the router; the others may redirect up to
                // KERNEL_BUDGET beyond what the receiving side's socket has taken.
                let mut bulk = false;
                for i in 0..2 {
                    let Some(b) = &pair.budgets[i] else { continue };
                    let redirected = map.redirected(b);
                    bulk |= redirected - pair.redirected_seen[i].min(redirected) > l.kernel_budget / 4;
                    pair.redirected_seen[i] = redirected;
                    if pair.user_dir[i] {
                        continue;
                    }
                    if !map.paused(b) {
                        map.set_limit(b, pair.kernel_written(1 - i) + l.kernel_budget);
                        continue;
                    }
                    pair.note(map, i, "paused by budget");
                    // As at a FIN: the lock-taking peek in to_router makes sure no program run
                    // on this socket is still in flight before the drain check.
                    to_router(map, &ep, pair, i);
                    l.stats.kernel_paused.fetch_add(1, Relaxed);
                    debug!(
                        "{} listener: a receiver fell {} KiB behind; the router copies that direction from now on",
                        l.cfg.role,
                        l.kernel_budget >> 10
                    );
                }
                interval = if bulk {
                    CHECK_FAST
                } else if now != last_seen || backlog > 0 {
                    CHECK_MIN
                } else {
                    (interval * 2).min(CHECK_MAX)
                };
                last_seen = now;
                next = Instant::now() + interval;
                pair.report(stats);
            }
        }
    }
}

async fn connect(addr: &str) -> io::Result<TcpStream> {
    let s = match addr.parse::<SocketAddr>() {
        Ok(sa) => TcpStream::connect(sa).await?,
        Err(_) => TcpStream::connect(addr).await?,
    };
    s.set_nodelay(true)?;
    Ok(s)
}

/// Waits for a change of the routes or a short pause, whichever comes first (never past
/// `deadline`).
async fn pause(routes: &mut watch::Receiver<Arc<Routes>>, deadline: Instant) {
    let until = deadline.min(Instant::now() + RETRY_PAUSE);
    let _ = tokio::time::timeout_at(until.into(), routes.changed()).await;
}

/// A backend for a new connection, waiting for one until `deadline`.
async fn pick(
    l: &ListenerShared,
    routes: &mut watch::Receiver<Arc<Routes>>,
    deadline: Instant,
    avoid: Option<&Backend>,
    held: &mut bool,
) -> Option<Arc<Slot>> {
    loop {
        {
            let r = routes.borrow_and_update();
            if let Some(s) = choose(l, &r.slots, avoid) {
                return Some(s);
            }
        }
        *held = true;
        match tokio::time::timeout_at(deadline.into(), routes.changed()).await {
            Ok(Ok(())) => continue,
            _ => return None,
        }
    }
}

fn choose(l: &ListenerShared, slots: &[Arc<Slot>], avoid: Option<&Backend>) -> Option<Arc<Slot>> {
    match slots.len() {
        0 => return None,
        1 => return Some(slots[0].clone()),
        _ => {}
    }
    let usable = |s: &&Arc<Slot>| Some(&s.backend) != avoid;
    let n = slots.iter().filter(usable).count();
    let (n, skip_avoid) = if n == 0 {
        (slots.len(), false)
    } else {
        (n, true)
    };
    let start = l.rr.fetch_add(1, Relaxed);
    let mut candidates = slots.iter().filter(|s| !skip_avoid || usable(s));
    match l.cfg.balance {
        Balance::RoundRobin => candidates.nth(start % n).cloned(),
        Balance::LeastConn => {
            let all: Vec<&Arc<Slot>> = candidates.collect();
            (0..n)
                .map(|i| all[(start + i) % n])
                .min_by_key(|s| s.stats.active.load(Relaxed))
                .cloned()
        }
    }
}

/// The client's packets not yet answered: an encryption request or the startup packet, and the
/// startup packet once seen (replayed to the next backend on a retry).
struct Negotiation {
    pending: Option<ClientPacket>,
    startup: Option<Vec<u8>>,
}

/// Relays the encryption negotiation and the startup packet, then looks at the server's first
/// answer: a server that is shutting down or starting up is dropped and another one tried, the
/// client none the wiser. Once the server agrees to TLS or GSS encryption, or answers the startup
/// with anything else, the connection is spliced.
async fn negotiate(
    client: &mut TcpStream,
    server: &TcpStream,
    neg: &mut Negotiation,
    l: &ListenerShared,
) -> Setup {
    let t = l.connect_timeout;
    loop {
        if let Some(startup) = &neg.startup {
            if write_all(server, startup).await.is_err() {
                return Setup::Retry("the connection closed".into());
            }
            return check_first_answer(client, server, t, l.kernel.is_some()).await;
        }
        let Some(p) = neg.pending.take() else {
            return Setup::ClientGone;
        };
        if let Packet::Startup(_) = p.kind {
            neg.startup = Some(p.bytes);
            continue;
        }
        // SSLRequest or GSSENCRequest: the server decides.
        if write_all(server, &p.bytes).await.is_err() {
            neg.pending = Some(p);
            return Setup::Retry("the connection closed".into());
        }
        let mut b = [0u8; 1];
        let answer = tokio::time::timeout(t, read_some(server, &mut b)).await;
        match answer {
            Ok(Ok(1)) if b[0] == b'S' || b[0] == b'G' => {
                // The server waits for the client's TLS/GSS handshake, the client for this byte.
                return Setup::Splice {
                    to_client: vec![b[0]],
                    quiet: true,
                };
            }
            Ok(Ok(1)) if b[0] == b'N' => {
                if client.write_all(b"N").await.is_err() {
                    return Setup::ClientGone;
                }
                match tokio::time::timeout(l.client_timeout, read_packet(client)).await {
                    Ok(Ok(next))
                        if matches!(next.kind, Packet::Startup(_))
                            || next.kind.is_encryption_request() =>
                    {
                        neg.pending = Some(next);
                    }
                    _ => return Setup::ClientGone,
                }
            }
            _ => {
                neg.pending = Some(p);
                return Setup::Retry("no answer to the encryption request".into());
            }
        }
    }
}

/// Peeks at the server's answer to the startup packet. With kernel forwarding, a good answer is
/// read out (up to the point where the server waits for the client, see [`read_until_quiet`])
/// so that the sockets join the map with empty receive queues.
async fn check_first_answer(
    client: &mut TcpStream,
    server: &TcpStream,
    t: Duration,
    kernel: bool,
) -> Setup {
    let mut head = [0u8; 5];
    let deadline = Instant::now() + t;
    loop {
        let n = match tokio::time::timeout_at(deadline.into(), server.peek(&mut head)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Setup::Retry(format!("{e}")),
            Err(_) => return Setup::Retry(format!("no answer to the startup packet within {t:?}")),
        };
        if n == 0 {
            return Setup::Retry("the server closed the connection".into());
        }
        if head[0] != b'E' {
            if kernel {
                return read_until_quiet(server, deadline).await;
            }
            return Setup::Splice {
                to_client: Vec::new(),
                quiet: false,
            };
        }
        if n >= 5 {
            break;
        }
        // Rare: a partial header. Wait a little for the rest.
        tokio::time::sleep(Duration::from_millis(2)).await;
        if Instant::now() >= deadline {
            return Setup::Retry("incomplete answer".into());
        }
    }
    let Some(len) = pgwire::message_len(&head) else {
        return Setup::Splice {
            to_client: Vec::new(),
            quiet: false,
        };
    };
    let mut msg = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match tokio::time::timeout_at(deadline.into(), read_some(server, &mut msg[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                return Setup::Retry("incomplete error message".into())
            }
            Ok(Ok(n)) => got += n,
        }
    }
    if let Some(code) = pgwire::error_code(&msg) {
        if pgwire::retriable(code) {
            let text = String::from_utf8_lossy(&msg[5..]).replace('\0', " ");
            return Setup::Retry(format!("{code}: {}", text.trim()));
        }
    }
    // Any other error (bad password, too many connections) is the client's to read; the server
    // closes after it, so this short connection stays in user space.
    let _ = client;
    Setup::Splice {
        to_client: msg,
        quiet: false,
    }
}

/// Most bytes of the server's first answers the router reads before giving up on a quiet point.
const QUIET_READ_MAX: usize = 256 * 1024;

/// Reads the server's answer to the startup packet up to a point where the server waits for
/// the client: after an authentication request other than AuthenticationOk and SASLFinal
/// (the server wants the client's password or SASL message), after ReadyForQuery (trust
/// authentication: the server flushes AuthenticationOk, ParameterStatus, BackendKeyData and
/// ReadyForQuery at once), or after an ErrorResponse. Only at such a point can the sockets be
/// handed to the kernel without reordering: data that sits in a socket's receive queue when it
/// joins the map is not seen by the verdict program. If no such point comes before `deadline`
/// (or the answer is not PostgreSQL), what was read goes to the client and the connection is
/// copied in user space.
async fn read_until_quiet(server: &TcpStream, deadline: Instant) -> Setup {
    let mut buf: Vec<u8> = Vec::new();
    // The server's first answer is small (an authentication request: tens of bytes; with trust
    // the whole greeting is a few hundred). A small chunk keeps the heap from fragmenting when
    // many connections set up at once. On the heap: an array would live in every connection
    // task's future for its whole life.
    let mut chunk = vec![0u8; 2048];
    loop {
        // Walk the complete messages read so far.
        let mut at = 0;
        let mut quiet = false;
        while buf.len() >= at + 5 {
            let len = 1 + u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]])
                as usize;
            if !(5..=QUIET_READ_MAX).contains(&len) {
                // Not PostgreSQL messages: give up on a quiet point.
                return Setup::Splice {
                    to_client: buf,
                    quiet: false,
                };
            }
            if buf.len() < at + len {
                break;
            }
            let kind = buf[at];
            quiet = match kind {
                b'Z' | b'E' => true,
                b'R' if len >= 9 => {
                    let code =
                        u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]]);
                    code != 0 && code != 12
                }
                _ => false,
            };
            at += len;
        }
        if quiet && at == buf.len() {
            return Setup::Splice {
                to_client: buf,
                quiet: true,
            };
        }
        if buf.len() >= QUIET_READ_MAX {
            break;
        }
        match tokio::time::timeout_at(deadline.into(), read_some(server, &mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    Setup::Splice {
        to_client: buf,
        quiet: false,
    }
}

async fn read_some(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Answers a client we cannot serve as PostgreSQL would: 'N' to encryption requests, then an
/// ErrorResponse once its startup packet is in, then close. Bounded by `limit`.
async fn refuse(
    mut client: TcpStream,
    neg: Option<Negotiation>,
    sqlstate: &str,
    message: &str,
    hint: Option<&str>,
    limit: Duration,
) {
    let work = async {
        let mut neg = match neg {
            Some(n) => n,
            None => Negotiation {
                pending: Some(read_packet(&mut client).await.ok()?),
                startup: None,
            },
        };
        if neg.startup.is_none() {
            for _ in 0..3 {
                let p = neg.pending.take()?;
                match p.kind {
                    Packet::Startup(_) => {
                        neg.startup = Some(p.bytes);
                        break;
                    }
                    k if k.is_encryption_request() => {
                        client.write_all(b"N").await.ok()?;
                        neg.pending = Some(read_packet(&mut client).await.ok()?);
                    }
                    _ => return None,
                }
            }
            neg.startup.as_ref()?;
        }
        client
            .write_all(&pgwire::error_response(sqlstate, message, hint))
            .await
            .ok()?;
        client.shutdown().await.ok()?;
        // Read what the client still sends until it closes, so that our close does not reset
        // the connection before it has read the error.
        let mut sink = [0u8; 512];
        while client.read(&mut sink).await.ok()? > 0 {}
        Some(())
    };
    let _ = tokio::time::timeout(limit, work).await;
}

/// A CancelRequest goes to every member: keys are random, a server that does not know the key
/// ignores it, and the one running the session may be any of them.
async fn forward_cancel(packet: &[u8], l: &ListenerShared) {
    let addrs = l.all_backends.borrow().clone();
    let t = l.connect_timeout;
    let sends = addrs.iter().map(|a| async move {
        let _ = tokio::time::timeout(t, async {
            let s = connect(a).await?;
            write_all(&s, packet).await?;
            // The server closes the connection once it has read the request.
            let mut b = [0u8; 1];
            let _ = read_some(&s, &mut b).await;
            io::Result::Ok(())
        })
        .await;
    });
    futures_util::future::join_all(sends).await;
}

thread_local! {
    static BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Copies both ways until both sides have closed (half-close passed on) or one fails.
pub async fn copy_both(client: &TcpStream, server: &TcpStream, stats: &BackendStats) {
    let up = copy_one(client, server, &stats.bytes_from_client);
    let down = copy_one(server, client, &stats.bytes_from_server);
    let _ = tokio::try_join!(up, down);
}

async fn copy_one(from: &TcpStream, to: &TcpStream, counter: &AtomicU64) -> io::Result<()> {
    // Bytes read but not yet taken by `to`: empty (and unallocated) unless `to` is slow.
    let mut pending: Vec<u8> = Vec::new();
    let mut rounds = 0u32;
    loop {
        from.readable().await?;
        let got = BUF.with(|b| -> io::Result<Option<usize>> {
            let mut buf = b.borrow_mut();
            let n = match read_drained(from, &mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut off = 0;
            while off < n {
                match to.try_write(&buf[off..n]) {
                    Ok(w) => off += w,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if off < n {
                pending.extend_from_slice(&buf[off..n]);
            }
            Ok(Some(n))
        })?;
        match got {
            None => continue,
            Some(0) => {
                shutdown_write(to);
                return Ok(());
            }
            Some(n) => {
                counter.fetch_add(n as u64, Relaxed);
            }
        }
        if !pending.is_empty() {
            let mut off = 0;
            while off < pending.len() {
                to.writable().await?;
                match to.try_write(&pending[off..]) {
                    Ok(w) => off += w,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            pending = Vec::new();
        }
        rounds += 1;
        if rounds.is_multiple_of(64) {
            // A stream that is always readable must not starve the other connections.
            tokio::task::yield_now().await;
        }
    }
}

/// Reads once. A read that does not fill the buffer has emptied the socket's receive queue, so
/// its readiness is cleared right away (as tokio's own `poll_read` does) instead of finding out
/// with one more `read` that fails with EAGAIN: one system call less per message. Readiness
/// set by data that arrived meanwhile is kept (tokio compares event ticks).
fn read_drained(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let cap = buf.len();
    let mut got = 0;
    let r = from.try_io(tokio::io::Interest::READABLE, || {
        let n = from.try_read(buf)?;
        got = n;
        if n > 0 && n < cap {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

fn shutdown_write(s: &TcpStream) {
    // SAFETY: shutdown(2) on a descriptor we own; errors (already closed) are harmless.
    unsafe {
        libc::shutdown(s.as_raw_fd(), libc::SHUT_WR);
    }
}

/// SO_RCVBUF asked for on both sockets of a kernel-forwarded pair (Linux doubles it: 128 KiB).
/// Only a mitigation, found by measurement, for the kernel-path duplicate described in
/// docs/proxy.md ("Status"): the repeated stretches were always one large receive segment
/// (64-99 KiB, segments that TCP coalesced while the router held the socket), and a receive
/// buffer this size keeps them from growing that large. The cost: receive autotuning is off on
/// these sockets, so one connection moves at most about this much per round trip (≈ 1.3 GB/s
/// at 0.1 ms, 64 MB/s at 2 ms); small PostgreSQL messages do not notice.
pub const KERNEL_RCVBUF: libc::c_int = 64 << 10;

/// [`KERNEL_RCVBUF`]; in tests `TANDEM_TEST_KERNEL_RCVBUF` overrides it (0: the kernel's
/// autotuning), so that the stress test can compare both.
fn kernel_rcvbuf() -> libc::c_int {
    if cfg!(test) {
        if let Some(v) = std::env::var("TANDEM_TEST_KERNEL_RCVBUF")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            return v;
        }
    }
    KERNEL_RCVBUF
}

fn set_rcvbuf(fd: std::os::fd::RawFd, bytes: libc::c_int) -> io::Result<()> {
    tandem_vip::net::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes)
}

/// Makes the next close send a reset instead of a FIN.
fn linger_zero(fd: std::os::fd::RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = tandem_vip::net::setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &l);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::config::ListenerConfig;
    use tokio::net::TcpListener;

    #[derive(Clone)]
    enum Fake {
        /// Answers the startup packet with AuthenticationOk, then echoes.
        Ok,
        /// As `Ok`, but echoes every byte inverted: bytes of the server-to-client direction that
        /// came back to the server would be told apart from the client's own.
        Invert,
        /// AuthenticationOk, then reads nothing until the gate opens; then reads to EOF and
        /// answers with the byte count and an FNV-1a hash of what it read (8 + 8 bytes, BE).
        Sink(watch::Receiver<bool>),
        /// Answers the startup packet with 57P03 "shutting down".
        ShuttingDown,
        /// Accepts and never answers.
        Hang,
    }

    /// A stand-in PostgreSQL server: 'N' to SSLRequest, then behaves as told.
    async fn fake_server(how: Fake) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let how = how.clone();
                tokio::spawn(async move {
                    let mut p = read_packet(&mut s).await.unwrap();
                    if p.kind == Packet::SslRequest {
                        s.write_all(b"N").await.unwrap();
                        p = read_packet(&mut s).await.unwrap();
                    }
                    assert!(matches!(p.kind, Packet::Startup(_)));
                    match how {
                        Fake::Ok | Fake::Invert => {
                            // AuthenticationOk, ReadyForQuery (idle), in one write as PostgreSQL.
                            s.write_all(b"R\0\0\0\x08\0\0\0\0Z\0\0\0\x05I")
                                .await
                                .unwrap();
                            let invert = matches!(how, Fake::Invert);
                            let mut buf = [0u8; 1024];
                            loop {
                                let n = s.read(&mut buf).await.unwrap_or(0);
                                if invert {
                                    buf[..n].iter_mut().for_each(|b| *b = !*b);
                                }
                                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                        Fake::Sink(mut gate) => {
                            s.write_all(b"R\0\0\0\x08\0\0\0\0Z\0\0\0\x05I")
                                .await
                                .unwrap();
                            let _ = gate.wait_for(|open| *open).await;
                            let mut buf = vec![0u8; 64 * 1024];
                            let (mut n, mut h) = (0u64, FNV_START);
                            loop {
                                let r = s.read(&mut buf).await.unwrap_or(0);
                                if r == 0 {
                                    break;
                                }
                                n += r as u64;
                                h = fnv(h, &buf[..r]);
                            }
                            let mut out = n.to_be_bytes().to_vec();
                            out.extend(h.to_be_bytes());
                            let _ = s.write_all(&out).await;
                        }
                        Fake::ShuttingDown => {
                            let e = pgwire::error_response(
                                "57P03",
                                "the database system is shutting down",
                                None,
                            );
                            s.write_all(&e).await.unwrap();
                        }
                        Fake::Hang => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                    }
                });
            }
        });
        addr
    }

    const FNV_START: u64 = 0xcbf29ce484222325;
    fn fnv(mut h: u64, data: &[u8]) -> u64 {
        for b in data {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
        }
        h
    }

    struct Router {
        addr: SocketAddr,
        routes: watch::Sender<Arc<Routes>>,
        shared: Arc<ListenerShared>,
        _all_backends: watch::Sender<Arc<Vec<String>>>,
    }

    async fn router(max_connections: usize, hold: Duration) -> Router {
        router_with(max_connections, hold, None).await
    }

    /// The BPF forwarding program, or None (and a note) where it cannot be loaded (not root).
    fn kernel_map() -> Option<Arc<SockMap>> {
        match SockMap::load(256) {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                eprintln!("kernel forwarding not tested here: {e}");
                None
            }
        }
    }

    async fn router_with(
        max_connections: usize,
        hold: Duration,
        kernel: Option<Arc<SockMap>>,
    ) -> Router {
        router_with_budget(max_connections, hold, kernel, KERNEL_BUDGET).await
    }

    async fn router_with_budget(
        max_connections: usize,
        hold: Duration,
        kernel: Option<Arc<SockMap>>,
        kernel_budget: u64,
    ) -> Router {
        let cfg = ListenerConfig {
            role: Role::Primary,
            listen: "127.0.0.1:0".into(),
            max_connections,
            max_lag: None,
            balance: Balance::RoundRobin,
            fallback_to_primary: false,
        };
        let proxy = crate::proxy::config::RouterConfig::from_yaml_str(
            "scope: t\netcd3: {hosts: 127.0.0.1:1}\nproxy:\n  primary: {listen: 127.0.0.1:0}\n  connect_timeout: 300ms\n  client_timeout: 2s\n",
            "t.yml",
        )
        .unwrap()
        .proxy;
        let proxy = ProxyConfig {
            hold_timeout: hold,
            ..proxy
        };
        let (tx, rx) = watch::channel(Arc::new(Routes {
            slots: vec![],
            reason: "no leader key in etcd".into(),
        }));
        let (all_tx, all_rx) = watch::channel(Arc::new(Vec::new()));
        let shared = Arc::new(
            ListenerShared::new(cfg, "t".into(), &proxy, rx, all_rx, refusal_limit())
                .with_kernel_forwarding(kernel)
                .with_kernel_budget(kernel_budget),
        );
        let l = bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(accept_loop(l, shared.clone()));
        Router {
            addr,
            routes: tx,
            shared,
            _all_backends: all_tx,
        }
    }

    fn route_to(r: &Router, backends: &[(&str, SocketAddr)]) -> Vec<Arc<Slot>> {
        let slots: Vec<Arc<Slot>> = backends
            .iter()
            .map(|(n, a)| {
                Arc::new(Slot::new(
                    Backend {
                        name: n.to_string(),
                        addr: a.to_string(),
                    },
                    Arc::default(),
                ))
            })
            .collect();
        r.routes.send_replace(Arc::new(Routes {
            slots: slots.clone(),
            reason: String::new(),
        }));
        slots
    }

    fn startup() -> Vec<u8> {
        let mut p = vec![0, 0, 0, 0, 0, 3, 0, 0];
        p.extend(b"user\0u\0\0");
        let n = p.len() as u32;
        p[..4].copy_from_slice(&n.to_be_bytes());
        p
    }

    /// Connects with an SSLRequest and a startup packet; returns the stream and everything the
    /// router answered before the first 'R' or 'E' message (inclusive of its type byte).
    async fn client(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"N");
        s.write_all(&startup()).await.unwrap();
        let mut head = [0u8; 5];
        s.read_exact(&mut head).await.unwrap();
        let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; n - 4];
        s.read_exact(&mut body).await.unwrap();
        let mut all = head.to_vec();
        all.extend(body);
        if all[0] == b'R' {
            // The fake server's ReadyForQuery.
            let mut z = [0u8; 6];
            s.read_exact(&mut z).await.unwrap();
            assert_eq!(z[0], b'Z');
        }
        (s, all)
    }

    #[tokio::test]
    async fn holds_until_a_backend_appears() {
        let r = router(10, Duration::from_secs(5)).await;
        let ok = fake_server(Fake::Ok).await;
        let c = tokio::spawn(client(r.addr));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!c.is_finished(), "the client must wait, not be refused");
        route_to(&r, &[("a", ok)]);
        let (_s, first) = c.await.unwrap();
        assert_eq!(first[0], b'R');
        assert_eq!(r.shared.stats.held.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn no_backend_in_time_gives_an_error_response() {
        let r = router(10, Duration::from_millis(200)).await;
        let (_s, first) = client(r.addr).await;
        assert_eq!(first[0], b'E');
        assert_eq!(pgwire::error_code(&first), Some("57P03"));
        let text = String::from_utf8_lossy(&first);
        assert!(
            text.contains("no primary available for cluster t, retry"),
            "{text}"
        );
        assert!(text.contains("no leader key in etcd"), "{text}");
    }

    #[tokio::test]
    async fn a_server_shutting_down_or_hanging_is_skipped_unseen() {
        skipped_unseen(None).await;
    }

    #[tokio::test]
    async fn a_server_shutting_down_or_hanging_is_skipped_unseen_kernel() {
        if let Some(k) = kernel_map() {
            let r = skipped_unseen(Some(k)).await;
            assert_eq!(r.shared.stats.kernel_spliced.load(Relaxed), 3);
            assert_eq!(r.shared.stats.user_spliced.load(Relaxed), 0);
            assert_eq!(r.shared.stats.kernel_leftover_bytes.load(Relaxed), 0);
        }
    }

    async fn skipped_unseen(kernel: Option<Arc<SockMap>>) -> Router {
        let r = router_with(10, Duration::from_secs(5), kernel).await;
        let down = fake_server(Fake::ShuttingDown).await;
        let hang = fake_server(Fake::Hang).await;
        let ok = fake_server(Fake::Ok).await;
        route_to(&r, &[("down", down), ("hang", hang), ("ok", ok)]);
        for _ in 0..3 {
            let (mut s, first) = client(r.addr).await;
            assert_eq!(first[0], b'R', "{:?}", String::from_utf8_lossy(&first));
            s.write_all(b"ping").await.unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"ping");
        }
        r
    }

    #[tokio::test]
    async fn backends_that_keep_failing_are_refused_at_the_deadline() {
        let r = router(10, Duration::from_millis(500)).await;
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        route_to(&r, &[("gone", closed)]);
        let t = Instant::now();
        let (_s, first) = client(r.addr).await;
        assert_eq!(first[0], b'E');
        let text = String::from_utf8_lossy(&first);
        assert!(text.contains("cannot connect to gone"), "{text}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn fencing_cuts_open_connections_at_once() {
        fencing(None).await;
    }

    #[tokio::test]
    async fn fencing_cuts_kernel_forwarded_connections_at_once() {
        if let Some(k) = kernel_map() {
            let r = fencing(Some(k)).await;
            assert_eq!(r.shared.stats.kernel_spliced.load(Relaxed), 1);
        }
    }

    async fn fencing(kernel: Option<Arc<SockMap>>) -> Router {
        let r = router_with(10, Duration::from_secs(5), kernel).await;
        let ok = fake_server(Fake::Ok).await;
        let slots = route_to(&r, &[("a", ok)]);
        let (mut s, first) = client(r.addr).await;
        assert_eq!(first[0], b'R');
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(slots[0].stats.active.load(Relaxed), 1);
        slots[0].fence.send_replace(true);
        let t = Instant::now();
        let mut buf = [0u8; 16];
        let r2 = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        assert!(matches!(r2, Ok(Ok(0)) | Ok(Err(_))), "{r2:?}");
        assert!(t.elapsed() < Duration::from_millis(500));
        assert_eq!(slots[0].stats.fenced.load(Relaxed), 1);
        r
    }

    #[tokio::test]
    async fn beyond_max_connections_clients_get_an_error_response() {
        let r = router(2, Duration::from_secs(5)).await;
        let ok = fake_server(Fake::Ok).await;
        route_to(&r, &[("a", ok)]);
        let (_a, _) = client(r.addr).await;
        let (_b, _) = client(r.addr).await;
        let (_c, first) = client(r.addr).await;
        assert_eq!(pgwire::error_code(&first), Some("53300"));
        let text = String::from_utf8_lossy(&first);
        assert!(text.contains("max_connections 2"), "{text}");
    }

    #[tokio::test]
    async fn half_close_is_passed_on() {
        half_close(None).await;
    }

    #[tokio::test]
    async fn half_close_is_passed_on_by_kernel_forwarding() {
        if let Some(k) = kernel_map() {
            let r = half_close(Some(k)).await;
            assert_eq!(r.shared.stats.kernel_spliced.load(Relaxed), 1);
            assert_eq!(r.shared.stats.kernel_leftover_bytes.load(Relaxed), 0);
        }
    }

    async fn half_close(kernel: Option<Arc<SockMap>>) -> Router {
        let r = router_with(10, Duration::from_secs(5), kernel).await;
        let ok = fake_server(Fake::Ok).await;
        route_to(&r, &[("a", ok)]);
        let (mut s, _) = client(r.addr).await;
        s.write_all(b"last words").await.unwrap();
        s.shutdown().await.unwrap();
        // The echo server sees EOF after the bytes, answers them, then closes.
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"last words");
        r
    }

    /// 20 MB each way through the kernel, byte-exact, with the byte counters read from TCP_INFO.
    #[tokio::test]
    async fn kernel_forwarding_moves_big_transfers_exactly() {
        let Some(k) = kernel_map() else { return };
        let r = router_with(10, Duration::from_secs(5), Some(k)).await;
        let ok = fake_server(Fake::Ok).await;
        let slots = route_to(&r, &[("a", ok)]);
        let (s, _) = client(r.addr).await;
        let data: Vec<u8> = (0..20_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let (mut rd, mut wr) = s.into_split();
        let send = data.clone();
        let writer = tokio::spawn(async move {
            wr.write_all(&send).await.unwrap();
            wr.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        writer.await.unwrap();
        assert!(got == data, "echo differs: {} bytes back", got.len());
        let st = &slots[0].stats;
        let deadline = Instant::now() + Duration::from_secs(5);
        while st.active.load(Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(st.active.load(Relaxed), 0);
        assert_eq!(st.bytes_from_client.load(Relaxed), data.len() as u64);
        assert_eq!(st.bytes_from_server.load(Relaxed), data.len() as u64);
        assert_eq!(r.shared.stats.kernel_spliced.load(Relaxed), 1);
        // The echo's tail, after the client's FIN, went through the router (see `user_dir`).
    }

    /// Both of the router's sockets of a kernel-forwarded pair carry the bounded receive buffer
    /// (the mitigation described at KERNEL_RCVBUF).
    #[tokio::test]
    async fn kernel_forwarded_sockets_have_a_bounded_receive_buffer() {
        let Some(k) = kernel_map() else { return };
        let r = router_with(10, Duration::from_secs(5), Some(k)).await;
        let ok = fake_server(Fake::Ok).await;
        route_to(&r, &[("a", ok)]);
        let (mut s, _) = client(r.addr).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.shared.stats.kernel_spliced.load(Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the pair never joined the map");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Traffic first: a socket left to autotuning starts at the same size (tcp_rmem's
        // default, 128 KiB) and grows with it, a bounded one does not.
        // (In pieces the path's buffers surely hold, so that writing before reading cannot
        // stall.)
        let chunk = vec![7u8; 64 << 10];
        let mut back = vec![0u8; 64 << 10];
        for _ in 0..256 {
            s.write_all(&chunk).await.unwrap();
            s.read_exact(&mut back).await.unwrap();
        }
        // The router's sockets of this pair, found among this process's descriptors: the one
        // whose peer is the client, and the one connected to the server.
        let (me, server) = (s.local_addr().unwrap(), ok);
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let Ok(fd) = e
                .file_name()
                .to_string_lossy()
                .parse::<std::os::fd::RawFd>()
            else {
                continue;
            };
            // SAFETY: borrowed for the calls below only; the descriptor stays open (owned by
            // the router), ManuallyDrop keeps it from being closed here.
            let sock = std::mem::ManuallyDrop::new(unsafe {
                <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
            });
            let Ok(peer) = sock.peer_addr() else { continue };
            if peer == me || (peer == server && sock.local_addr().ok() != Some(me)) {
                // SAFETY: SO_RCVBUF is an int.
                let v: libc::c_int =
                    unsafe { sockmap::get_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF) }.unwrap();
                found.push((peer, v));
            }
        }
        // The fake server's own accepted socket has the router as its peer, not `server`.
        assert_eq!(found.len(), 2, "router sockets of the pair: {found:?}");
        for (peer, v) in found {
            assert_eq!(v, 2 * KERNEL_RCVBUF, "socket to {peer}: SO_RCVBUF {v}");
        }
        drop(s);
    }

    /// A server that stops reading holds the client back (the sender stalls well before all of
    /// its 64 MiB are in), nothing is reset, and when it reads again everything arrives in
    /// order. Through the kernel the program pauses the direction at KERNEL_BUDGET and the
    /// router copies it from then on.
    #[tokio::test]
    async fn a_receiver_that_stops_reading_holds_the_sender_back() {
        backpressure(None).await;
    }

    #[tokio::test]
    async fn a_receiver_that_stops_reading_holds_the_sender_back_kernel() {
        let Some(k) = kernel_map() else { return };
        let r = backpressure(Some(k)).await;
        assert_eq!(r.shared.stats.kernel_spliced.load(Relaxed), 1);
        assert!(r.shared.stats.kernel_paused.load(Relaxed) >= 1);
    }

    async fn backpressure(kernel: Option<Arc<SockMap>>) -> Router {
        let r = router_with(10, Duration::from_secs(5), kernel).await;
        let (gate_tx, gate_rx) = watch::channel(false);
        let sink = fake_server(Fake::Sink(gate_rx)).await;
        route_to(&r, &[("a", sink)]);
        let (s, _) = client(r.addr).await;
        let total: u64 = 64 << 20;
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut expect = FNV_START;
        for _ in 0..total / chunk.len() as u64 {
            expect = fnv(expect, &chunk);
        }
        let (mut rd, mut wr) = s.into_split();
        let progress = Arc::new(AtomicU64::new(0));
        let p = progress.clone();
        let writer = tokio::spawn(async move {
            for _ in 0..total / chunk.len() as u64 {
                wr.write_all(&chunk).await.unwrap();
                p.fetch_add(chunk.len() as u64, Relaxed);
            }
            wr.shutdown().await.unwrap();
        });
        // Wait for the writer to stall: no progress over half a second.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = u64::MAX;
        loop {
            let now = progress.load(Relaxed);
            if now == last {
                break;
            }
            assert!(Instant::now() < deadline, "the writer never stalled");
            assert!(now < total, "all {total} bytes went in without a reader");
            last = now;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("the writer stalled after {} MiB", last >> 20);
        assert!(last < 48 << 20, "the writer got {} MiB in", last >> 20);
        gate_tx.send(true).unwrap();
        let mut answer = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(60), rd.read_exact(&mut answer))
            .await
            .unwrap()
            .unwrap();
        writer.await.unwrap();
        let n = u64::from_be_bytes(answer[..8].try_into().unwrap());
        let h = u64::from_be_bytes(answer[8..].try_into().unwrap());
        assert_eq!(n, total);
        assert_eq!(h, expect, "the bytes arrived changed or out of order");
        assert_eq!(r.shared.stats.backlog_resets.load(Relaxed), 0);
        assert_eq!(r.shared.stats.kernel_mismatches.load(Relaxed), 0);
        r
    }

    /// Eight connections at once through the kernel, each writing 4 MiB in random-sized pieces
    /// while its reader stops now and then (so directions pause into the router's copy loop at
    /// random points, and FIN comes at random points of the echo): every echo is byte-exact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kernel_forwarding_survives_random_stalls() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::WARN)
            .try_init();
        let Some(k) = kernel_map() else { return };
        // A small budget, so that directions pause often.
        let r = router_with_budget(20, Duration::from_secs(5), Some(k), 64 << 10).await;
        // The echo comes back inverted: a byte of the echo that reached the server again
        // would come back to the client as it was sent (see the diagnosis below).
        let ok = fake_server(Fake::Invert).await;
        route_to(&r, &[("a", ok)]);
        let mut tasks = Vec::new();
        for seed in 1..=8u64 {
            let addr = r.addr;
            tasks.push(tokio::spawn(async move {
                let mut rng = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                let total = 4usize << 20;
                let data: Vec<u8> = (0..total).map(|_| next() as u8).collect();
                let cuts: Vec<usize> = (0..64).map(|_| (next() % 200_000) as usize + 1).collect();
                let stalls: Vec<u64> = (0..64).map(|_| next() % 40).collect();
                let (s, _) = client(addr).await;
                let (mut rd, mut wr) = s.into_split();
                let send = data.clone();
                let writer = tokio::spawn(async move {
                    let (mut at, mut i) = (0, 0);
                    while at < send.len() {
                        let n = cuts[i % cuts.len()].min(send.len() - at);
                        wr.write_all(&send[at..at + n]).await.unwrap();
                        at += n;
                        i += 1;
                    }
                    wr.shutdown().await.unwrap();
                });
                let mut got = Vec::with_capacity(total);
                let mut buf = vec![0u8; 256 * 1024];
                let mut i = 0;
                loop {
                    let n = tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf))
                        .await
                        .expect("echo stalled")
                        .unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    i += 1;
                    if i % 16 == 0 {
                        // The reader stops for a while: the echo backs up.
                        tokio::time::sleep(Duration::from_millis(stalls[i / 16 % stalls.len()]))
                            .await;
                    }
                }
                writer.await.unwrap();
                let want: Vec<u8> = data.iter().map(|b| !b).collect();
                let first = got.iter().zip(&want).position(|(a, b)| a != b);
                // Where the bytes after the first difference come from: the client's data
                // inverted (the client-to-server direction duplicated or reordered), or the
                // client's data as sent (server-to-client bytes fed back to the server, which
                // inverted them once more).
                let origin = first.map(|d| {
                    let probe = &got[d..(d + 64).min(got.len())];
                    let find = |hay: &[u8]| hay.windows(probe.len()).position(|w| w == probe);
                    format!(
                        "the 64 bytes there are at {:?} of the expected echo, at {:?} of the raw data",
                        find(&want),
                        find(&data)
                    )
                });
                assert!(
                    got == want,
                    "connection {seed}: {} of {total} bytes back, first difference at {first:?}: {origin:?}",
                    got.len()
                );
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(r.shared.stats.kernel_spliced.load(Relaxed), 8);
        assert_eq!(r.shared.stats.backlog_resets.load(Relaxed), 0);
        assert_eq!(r.shared.stats.kernel_mismatches.load(Relaxed), 0);
        eprintln!(
            "directions paused into the router: {}",
            r.shared.stats.kernel_paused.load(Relaxed)
        );
    }

    /// The in-flight duplicate check: bytes taken from a socket that never received them, and
    /// a socket that took more bytes than the program redirected into it plus what the router
    /// wrote (here the "kernel" bytes are written by the test itself, without redirects, as a
    /// resend would add them), are caught.
    #[test]
    fn bytes_moved_twice_are_caught() {
        use std::io::Write;
        let Some(map) = kernel_map() else { return };
        let connected = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let far = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            (l.accept().unwrap().0, far)
        };
        let ((client_side, _client), (backend_side, _backend)) = (connected(), connected());
        let keys = [&client_side, &backend_side]
            .map(|s| sockmap::key(s.local_addr().unwrap(), s.peer_addr().unwrap()));
        let budgets = keys.map(|k| Some(map.take_budget(&k, 1 << 20).unwrap()));
        let socks = [client_side, backend_side];
        let written0 = [written(socks[0].as_raw_fd()), written(socks[1].as_raw_fd())];
        let mut pair = KernelPair::new(socks, keys, budgets, [0; 2], written0, [0; 2]);
        assert_eq!(pair.oversent(&map, &[false; 2]), None);
        // Bytes taken from a socket that never received them were taken twice.
        pair.user_read[0] = 10;
        let why = pair
            .oversent(&map, &[false; 2])
            .expect("an over-claim is caught");
        assert!(why.contains("10 bytes taken from side 0"), "{why}");
        pair.user_read[0] = 0;
        // What the router writes and counts is not a duplicate.
        (&pair.socks[1]).write_all(&[1; 100]).unwrap();
        pair.user_written[1] += 100;
        assert_eq!(pair.oversent(&map, &[false; 2]), None);
        // 50 bytes that neither the program nor the router put there are.
        (&pair.socks[1]).write_all(&[2; 50]).unwrap();
        let why = pair
            .oversent(&map, &[false; 2])
            .expect("a resend is caught");
        assert!(why.contains("side 1 took 50 bytes"), "{why}");
        for b in std::mem::take(&mut pair.budgets).into_iter().flatten() {
            map.release_budget(b);
        }
    }

    /// A blocking echo server on its own thread, PostgreSQL-shaped enough for the router
    /// (AuthenticationOk + ReadyForQuery to the startup packet, then echo).
    fn blocking_echo_server() -> SocketAddr {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let mut s = s.unwrap();
                std::thread::spawn(move || {
                    s.set_nodelay(true).unwrap();
                    // (A readiness probe connects and closes without a startup packet.)
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut rest = vec![0u8; (u32::from_be_bytes(len) as usize).max(4) - 4];
                    if s.read_exact(&mut rest).is_err()
                        || s.write_all(b"R\0\0\0\x08\0\0\0\0Z\0\0\0\x05I").is_err()
                    {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// Median round trip of `n` 64-byte ping-pongs over a fresh connection to `addr`.
    fn ping_pong(addr: SocketAddr, n: usize) -> Duration {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(&startup()).unwrap();
        let mut hello = [0u8; 15];
        s.read_exact(&mut hello).unwrap();
        let msg = [7u8; 64];
        let mut back = [0u8; 64];
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            s.write_all(&msg).unwrap();
            s.read_exact(&mut back).unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        times[n / 2]
    }

    /// Not a test: the round trip a router adds, without PostgreSQL or pgbench in the way:
    /// a 64-byte ping-pong with an echo server, directly and through the router (user-space
    /// copy, and kernel forwarding when loadable), each router alone on a single-threaded
    /// runtime of its own as `tandem proxy` runs by default; rounds interleaved, and the added
    /// time is the median over rounds of (through the router − direct) in the same round.
    /// `bench/proxy-roundtrip` runs it with HAProxy and two minimal C forwarders alongside
    /// (FORWARDERS="name=cmd {listen} {backend};...": each started with a free port and the
    /// echo server's, stopped by PID at the end).
    #[test]
    #[ignore]
    fn round_trip_experiment() {
        let echo = blocking_echo_server();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("router".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let user = router_with(10, Duration::from_secs(5), None).await;
                    route_to(&user, &[("a", echo)]);
                    let kernel = match kernel_map() {
                        Some(k) => {
                            let r = router_with(10, Duration::from_secs(5), Some(k)).await;
                            route_to(&r, &[("a", echo)]);
                            Some(r)
                        }
                        None => None,
                    };
                    tx.send((user.addr, kernel.as_ref().map(|k| k.addr)))
                        .unwrap();
                    std::future::pending::<()>().await;
                    drop((user, kernel));
                });
            })
            .unwrap();
        let (user, kernel) = rx.recv().unwrap();
        let mut rows: Vec<(String, SocketAddr)> =
            vec![("direct".into(), echo), ("tandem user".into(), user)];
        if let Some(k) = kernel {
            rows.push(("tandem kernel".into(), k));
        }
        let mut children = Vec::new();
        for cmd in std::env::var("FORWARDERS")
            .unwrap_or_default()
            .split(';')
            .filter(|c| !c.trim().is_empty())
        {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let (name, cmd) = cmd.split_once('=').unwrap_or((cmd, cmd));
            let cmd = cmd
                .replace("{listen}", &port.to_string())
                .replace("{backend}", &echo.port().to_string());
            let mut words = cmd.split_whitespace();
            children.push(
                std::process::Command::new(words.next().unwrap())
                    .args(words)
                    .spawn()
                    .unwrap(),
            );
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "{cmd} does not listen");
                std::thread::sleep(Duration::from_millis(10));
            }
            rows.push((name.trim().to_string(), addr));
        }
        let rounds: usize = std::env::var("ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(5);
        let mut times = vec![Vec::new(); rows.len()];
        for _ in 0..rounds {
            for (i, (_, addr)) in rows.iter().enumerate() {
                times[i].push(ping_pong(*addr, 20_000).as_secs_f64() * 1e6);
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        for (i, (name, _)) in rows.iter().enumerate() {
            let added: Vec<f64> = times[i].iter().zip(&times[0]).map(|(t, d)| t - d).collect();
            eprintln!(
                "{name:>24}: round trip median {:>5.1} µs, added {:>5.1} µs (rounds: {:?})",
                median(times[i].clone()),
                median(added),
                times[i]
                    .iter()
                    .map(|t| t.round() as u64)
                    .collect::<Vec<_>>()
            );
        }
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
