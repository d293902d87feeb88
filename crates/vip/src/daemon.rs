//! The host loop: it feeds the pure [`Machine`] with packets, timers, tracking results and
//! signals, and carries out the actions it returns (send, add/remove addresses, announce, notify).

use crate::config::{TrackRouter, TrackScript, VipConfig};
use crate::machine::{Action, Event, Machine, Params, State};
use crate::net::{arp, iface, nd, netlink, socket::Datagram, socket::VrrpSocket};
use crate::packet::{self, Advert, Auth, MCAST_V4, MCAST_V6};
use crate::receive::{self, Expect, Reporter, Stats};
use crate::track::{self, Check};
use anyhow::{anyhow, bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// The result of one tracked check: its index in `Host::checks`, and success.
type TrackResult = (usize, bool);

struct Host {
    cfg: VipConfig,
    iface: iface::Interface,
    sock: VrrpSocket,
    primary: IpAddr,
    expect: Expect,
    machine: Machine,
    stats: Stats,
    reporter: Reporter,
    checks: Vec<Check>,
}

fn vips_v4(cfg: &VipConfig) -> Vec<Ipv4Addr> {
    cfg.addresses
        .iter()
        .filter_map(|a| match a.addr {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        })
        .collect()
}

fn vips_v6(cfg: &VipConfig) -> Vec<Ipv6Addr> {
    cfg.addresses
        .iter()
        .filter_map(|a| match a.addr {
            IpAddr::V6(v) => Some(v),
            IpAddr::V4(_) => None,
        })
        .collect()
}

fn is_link_local(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Whether `a` can be used as a source now (not tentative: duplicate address detection is over).
fn usable_v6(a: Ipv6Addr, ifindex: u32) -> bool {
    std::net::UdpSocket::bind(SocketAddrV6::new(a, 0, 0, ifindex)).is_ok()
}

impl Host {
    fn execute(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Transition { from, to, why } => {
                    info!(
                        "{}: {from} -> {to} (priority {}): {why}",
                        self.cfg.name,
                        self.machine.priority()
                    );
                    if to == State::Master {
                        self.stats.became_master += 1;
                    }
                    self.notify(to);
                }
                Action::Send { priority } => self.send(priority),
                Action::AddAddresses => {
                    for a in &self.cfg.addresses {
                        match netlink::change_address(true, self.iface.index, a) {
                            Ok(()) => {
                                info!("{}: added {a} to {}", self.cfg.name, self.cfg.interface)
                            }
                            Err(e) => error!(
                                "{}: cannot add {a} to {}: {e} (needs CAP_NET_ADMIN)",
                                self.cfg.name, self.cfg.interface
                            ),
                        }
                    }
                }
                Action::RemoveAddresses => {
                    for a in &self.cfg.addresses {
                        match netlink::change_address(false, self.iface.index, a) {
                            Ok(()) => {
                                info!("{}: removed {a} from {}", self.cfg.name, self.cfg.interface)
                            }
                            Err(e) => error!(
                                "{}: cannot remove {a} from {}: {e}",
                                self.cfg.name, self.cfg.interface
                            ),
                        }
                    }
                }
                Action::Announce => {
                    let r = match self.primary {
                        IpAddr::V4(_) => {
                            arp::announce(self.iface.index, self.iface.mac, &vips_v4(&self.cfg))
                        }
                        IpAddr::V6(src) => {
                            nd::announce(self.iface.index, src, self.iface.mac, &vips_v6(&self.cfg))
                        }
                    };
                    match r {
                        Ok(()) => debug!("{}: announced the addresses", self.cfg.name),
                        Err(e) => error!(
                            "{}: cannot send gratuitous ARP / neighbour advertisement: {e} (needs CAP_NET_RAW)",
                            self.cfg.name
                        ),
                    }
                }
            }
        }
    }

    fn send(&mut self, priority: u8) {
        let advert = Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: (self.cfg.advert_int.as_millis() / 10) as u16,
            addresses: self.cfg.addresses.iter().map(|a| a.addr).collect(),
            auth: match &self.cfg.auth_pass {
                Some(p) => Auth::simple(p),
                None => Auth::None,
            },
        };
        let dsts: Vec<IpAddr> = if self.cfg.unicast_peers.is_empty() {
            match self.primary {
                IpAddr::V4(_) => vec![IpAddr::V4(MCAST_V4)],
                IpAddr::V6(_) => vec![IpAddr::V6(MCAST_V6)],
            }
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in dsts {
            let r = packet::encode(&advert, self.primary, dst)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
                .and_then(|m| self.sock.send(dst, &m));
            match r {
                Ok(()) => self.stats.sent += 1,
                Err(e) => {
                    self.stats.send_errors += 1;
                    if self
                        .reporter
                        .should_log("send", dst, Instant::now())
                        .is_some()
                    {
                        warn!("{}: cannot send advertisement to {dst}: {e}", self.cfg.name);
                    }
                }
            }
        }
    }

    fn notify(&self, state: State) {
        let n = &self.cfg.notify;
        let specific = match state {
            State::Master => n.master.as_deref(),
            State::Backup => n.backup.as_deref(),
            State::Fault => n.fault.as_deref(),
            State::Initialize => n.stop.as_deref(),
        };
        let state_word = match state {
            State::Initialize => "STOP",
            s => match s {
                State::Master => "MASTER",
                State::Backup => "BACKUP",
                _ => "FAULT",
            },
        };
        let mut cmds: Vec<String> = specific.map(|s| s.to_string()).into_iter().collect();
        if let Some(any) = &n.any {
            // keepalived's `notify`: <script> INSTANCE <name> <state> <priority>
            cmds.push(format!(
                "{any} INSTANCE '{}' {state_word} {}",
                self.cfg.name.replace('\'', ""),
                self.machine.priority()
            ));
        }
        for cmd in cmds {
            let spawned = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&cmd)
                .env("TANDEM_VIP_STATE", state_word)
                .env("TANDEM_VIP_NAME", &self.cfg.name)
                .env("TANDEM_VIP_PRIORITY", self.machine.priority().to_string())
                .stdin(Stdio::null())
                .spawn();
            match spawned {
                Ok(mut child) => {
                    let name = self.cfg.name.clone();
                    tokio::spawn(async move {
                        match child.wait().await {
                            Ok(s) if !s.success() => {
                                warn!("{name}: notify command for {state_word} exited with {s}")
                            }
                            Err(e) => warn!("{name}: notify command: {e}"),
                            _ => {}
                        }
                    });
                }
                Err(e) => warn!("{}: cannot run notify command: {e}", self.cfg.name),
            }
        }
    }

    fn receive_all(&mut self, buf: &mut [u8]) {
        loop {
            let d = match self.sock.try_recv(buf) {
                Ok(Some(d)) => d,
                Ok(None) => return,
                Err(e) => {
                    warn!("{}: receive error: {e}", self.cfg.name);
                    return;
                }
            };
            self.stats.received += 1;
            let now = Instant::now();
            let n = match d {
                Datagram::V4 { len } | Datagram::V6 { len, .. } => len,
            };
            if n > buf.len() {
                let d = receive::Drop::Malformed(packet::DecodeError::Oversized {
                    len: n,
                    expected: buf.len(),
                });
                self.stats.drop(&d);
                continue;
            }
            let (src, dst, ttl, payload) = match d {
                Datagram::V4 { .. } => match packet::parse_ipv4(&buf[..n]) {
                    Ok((h, p)) => (IpAddr::V4(h.src), IpAddr::V4(h.dst), h.ttl, p),
                    Err(e) => {
                        self.stats.drop(&receive::Drop::Malformed(e));
                        continue;
                    }
                },
                Datagram::V6 {
                    src,
                    dst,
                    hop_limit,
                    ..
                } => (
                    IpAddr::V6(src),
                    IpAddr::V6(dst.unwrap_or(MCAST_V6)),
                    hop_limit.unwrap_or(0),
                    &buf[..n],
                ),
            };
            match receive::check(src, dst, ttl, payload, &self.expect) {
                Ok(acc) => {
                    self.stats.accepted += 1;
                    if acc.address_mismatch {
                        self.stats.address_mismatch += 1;
                        if self.reporter.should_log("addresses", src, now).is_some() {
                            warn!(
                                "{}: {src} advertises addresses {:?}, ours are {:?}: check vip.addresses on both routers",
                                self.cfg.name, acc.advert.addresses, self.expect.addresses
                            );
                        }
                    }
                    let ev = Event::Advert {
                        from: src,
                        priority: acc.advert.priority,
                        interval: Duration::from_millis(u64::from(acc.advert.interval_cs) * 10),
                    };
                    let acts = self.machine.step(now, ev);
                    self.execute(acts);
                }
                Err(d) => {
                    self.stats.drop(&d);
                    if d == receive::Drop::Own {
                        continue;
                    }
                    if let Some(skipped) = self.reporter.should_log(d.kind(), src, now) {
                        let more = if skipped > 0 {
                            format!(" ({skipped} more like it since the last report)")
                        } else {
                            String::new()
                        };
                        warn!(
                            "{}: dropped VRRP packet from {src}: {d}{more}",
                            self.cfg.name
                        );
                    }
                }
            }
        }
    }

    fn track_result(&mut self, (i, ok): TrackResult) {
        let Some(c) = self.checks.get_mut(i) else {
            return;
        };
        if !c.record(ok) {
            return;
        }
        let up = c.is_up();
        info!(
            "{}: {} is now {} (weight {})",
            self.cfg.name,
            c.name,
            if up { "up" } else { "down" },
            c.weight
        );
        let (priority, fault) = track::health(self.cfg.priority, &self.checks);
        let acts = self
            .machine
            .step(Instant::now(), Event::Health { priority, fault });
        self.execute(acts);
    }
}

async fn run_script(i: usize, s: TrackScript, tx: mpsc::Sender<TrackResult>) {
    let mut next = tokio::time::Instant::now();
    loop {
        let child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&s.script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        let ok = matches!(
            tokio::time::timeout(s.timeout, child).await,
            Ok(Ok(st)) if st.success()
        );
        if tx.send((i, ok)).await.is_err() {
            return;
        }
        next += s.interval;
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
        tokio::time::sleep_until(next).await;
    }
}

/// Probe the router's readiness endpoint every `interval`; log each change of the raw outcome
/// (with the reason the endpoint gave), so the log says why the router left Master.
async fn run_router_check(
    i: usize,
    t: TrackRouter,
    vip_name: String,
    tx: mpsc::Sender<TrackResult>,
) {
    let mut next = tokio::time::Instant::now();
    let mut last: Option<bool> = None;
    loop {
        let r = crate::ready::probe(&t.host, t.port, &t.path, t.timeout).await;
        let ok = r.is_ok();
        if last != Some(ok) {
            match &r {
                Ok(()) => info!("{vip_name}: router readiness {}: ready", t.url),
                Err(why) => warn!("{vip_name}: router readiness {}: not ready: {why}", t.url),
            }
            last = Some(ok);
        }
        if tx.send((i, ok)).await.is_err() {
            return;
        }
        next += t.interval;
        let now = tokio::time::Instant::now();
        if next < now {
            next = now;
        }
        tokio::time::sleep_until(next).await;
    }
}

async fn watch_interface(i: usize, name: String, tx: mpsc::Sender<TrackResult>) {
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let up = iface::is_running(&name);
        if last != Some(up) {
            last = Some(up);
            if tx.send((i, up)).await.is_err() {
                return;
            }
        }
    }
}

/// Run one virtual router until SIGTERM or SIGINT; then give the addresses up (priority 0).
pub async fn run(cfg: VipConfig) -> Result<()> {
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let info = iface::lookup(&cfg.interface)
        .with_context(|| format!("vip.interface: {}", cfg.interface))?;
    let vips: Vec<IpAddr> = cfg.addresses.iter().map(|a| a.addr).collect();
    let v6 = cfg.addresses[0].addr.is_ipv6();
    let primary: IpAddr = if v6 {
        // RFC 5798 §5.1.2.1: IPv6 adverts come from the interface's link-local address, usable
        // only once duplicate address detection is over.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut said = false;
        loop {
            let now_info = iface::lookup(&cfg.interface)?;
            let ll = now_info.addresses.iter().find_map(|a| match a {
                IpAddr::V6(v) if is_link_local(v) => Some(*v),
                _ => None,
            });
            match ll {
                Some(ll) if usable_v6(ll, info.index) => break IpAddr::V6(ll),
                _ if Instant::now() > deadline => bail!(
                    "vip.interface: {} has no usable IPv6 link-local address to send VRRPv3 advertisements from",
                    cfg.interface
                ),
                _ => {
                    if !said {
                        info!("{}: waiting for the link-local address of {} (duplicate address detection)", cfg.name, cfg.interface);
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    } else {
        info.addresses
            .iter()
            .find_map(|a| match a {
                IpAddr::V4(v) if !vips.contains(a) && !v.is_loopback() => Some(IpAddr::V4(*v)),
                _ => None,
            })
            .ok_or_else(|| {
                anyhow!(
                    "vip.interface: {} has no IPv4 address of its own (besides the virtual ones) to send advertisements from",
                    cfg.interface
                )
            })?
    };
    // Addresses left over from a crashed run: a Backup must not hold them.
    for a in &cfg.addresses {
        if info.addresses.contains(&a.addr) {
            warn!(
                "{}: {} is already on {} (left by a previous run?): removing it until this router is Master",
                cfg.name, a.addr, cfg.interface
            );
            netlink::change_address(false, info.index, a)
                .with_context(|| format!("cannot remove {a} from {}", cfg.interface))?;
        }
    }
    let sock = VrrpSocket::open(
        &cfg.interface,
        info.index,
        primary,
        cfg.unicast_peers.is_empty(),
    )
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            anyhow!("cannot open a raw VRRP socket on {}: {e}: run as root or grant CAP_NET_RAW and CAP_NET_ADMIN", cfg.interface)
        } else {
            anyhow!("cannot open a raw VRRP socket on {}: {e}", cfg.interface)
        }
    })?;
    let params = Params {
        version: cfg.version,
        priority: cfg.priority,
        advert_int: cfg.advert_int,
        preempt: cfg.preempt || cfg.priority == 255,
        preempt_delay: cfg.preempt_delay,
        primary,
        fast: cfg.fast_takeover,
        reannounce_after: Some(Duration::from_secs(1)),
    };
    let expect = Expect {
        version: cfg.version,
        vrid: cfg.vrid,
        auth: match &cfg.auth_pass {
            Some(p) => Auth::simple(p),
            None => Auth::None,
        },
        interval_cs: (cfg.advert_int.as_millis() / 10) as u16,
        addresses: vips.clone(),
        own: info
            .addresses
            .iter()
            .filter(|a| !vips.contains(a))
            .copied()
            .collect(),
        peers: cfg.unicast_peers.clone(),
    };
    let mut checks = vec![Check::new(format!("interface {}", cfg.interface), 1, 1, 0)];
    for t in &cfg.track_interfaces {
        checks.push(Check::new(format!("interface {}", t.name), 1, 1, t.weight));
    }
    for s in &cfg.track_scripts {
        checks.push(Check::new(
            format!("track script {:?}", s.name),
            s.fall,
            s.rise,
            s.weight,
        ));
    }
    if let Some(t) = &cfg.track_router {
        checks.push(Check::new(
            format!("router readiness {}", t.url),
            t.fall,
            t.rise,
            t.weight,
        ));
    }
    let machine = Machine::new(params);
    info!(
        "{}: {} VRID {} on {} (address {primary}), priority {}, advert_int {:.2} s, preempt {}{}, addresses {}, {}",
        cfg.name,
        cfg.version,
        cfg.vrid,
        cfg.interface,
        cfg.priority,
        cfg.advert_int.as_secs_f64(),
        cfg.preempt,
        if cfg.preempt_delay.is_zero() { String::new() } else { format!(" (delay {:?})", cfg.preempt_delay) },
        cfg.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
        if cfg.unicast_peers.is_empty() { format!("multicast {}", if v6 { IpAddr::V6(MCAST_V6) } else { IpAddr::V4(MCAST_V4) }) } else { format!("unicast to {:?}", cfg.unicast_peers) },
    );
    let mut host = Host {
        iface: info,
        sock,
        primary,
        expect,
        machine,
        stats: Stats::default(),
        reporter: Reporter::new(Duration::from_secs(60)),
        checks,
        cfg,
    };

    let (tx, mut track_rx) = mpsc::channel::<TrackResult>(64);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(watch_interface(
        0,
        host.cfg.interface.clone(),
        tx.clone(),
    )));
    for (k, t) in host.cfg.track_interfaces.iter().enumerate() {
        tasks.push(tokio::spawn(watch_interface(
            1 + k,
            t.name.clone(),
            tx.clone(),
        )));
    }
    let base = 1 + host.cfg.track_interfaces.len();
    for (k, s) in host.cfg.track_scripts.iter().enumerate() {
        tasks.push(tokio::spawn(run_script(base + k, s.clone(), tx.clone())));
    }
    if let Some(t) = &host.cfg.track_router {
        let i = base + host.cfg.track_scripts.len();
        tasks.push(tokio::spawn(run_router_check(
            i,
            t.clone(),
            host.cfg.name.clone(),
            tx.clone(),
        )));
    }
    drop(tx);

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;

    let acts = host.machine.step(Instant::now(), Event::Startup);
    host.execute(acts);

    let mut buf = vec![0u8; 4096];
    let stats_every = host.cfg.stats_interval;
    let mut next_stats = tokio::time::Instant::now() + stats_every;
    let mut last_stats_line = String::new();
    loop {
        let deadline = host
            .machine
            .next_deadline()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))
            .min(next_stats);
        tokio::select! {
            r = host.sock.readable() => {
                if let Err(e) = r {
                    bail!("VRRP socket failed: {e}");
                }
                host.receive_all(&mut buf);
            }
            _ = tokio::time::sleep_until(deadline) => {
                let acts = host.machine.step(Instant::now(), Event::Tick);
                host.execute(acts);
                if tokio::time::Instant::now() >= next_stats {
                    next_stats += stats_every;
                    let line = host.stats.to_string();
                    if line != last_stats_line {
                        info!("{}: stats: {line}", host.cfg.name);
                        last_stats_line = line;
                    }
                }
            }
            Some(r) = track_rx.recv() => host.track_result(r),
            _ = usr1.recv() => {
                info!("{}: stats: {} (state {})", host.cfg.name, host.stats, host.machine.state());
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("{}: stopping", host.cfg.name);
    for t in tasks {
        t.abort();
    }
    let acts = host.machine.step(Instant::now(), Event::Shutdown);
    host.execute(acts);
    info!("{}: stats: {}", host.cfg.name, host.stats);
    Ok(())
}
