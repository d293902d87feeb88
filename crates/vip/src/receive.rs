//! The receiver's checks (RFC 5798 §7.1, RFC 3768 §7.1), the drop counters, and a rate limit for
//! the log lines that report bad packets. Pure.

use crate::packet::{self, Advert, Auth, DecodeError, Version};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What this router expects of the adverts of its group.
#[derive(Clone, Debug)]
pub struct Expect {
    pub version: Version,
    pub vrid: u8,
    /// v2 only.
    pub auth: Auth,
    /// Our interval in centiseconds (v2 requires the same, RFC 3768 §7.1).
    pub interval_cs: u16,
    pub addresses: Vec<IpAddr>,
    /// Our own addresses: our own packets looped back are dropped silently.
    pub own: Vec<IpAddr>,
    /// With unicast peers configured, adverts from anyone else are dropped.
    pub peers: Vec<IpAddr>,
}

/// Why a packet was dropped. [`Drop::kind`] is the counter's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drop {
    Malformed(DecodeError),
    Ttl(u8),
    Version { got: Version, want: Version },
    Vrid(u8),
    AuthType { got: u8, want: u8 },
    AuthPass,
    Interval { got_cs: u16, want_cs: u16 },
    Own,
    NotPeer,
}

impl Drop {
    pub fn kind(&self) -> &'static str {
        match self {
            Drop::Malformed(DecodeError::Truncated { .. }) => "truncated",
            Drop::Malformed(DecodeError::Oversized { .. }) => "oversized",
            Drop::Malformed(DecodeError::BadChecksum { .. }) => "bad_checksum",
            Drop::Malformed(DecodeError::BadVersion(_)) => "bad_version",
            Drop::Malformed(_) => "malformed",
            Drop::Ttl(_) => "bad_ttl",
            Drop::Version { .. } => "version_mismatch",
            Drop::Vrid(_) => "vrid_mismatch",
            Drop::AuthType { .. } => "auth_type_mismatch",
            Drop::AuthPass => "auth_pass_mismatch",
            Drop::Interval { .. } => "interval_mismatch",
            Drop::Own => "own",
            Drop::NotPeer => "not_a_peer",
        }
    }
}

impl fmt::Display for Drop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drop::Malformed(e) => write!(f, "malformed packet: {e}"),
            Drop::Ttl(t) => write!(f, "TTL {t}, not 255 (sent from off-link, or spoofed)"),
            Drop::Version { got, want } => write!(
                f,
                "{got} advert, but we speak {want}: set vip.version to match the group"
            ),
            Drop::Vrid(v) => write!(
                f,
                "advert for virtual_router_id {v}, not ours: another group on this link, or a misconfigured virtual_router_id"
            ),
            Drop::AuthType { got, want } => write!(
                f,
                "authentication type {got}, we expect {want}: check vip.auth_pass against the peer's authentication block"
            ),
            Drop::AuthPass => f.write_str(
                "wrong auth_pass: check vip.auth_pass against the peer's auth_pass (keepalived uses only its first 8 characters)",
            ),
            Drop::Interval { got_cs, want_cs } => write!(
                f,
                "advert_int {} s, ours is {} s: VRRPv2 needs the same advert_int on every router",
                f64::from(*got_cs) / 100.0,
                f64::from(*want_cs) / 100.0
            ),
            Drop::Own => f.write_str("our own advert"),
            Drop::NotPeer => f.write_str("sender is not in vip.unicast_peers"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub advert: Advert,
    pub from: IpAddr,
    /// The advert lists other virtual addresses than ours (RFC 5798 §7.1: log, then go on).
    pub address_mismatch: bool,
}

/// Check one VRRP message that arrived from `src` to `dst` with `ttl`.
pub fn check(src: IpAddr, dst: IpAddr, ttl: u8, msg: &[u8], e: &Expect) -> Result<Accepted, Drop> {
    if e.own.contains(&src) {
        return Err(Drop::Own);
    }
    if !e.peers.is_empty() && !e.peers.contains(&src) {
        return Err(Drop::NotPeer);
    }
    if ttl != packet::TTL {
        return Err(Drop::Ttl(ttl));
    }
    let advert = packet::decode(msg, src, dst).map_err(Drop::Malformed)?;
    if advert.version != e.version {
        return Err(Drop::Version {
            got: advert.version,
            want: e.version,
        });
    }
    if advert.vrid != e.vrid {
        return Err(Drop::Vrid(advert.vrid));
    }
    if advert.version == Version::V2 {
        if advert.auth.kind() != e.auth.kind() {
            return Err(Drop::AuthType {
                got: advert.auth.kind(),
                want: e.auth.kind(),
            });
        }
        if let (Auth::Simple(got), Auth::Simple(want)) = (advert.auth, e.auth) {
            if got != want {
                return Err(Drop::AuthPass);
            }
        }
        if advert.interval_cs != e.interval_cs {
            return Err(Drop::Interval {
                got_cs: advert.interval_cs,
                want_cs: e.interval_cs,
            });
        }
    }
    let mut theirs = advert.addresses.clone();
    let mut ours = e.addresses.clone();
    theirs.sort();
    ours.sort();
    let address_mismatch = advert.priority != 255 && theirs != ours;
    Ok(Accepted {
        advert,
        from: src,
        address_mismatch,
    })
}

/// Counters, printed periodically and on SIGUSR1.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub received: u64,
    pub accepted: u64,
    pub sent: u64,
    pub send_errors: u64,
    pub became_master: u64,
    pub dropped: BTreeMap<&'static str, u64>,
    pub address_mismatch: u64,
}

impl Stats {
    pub fn drop(&mut self, d: &Drop) {
        *self.dropped.entry(d.kind()).or_default() += 1;
    }
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {} accepted {} sent {} send_errors {} became_master {} address_mismatch {} dropped {}",
            self.received,
            self.accepted,
            self.sent,
            self.send_errors,
            self.became_master,
            self.address_mismatch,
            self.dropped_total()
        )?;
        if !self.dropped.is_empty() {
            let parts: Vec<String> = self
                .dropped
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, " ({})", parts.join(" "))?;
        }
        Ok(())
    }
}

/// Says whether to log a report now: the first time for each (kind, source), then at most once
/// per `every`, with the count of those not logged in between.
#[derive(Debug)]
pub struct Reporter {
    every: Duration,
    last: BTreeMap<(String, IpAddr), (Instant, u64)>,
}

impl Reporter {
    pub fn new(every: Duration) -> Reporter {
        Reporter {
            every,
            last: BTreeMap::new(),
        }
    }
    /// `Some(suppressed)` when the caller should log now.
    pub fn should_log(&mut self, kind: &str, src: IpAddr, now: Instant) -> Option<u64> {
        let key = (kind.to_string(), src);
        match self.last.get_mut(&key) {
            None => {
                if self.last.len() > 1024 {
                    self.last.clear(); // bound the memory a flood of sources can take
                }
                self.last.insert(key, (now, 0));
                Some(0)
            }
            Some((at, skipped)) => {
                if now.saturating_duration_since(*at) >= self.every {
                    let n = *skipped;
                    *at = now;
                    *skipped = 0;
                    Some(n)
                } else {
                    *skipped += 1;
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{encode, MCAST_V4};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn expect() -> Expect {
        Expect {
            version: Version::V2,
            vrid: 51,
            auth: Auth::simple("fzsecret"),
            interval_cs: 100,
            addresses: vec![ip("10.99.0.100")],
            own: vec![ip("10.99.0.12")],
            peers: vec![],
        }
    }

    fn advert() -> Advert {
        Advert {
            version: Version::V2,
            vrid: 51,
            priority: 100,
            interval_cs: 100,
            addresses: vec![ip("10.99.0.100")],
            auth: Auth::simple("fzsecret"),
        }
    }

    fn run(a: &Advert, src: &str, ttl: u8, e: &Expect) -> Result<Accepted, Drop> {
        let m = encode(a, ip(src), IpAddr::V4(MCAST_V4)).unwrap();
        check(ip(src), IpAddr::V4(MCAST_V4), ttl, &m, e)
    }

    #[test]
    fn table_of_receive_checks() {
        let e = expect();
        let good = advert();
        assert!(run(&good, "10.99.0.11", 255, &e).is_ok());
        let mut wrong_pass = good.clone();
        wrong_pass.auth = Auth::simple("other");
        let mut no_auth = good.clone();
        no_auth.auth = Auth::None;
        let mut vrid = good.clone();
        vrid.vrid = 52;
        let mut v3 = good.clone();
        v3.version = Version::V3;
        v3.auth = Auth::None;
        let mut interval = good.clone();
        interval.interval_cs = 200;
        let mut other_vip = good.clone();
        other_vip.addresses = vec![ip("10.99.0.101")];
        let mut peers = e.clone();
        peers.peers = vec![ip("10.99.0.13")];
        let cases: Vec<(&str, Result<Accepted, Drop>, &str)> = vec![
            ("ttl 64", run(&good, "10.99.0.11", 64, &e), "bad_ttl"),
            ("own", run(&good, "10.99.0.12", 255, &e), "own"),
            (
                "wrong pass",
                run(&wrong_pass, "10.99.0.11", 255, &e),
                "auth_pass_mismatch",
            ),
            (
                "no auth",
                run(&no_auth, "10.99.0.11", 255, &e),
                "auth_type_mismatch",
            ),
            ("vrid", run(&vrid, "10.99.0.11", 255, &e), "vrid_mismatch"),
            (
                "v3 to v2",
                run(&v3, "10.99.0.11", 255, &e),
                "version_mismatch",
            ),
            (
                "interval",
                run(&interval, "10.99.0.11", 255, &e),
                "interval_mismatch",
            ),
            (
                "not a peer",
                run(&good, "10.99.0.11", 255, &peers),
                "not_a_peer",
            ),
        ];
        for (name, got, kind) in cases {
            assert_eq!(got.expect_err(name).kind(), kind, "{name}");
        }
        let acc = run(&other_vip, "10.99.0.11", 255, &e).unwrap();
        assert!(acc.address_mismatch);
        let m = encode(&good, ip("10.99.0.11"), IpAddr::V4(MCAST_V4)).unwrap();
        let d = check(ip("10.99.0.11"), IpAddr::V4(MCAST_V4), 255, &m[..10], &e).unwrap_err();
        assert_eq!(d.kind(), "truncated");
    }

    #[test]
    fn drop_messages_tell_what_to_do() {
        assert!(Drop::AuthPass.to_string().contains("vip.auth_pass"));
        assert!(Drop::Vrid(52).to_string().contains("virtual_router_id 52"));
        let s = Drop::Version {
            got: Version::V3,
            want: Version::V2,
        }
        .to_string();
        assert!(s.contains("vip.version"), "{s}");
    }

    #[test]
    fn reporter_rate_limits_per_source_and_kind() {
        let t0 = Instant::now();
        let mut r = Reporter::new(Duration::from_secs(10));
        let a = ip("10.0.0.1");
        assert_eq!(r.should_log("auth", a, t0), Some(0));
        assert_eq!(r.should_log("auth", a, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            r.should_log("vrid", a, t0 + Duration::from_secs(1)),
            Some(0)
        );
        assert_eq!(r.should_log("auth", a, t0 + Duration::from_secs(2)), None);
        assert_eq!(
            r.should_log("auth", a, t0 + Duration::from_secs(11)),
            Some(2)
        );
    }

    #[test]
    fn stats_line() {
        let mut s = Stats::default();
        s.drop(&Drop::Ttl(1));
        s.drop(&Drop::Ttl(2));
        s.drop(&Drop::AuthPass);
        let line = s.to_string();
        assert!(
            line.contains("dropped 3 (auth_pass_mismatch=1 bad_ttl=2)"),
            "{line}"
        );
    }
}
