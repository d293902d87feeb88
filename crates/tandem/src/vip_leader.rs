//! `tandem vip` in leader mode (vip-manager style), for database hosts without a router tier:
//! the virtual addresses sit on whichever host's member holds the leader key
//! `/<namespace>/<scope>/leader` in etcd.
//!
//! ```yaml
//! # node.yml: the agent's own file (scope, namespace, name, etcd3, ...) plus
//! vip:
//!   mode: leader
//!   interface: eth0
//!   addresses: [192.168.0.210/24]
//!   member: postgresql-01        # optional: defaults to `name`
//! ```
//!
//! Shape: observe (a watch of the cluster's keys for speed, plus a linearizable read every
//! `confirm_interval` for proof of contact) → [`decide`] (pure) → act (netlink add/remove,
//! gratuitous ARP / unsolicited neighbour advertisement, reusing `tandem_vip::net`).
//!
//! **The rule.** Hold the addresses iff the last etcd answer says the leader key names this
//! member *and* that answer is fresher than [`hold_for`] = `ttl − keepalive_interval −
//! demote_margin` (the cluster's own timing, from its `/config` key; tandem's rules in
//! `tandem_core::dynamic::check_timing`), counted from the moment the read was *sent*.
//!
//! Why this cannot leave two holders when the old leader demotes itself before its lease
//! expires: another member's host adds the addresses only after etcd shows that member in the
//! leader key, which happens only after our leader released the key (which we see through the
//! watch and a confirming read, and drop the addresses) or after its lease expired. The leader's
//! agent renews its lease every `keepalive_interval`, so when our last successful read was sent
//! at `t`, the agent's last renewal was no earlier than `t − keepalive_interval` (same host, same
//! etcd), and its lease cannot expire before `t − keepalive_interval + ttl`. We drop the
//! addresses at `t + ttl − keepalive_interval − demote_margin`, that is, no later than the agent
//! demotes PostgreSQL and at least `demote_margin` before anyone else can take the key. A
//! watch event that says "not me" is obeyed at once (dropping is always safe), a read sent
//! before such an event is ignored, and a watch event naming us only triggers a confirming read.
//! Not covered: a double fault, where the leader's agent stopped renewing *and* this host lost
//! etcd (the lease may then expire before our bound, and another host hold the addresses too
//! for less than `hold_for`). docs/vip.md has the full argument.

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tandem_core::cluster::ClusterView;
use tandem_core::dynamic::{DynamicConfig, Timing};
use tandem_vip::config::{parse_addr, Mode, VipAddr};
use tandem_vip::net::{arp, iface, nd, netlink};
use tokio::sync::{mpsc, Notify};
use tracing::{info, warn};

use crate::config::Config;
use crate::dcs::Dcs;

/// The `vip:` section in leader mode.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaderVip {
    pub interface: String,
    pub addresses: Vec<VipAddr>,
    /// The member name the leader key must hold (default: the file's `name`).
    pub member: String,
}

#[derive(Deserialize)]
struct File {
    vip: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeaderVip {
    #[allow(dead_code)]
    mode: String,
    interface: String,
    addresses: Vec<String>,
    member: Option<String>,
}

impl LeaderVip {
    /// The `vip:` section of `text` (a node.yml); `name` is the file's member name.
    pub fn parse(text: &str, name: &str) -> Result<LeaderVip> {
        let f: File = serde_yaml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let v = f
            .vip
            .ok_or_else(|| anyhow!("no `vip:` section: add one (see docs/vip.md)"))?;
        let r: RawLeaderVip = serde_yaml::from_value(v).map_err(|e| {
            anyhow!("vip: {e} (with `mode: leader` the keys are mode, interface, addresses and member; VRRP settings such as virtual_router_id or priority do not apply)")
        })?;
        if r.interface.is_empty() || r.interface.len() >= 16 || r.interface.contains('/') {
            bail!(
                "vip.interface: {:?} is not an interface name (e.g. eth0)",
                r.interface
            );
        }
        if r.addresses.is_empty() {
            bail!("vip.addresses: give at least one virtual address, e.g. [192.168.0.210/24]");
        }
        if r.addresses.len() > 20 {
            bail!("vip.addresses: at most 20 addresses");
        }
        let mut addresses: Vec<VipAddr> = Vec::new();
        for (i, s) in r.addresses.iter().enumerate() {
            let a = parse_addr(&format!("vip.addresses[{i}]"), s)?;
            if addresses.iter().any(|b| b.addr == a.addr) {
                bail!("vip.addresses[{i}]: {} is listed twice", a.addr);
            }
            addresses.push(a);
        }
        let member = match r.member {
            Some(m) if m.trim().is_empty() => {
                bail!("vip.member: empty; remove it to use `name` ({name})")
            }
            Some(m) => m,
            None => name.to_string(),
        };
        Ok(LeaderVip {
            interface: r.interface,
            addresses,
            member,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The decision (pure)

/// What etcd last told us: the leader key's value (None: no key), and when the request that
/// brought it was sent (a watch event: when it arrived).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub leader: Option<String>,
    pub at: Instant,
}

/// The branch [`decide`] took (the log says a decision again only when this changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    NoAnswer,
    NoLeader,
    OtherLeader(String),
    Unconfirmed,
    /// The key named another member a moment ago: give its host time to let go first.
    Handover,
    Leader,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub hold: bool,
    pub why: Why,
    /// One sentence for the log.
    pub reason: String,
    /// While holding: when the hold expires unless etcd confirms it again. While waiting for a
    /// handover: when to decide again.
    pub until: Option<Instant>,
}

/// When the leader key names this member right after naming another one (a watch event both
/// hosts receive at the same moment), the new holder waits this long so that the old holder,
/// which drops the addresses on the same event, is done first. A safety margin for the common
/// case only: the rule that bounds the worst case is [`hold_for`].
pub const HANDOVER_GRACE: Duration = Duration::from_millis(100);

/// How long one confirmation from etcd lets us hold the addresses (see the module comment).
pub fn hold_for(t: &Timing) -> Duration {
    t.ttl
        .saturating_sub(t.keepalive_interval)
        .saturating_sub(t.demote_margin)
        .max(Duration::from_millis(500))
}

/// How often etcd is asked (linearizable read): four times per hold, at most every
/// `keepalive_interval`, at least every 100 ms.
pub fn confirm_interval(t: &Timing) -> Duration {
    (hold_for(t) / 4)
        .min(t.keepalive_interval)
        .max(Duration::from_millis(100))
}

/// Should this host hold the addresses now? `other_seen_at`: when etcd last named another
/// member as the leader.
pub fn decide(
    member: &str,
    seen: Option<&Seen>,
    hold_for: Duration,
    other_seen_at: Option<Instant>,
    now: Instant,
) -> Decision {
    let no = |why: Why, reason: String| Decision {
        hold: false,
        why,
        reason,
        until: None,
    };
    let Some(seen) = seen else {
        return no(Why::NoAnswer, "no answer from etcd yet".into());
    };
    match seen.leader.as_deref() {
        None => return no(Why::NoLeader, "the cluster has no leader key".into()),
        Some(l) if l != member => {
            return no(
                Why::OtherLeader(l.to_string()),
                format!("the leader is {l}, not {member}"),
            )
        }
        Some(_) => {}
    }
    let until = seen.at + hold_for;
    if now >= until {
        return no(Why::Unconfirmed, format!(
            "{member} was the leader, but etcd has not confirmed it for {:.1} s (limit {:.1} s: the leader's lease may expire and another member take over)",
            now.saturating_duration_since(seen.at).as_secs_f64(),
            hold_for.as_secs_f64()
        ));
    }
    if let Some(ready) = other_seen_at
        .map(|t| t + HANDOVER_GRACE)
        .filter(|r| now < *r)
    {
        return Decision {
            hold: false,
            why: Why::Handover,
            reason: format!(
                "{member} holds the leader key; another member held it {} ms ago: giving its host {} ms to let go",
                now.saturating_duration_since(ready - HANDOVER_GRACE).as_millis(),
                HANDOVER_GRACE.as_millis()
            ),
            until: Some(ready),
        };
    }
    Decision {
        hold: true,
        why: Why::Leader,
        reason: format!("{member} holds the leader key"),
        until: Some(until),
    }
}

/// Keep the newer of two observations: one whose request was sent before the current one was
/// made is stale (a read sent before a watch event arrived may describe the state before it).
pub fn newer(current: Option<Seen>, candidate: Seen) -> Option<Seen> {
    match current {
        Some(c) if candidate.at < c.at => Some(c),
        _ => Some(candidate),
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points

/// `tandem vip -c FILE`: VRRP (the `tandem_vip` crate) unless `vip.mode` is `leader`.
pub fn main_entry(path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match tandem_vip::config::mode_of(&text).with_context(|| path.display().to_string())? {
        Mode::Vrrp => tandem_vip::main_entry(path),
        Mode::Leader => {
            let cfg = Config::load_for_ctl(path)?;
            // The other sections are the agent's (`tandem validate` reports on them).
            for w in &cfg.warnings {
                if w.contains("etcd") || w.contains("scope") || w.contains("namespace") {
                    warn!("{}: {w}", path.display());
                }
            }
            let vip =
                LeaderVip::parse(&text, &cfg.name).with_context(|| path.display().to_string())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                // The agent's TLS checks (etcd3 files and etcd's certificate).
                crate::tlscheck::at_startup(&cfg).await?;
                run(cfg, vip).await
            })
        }
    }
}

fn timing_of(view: &ClusterView) -> Timing {
    match &view.config {
        Some(c) => DynamicConfig::from_json(&c.value).0.timing(),
        None => DynamicConfig::default().timing(),
    }
}

/// The interface as it is now, and whether each address is on it.
struct Link {
    name: String,
    addresses: Vec<VipAddr>,
}

impl Link {
    fn present(&self) -> Result<(iface::Interface, Vec<bool>)> {
        let info =
            iface::lookup(&self.name).with_context(|| format!("vip.interface: {}", self.name))?;
        let on = self
            .addresses
            .iter()
            .map(|a| info.addresses.contains(&a.addr))
            .collect();
        Ok((info, on))
    }

    /// Add or remove every address (idempotent); after adding, announce them.
    fn set(&self, hold: bool) {
        let info = match iface::lookup(&self.name) {
            Ok(i) => i,
            Err(e) => {
                warn!("vip.interface {}: {e}", self.name);
                return;
            }
        };
        for a in &self.addresses {
            let r = netlink::change_address(hold, info.index, a);
            match (r, hold) {
                (Ok(()), true) => info!("added {a} to {}", self.name),
                (Ok(()), false) => info!("removed {a} from {}", self.name),
                (Err(e), _) => warn!(
                    "cannot {} {a} on {}: {e} (needs CAP_NET_ADMIN)",
                    if hold { "add" } else { "remove" },
                    self.name
                ),
            }
        }
        if hold {
            self.announce(&info);
        }
    }

    /// Gratuitous ARP for the IPv4 addresses; unsolicited neighbour advertisements (from the
    /// interface's link-local address) for the IPv6 ones.
    fn announce(&self, info: &iface::Interface) {
        let v4: Vec<Ipv4Addr> = self
            .addresses
            .iter()
            .filter_map(|a| match a.addr {
                IpAddr::V4(v) => Some(v),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6: Vec<Ipv6Addr> = self
            .addresses
            .iter()
            .filter_map(|a| match a.addr {
                IpAddr::V6(v) => Some(v),
                IpAddr::V4(_) => None,
            })
            .collect();
        if !v4.is_empty() {
            if let Err(e) = arp::announce(info.index, info.mac, &v4) {
                warn!(
                    "cannot send gratuitous ARP on {}: {e} (needs CAP_NET_RAW)",
                    self.name
                );
            }
        }
        if !v6.is_empty() {
            let ll = info.addresses.iter().find_map(|a| match a {
                IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80 => Some(*v),
                _ => None,
            });
            match ll {
                Some(src) => {
                    if let Err(e) = nd::announce(info.index, src, info.mac, &v6) {
                        warn!("cannot send neighbour advertisements on {}: {e}", self.name);
                    }
                }
                None => warn!(
                    "{} has no IPv6 link-local address: no neighbour advertisement sent",
                    self.name
                ),
            }
        }
    }
}

/// Follow the leader key until SIGTERM/SIGINT; then remove the addresses.
pub async fn run(cfg: Config, vip: LeaderVip) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let link = Link {
        name: vip.interface.clone(),
        addresses: vip.addresses.clone(),
    };
    let (_, on) = link.present()?;
    if on.iter().any(|&b| b) {
        warn!(
            "{} already holds a virtual address (left by a previous run?): removing it until etcd says {} is the leader",
            vip.interface, vip.member
        );
        link.set(false);
    }
    let prefix = cfg.base_path();
    let dcs = Dcs::connect(&cfg.etcd3, &prefix, Duration::from_secs(1)).await?;
    info!(
        "leader mode: {} on {} while {prefix}leader names {} (etcd {})",
        vip.addresses
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        vip.interface,
        vip.member,
        cfg.etcd3.hosts.join(",")
    );
    let mut cache = dcs.spawn_cache();
    let timing = Arc::new(Mutex::new(DynamicConfig::default().timing()));
    let get_timing = |t: &Arc<Mutex<Timing>>| *t.lock().unwrap_or_else(|e| e.into_inner());

    // The confirming reads run in their own task, so a hanging etcd never delays the expiry.
    let (tx, mut reads) = mpsc::channel::<(Instant, Result<ClusterView>)>(4);
    let poke = Arc::new(Notify::new());
    let reader = {
        let (dcs, poke, timing) = (dcs.clone(), poke.clone(), timing.clone());
        tokio::spawn(async move {
            loop {
                let sent = Instant::now();
                let r = dcs.read_cluster().await.map(|(v, _)| v);
                if tx.send((sent, r)).await.is_err() {
                    return;
                }
                let every = confirm_interval(&get_timing(&timing));
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = poke.notified() => {}
                }
            }
        })
    };

    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut seen: Option<Seen> = None;
    let mut other_seen_at: Option<Instant> = None;
    let mut holding: Option<bool> = None;
    let mut last_why = None;
    let mut etcd_error_logged: Option<Instant> = None;
    let mut next_check = Instant::now() + Duration::from_secs(1);
    let mut reannounce: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if let Some(Seen {
            leader: Some(l), ..
        }) = &seen
        {
            if *l != vip.member {
                other_seen_at = Some(now);
            }
        }
        let d = decide(
            &vip.member,
            seen.as_ref(),
            hold_for(&get_timing(&timing)),
            other_seen_at,
            now,
        );
        if holding != Some(d.hold) {
            info!(
                "{}: {}",
                if d.hold {
                    "taking the virtual addresses"
                } else {
                    "not holding the virtual addresses"
                },
                d.reason
            );
            if d.hold || holding.is_some() {
                link.set(d.hold);
            }
            holding = Some(d.hold);
            reannounce = d.hold.then(|| now + Duration::from_secs(1));
        } else if last_why.as_ref() != Some(&d.why) {
            info!(
                "still {}holding the virtual addresses: {}",
                if d.hold { "" } else { "not " },
                d.reason
            );
        }
        last_why = Some(d.why.clone());
        let mut wake = next_check;
        if let Some(u) = d.until {
            wake = wake.min(u);
        }
        if let Some(r) = reannounce {
            wake = wake.min(r);
        }
        tokio::select! {
            Some((sent, r)) = reads.recv() => match r {
                Ok(view) => {
                    *timing.lock().unwrap_or_else(|e| e.into_inner()) = timing_of(&view);
                    let leader = view.leader_name().map(str::to_string);
                    seen = newer(seen.take(), Seen { leader, at: sent });
                    if etcd_error_logged.take().is_some() {
                        info!("etcd answers again");
                    }
                }
                Err(e) => {
                    if etcd_error_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        warn!("cannot read the leader key from etcd: {e:#}");
                        etcd_error_logged = Some(Instant::now());
                    }
                }
            },
            Ok(()) = cache.changed() => {
                let st = cache.borrow_and_update().clone();
                if st.synced {
                    let (view, _) = st.view();
                    let leader = view.leader_name().map(str::to_string);
                    if seen.as_ref().map(|s| &s.leader) != Some(&leader) {
                        if leader.as_deref() == Some(vip.member.as_str()) {
                            // Confirm with a linearizable read before taking the addresses.
                            poke.notify_one();
                        } else {
                            seen = newer(seen.take(), Seen { leader, at: Instant::now() });
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                let now = Instant::now();
                if reannounce.is_some_and(|r| now >= r) {
                    reannounce = None;
                    if holding == Some(true) {
                        if let Ok((info, _)) = link.present() {
                            link.announce(&info);
                        }
                    }
                }
                if now >= next_check {
                    next_check = now + Duration::from_secs(1);
                    // Someone (or something) changed the interface behind our back: put it right.
                    if let (Some(h), Ok((_, on))) = (holding, link.present()) {
                        if on.iter().any(|&b| b != h) {
                            warn!(
                                "the virtual addresses on {} are not as they should be ({}): fixing",
                                vip.interface,
                                if h { "missing" } else { "present while not leader" }
                            );
                            link.set(h);
                        }
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    reader.abort();
    info!("stopping: removing the virtual addresses");
    link.set(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::dynamic::check_timing;

    const NODE: &str = "scope: demo\nname: node1\netcd3: {hosts: 127.0.0.1:2379}\n";

    #[test]
    fn section() {
        let v = LeaderVip::parse(
            &format!("{NODE}vip:\n  mode: leader\n  interface: eth0\n  addresses: [10.0.0.100/24, '2001:db8::100/64']\n"),
            "node1",
        )
        .unwrap();
        assert_eq!(v.member, "node1");
        assert_eq!(v.addresses[0].to_string(), "10.0.0.100/24");
        assert_eq!(v.addresses[1].prefix, 64);
        let v = LeaderVip::parse(
            "vip: {mode: leader, interface: eth0, addresses: [10.0.0.1], member: pg-a}\n",
            "node1",
        )
        .unwrap();
        assert_eq!(v.member, "pg-a");
        let err = |y: &str| format!("{:#}", LeaderVip::parse(y, "node1").unwrap_err());
        let base = "vip: {mode: leader, interface: eth0, addresses: [10.0.0.1]";
        for (y, want) in [
            (format!("{base}, priority: 100}}"), "VRRP settings"),
            (format!("{base}, member: ''}}"), "vip.member"),
            (
                "vip: {mode: leader, interface: eth0, addresses: []}".into(),
                "vip.addresses",
            ),
            (
                "vip: {mode: leader, interface: eth0, addresses: [x]}".into(),
                "vip.addresses[0]",
            ),
            (
                "vip: {mode: leader, interface: '', addresses: [10.0.0.1]}".into(),
                "vip.interface",
            ),
            (
                "vip: {mode: leader, interface: eth0, addresses: [10.0.0.1, 10.0.0.1/24]}".into(),
                "listed twice",
            ),
            (
                "vip: {mode: leader, addresses: [10.0.0.1]}".into(),
                "interface",
            ),
            ("scope: x\n".into(), "no `vip:` section"),
        ] {
            let e = err(&y);
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    #[test]
    fn hold_window_from_the_cluster_timing() {
        // tandem's lab timing (ttl 4): keepalive 1 s, margin 1 s → hold 2 s, confirm every 0.5 s.
        let t = check_timing(4, 1, 2).0;
        assert_eq!(hold_for(&t), Duration::from_secs(2));
        assert_eq!(confirm_interval(&t), Duration::from_millis(500));
        // Patroni's defaults (ttl 30): keepalive 2 s, margin 5 s → hold 23 s, confirm every 2 s.
        let t = check_timing(30, 10, 10).0;
        assert_eq!(hold_for(&t), Duration::from_secs(23));
        assert_eq!(confirm_interval(&t), Duration::from_secs(2));
        // The hold always ends before the leader's agent would demote (it is the same bound, minus
        // the renewal the agent may have made just before our read).
        for ttl in [3, 4, 10, 30, 60] {
            let t = check_timing(ttl, 1, 10).0;
            assert!(
                hold_for(&t) + t.keepalive_interval + t.demote_margin <= t.ttl,
                "ttl {ttl}"
            );
        }
    }

    #[test]
    fn decision_table() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(2);
        let seen = |l: Option<&str>, at: Instant| Seen {
            leader: l.map(String::from),
            at,
        };
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let cases: Vec<(Option<Seen>, Instant, bool, &str)> = vec![
            (None, s(0), false, "no answer from etcd yet"),
            (Some(seen(None, s(0))), s(10), false, "no leader key"),
            (
                Some(seen(Some("node2"), s(0))),
                s(10),
                false,
                "the leader is node2",
            ),
            (
                Some(seen(Some("node1"), s(0))),
                s(10),
                true,
                "holds the leader key",
            ),
            (Some(seen(Some("node1"), s(0))), s(1999), true, "holds"),
            (
                Some(seen(Some("node1"), s(0))),
                s(2000),
                false,
                "has not confirmed it for 2.0 s",
            ),
            (
                Some(seen(Some("node1"), s(0))),
                s(60_000),
                false,
                "limit 2.0 s",
            ),
        ];
        for (seen, now, want, why) in cases {
            let d = decide("node1", seen.as_ref(), hold, None, now);
            assert_eq!(d.hold, want, "{seen:?} at {:?}: {}", now - t0, d.reason);
            assert!(d.reason.contains(why), "{why:?} in {:?}", d.reason);
            assert_eq!(d.until.is_some(), want);
        }
        let d = decide(
            "node1",
            Some(&seen(Some("node1"), s(500))),
            hold,
            None,
            s(600),
        );
        assert_eq!(
            d.until,
            Some(s(2500)),
            "the hold expires at the send time + hold_for"
        );
        // Names are compared exactly.
        assert!(!decide("node1", Some(&seen(Some("node10"), s(0))), hold, None, s(1)).hold);
    }

    #[test]
    fn a_direct_handover_waits_for_the_old_holder() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let me = Seen {
            leader: Some("node1".into()),
            at: at(10),
        };
        let hold = Duration::from_secs(2);
        // node2 was named at t0, node1 at 10 ms: not before t0 + grace.
        let d = decide("node1", Some(&me), hold, Some(t0), at(20));
        assert!(!d.hold && d.why == Why::Handover, "{}", d.reason);
        assert_eq!(d.until, Some(t0 + HANDOVER_GRACE));
        let d = decide("node1", Some(&me), hold, Some(t0), t0 + HANDOVER_GRACE);
        assert!(d.hold, "{}", d.reason);
        // Another member named long ago: no wait.
        assert!(decide("node1", Some(&me), hold, Some(t0), at(500)).hold);
    }

    #[test]
    fn stale_reads_are_ignored() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A watch event at 100 ms says node2 leads; a read sent at 50 ms (answered later) that
        // still says node1 must not bring the addresses back.
        let watch = Seen {
            leader: Some("node2".into()),
            at: at(100),
        };
        let stale = Seen {
            leader: Some("node1".into()),
            at: at(50),
        };
        let s = newer(newer(None, watch.clone()), stale);
        assert_eq!(s, Some(watch.clone()));
        assert!(!decide("node1", s.as_ref(), Duration::from_secs(2), None, at(120)).hold);
        // A read sent after the event is authoritative.
        let fresh = Seen {
            leader: Some("node1".into()),
            at: at(130),
        };
        let s = newer(s, fresh.clone());
        assert_eq!(s, Some(fresh));
        assert!(decide("node1", s.as_ref(), Duration::from_secs(2), None, at(140)).hold);
    }
}
