//! The `vip:` section of `router.yml`. Errors name the key path (`vip.priority: …`).
//!
//! ```yaml
//! vip:
//!   interface: eth0
//!   virtual_router_id: 51
//!   priority: 100
//!   advert_int: 1            # seconds; VRRPv3 allows hundredths (0.01 .. 40.95)
//!   version: 2               # 2 (RFC 3768) or 3 (RFC 5798)
//!   auth_pass: secret        # v2 only; keepalived uses only the first 8 characters
//!   preempt: true
//!   preempt_delay: 0         # seconds
//!   addresses: [192.168.0.210/24]
//!   unicast_peers: []        # empty: multicast to 224.0.0.18
//!   track_script:            # one mapping or a list
//!     - script: "pidof haproxy"
//!       interval: 2
//!       fall: 3
//!       rise: 2
//!       weight: 0            # 0: FAULT while failing; <0 subtract while failing; >0 add while ok
//!   track_interface: [eth1]  # names, or {name: eth1, weight: -20}
//!   track_router:            # the router's readiness (`tandem proxy`'s GET /ready)
//!     url: http://127.0.0.1:8008/ready
//!     interval: 1            # seconds between probes (also the timeout unless `timeout:`)
//!     fall: 2
//!     rise: 2
//!     weight: 0              # 0: FAULT while not ready; <0 subtract while not ready
//!   notify:
//!     master: "/usr/local/bin/on-master"
//!     backup: "..."
//!     fault: "..."
//!     stop: "..."
//!     any: "/usr/local/bin/notify"   # called as keepalived's notify: INSTANCE <name> <STATE> <priority>
//! ```

use anyhow::{anyhow, bail, Context, Result};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::packet::Version;

/// keepalived's `auth_pass` limit: it silently uses only the first 8 characters.
pub const AUTH_PASS_MAX: usize = 8;

#[derive(Clone, Debug, PartialEq)]
pub struct VipConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub advert_int: Duration,
    pub version: Version,
    /// v2 simple password, already cut to 8 bytes; None: auth type 0.
    pub auth_pass: Option<String>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub addresses: Vec<VipAddr>,
    pub unicast_peers: Vec<IpAddr>,
    pub track_scripts: Vec<TrackScript>,
    pub track_interfaces: Vec<TrackInterface>,
    pub track_router: Option<TrackRouter>,
    pub notify: Notify,
    pub fast_takeover: bool,
    pub stats_interval: Duration,
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipAddr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for VipAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrackScript {
    pub name: String,
    pub script: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub weight: i32,
}

/// `vip.track_router`: an HTTP readiness endpoint (the router's `GET /ready`) polled like a
/// track script: 2xx is success; any other status, a refused connection or a timeout is failure.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackRouter {
    /// As written, for logs.
    pub url: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    pub weight: i32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrackInterface {
    pub name: String,
    pub weight: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub master: Option<String>,
    pub backup: Option<String>,
    pub fault: Option<String>,
    pub stop: Option<String>,
    pub any: Option<String>,
}

#[derive(Deserialize)]
struct RouterFile {
    vip: Option<RawVip>,
}

/// How the virtual addresses are placed (`vip.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// VRRP v2/v3 among routers (the default; this crate).
    Vrrp,
    /// On whichever database host holds the leader key in etcd (vip-manager style; run by the
    /// `tandem` binary, which has the etcd client).
    Leader,
}

#[derive(Deserialize)]
struct ModeFile {
    vip: Option<ModeOnly>,
}

#[derive(Deserialize)]
struct ModeOnly {
    #[serde(default)]
    mode: Option<String>,
}

/// The `vip.mode` of a configuration file's text: `vrrp` (also when absent) or `leader`.
pub fn mode_of(text: &str) -> Result<Mode> {
    let f: ModeFile = serde_yaml::from_str(text).map_err(|e| anyhow!("{e}"))?;
    match f.vip.and_then(|v| v.mode).as_deref() {
        None | Some("vrrp") => Ok(Mode::Vrrp),
        Some("leader") => Ok(Mode::Leader),
        Some(other) => bail!(
            "vip.mode: {other:?} is not a mode: `vrrp` (VRRP among routers, the default) or `leader` (the VIP follows the leader key in etcd)"
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    #[serde(default)]
    mode: Option<String>,
    name: Option<String>,
    interface: String,
    virtual_router_id: u8,
    priority: u8,
    #[serde(default)]
    advert_int: Option<f64>,
    #[serde(default)]
    version: Option<u8>,
    auth_pass: Option<String>,
    #[serde(default)]
    preempt: Option<bool>,
    #[serde(default)]
    preempt_delay: Option<f64>,
    addresses: Vec<String>,
    #[serde(default)]
    unicast_peers: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    track_script: Vec<RawScript>,
    #[serde(default)]
    track_interface: Vec<RawInterface>,
    #[serde(default)]
    track_router: Option<RawRouter>,
    #[serde(default)]
    notify: Notify,
    #[serde(default)]
    fast_takeover: Option<bool>,
    #[serde(default)]
    stats_interval: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScript {
    name: Option<String>,
    script: String,
    interval: Option<f64>,
    timeout: Option<f64>,
    fall: Option<u32>,
    rise: Option<u32>,
    weight: Option<i32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    url: String,
    interval: Option<f64>,
    timeout: Option<f64>,
    fall: Option<u32>,
    rise: Option<u32>,
    weight: Option<i32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawInterface {
    Name(String),
    Full { name: String, weight: Option<i32> },
}

/// A mapping or a list of them.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping or a list of mappings")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Vec<T>, A::Error> {
            Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<T>, A::Error> {
            let one: T = Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
            Ok(vec![one])
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V(PhantomData))
}

fn secs(key: &str, v: f64, min: f64, max: f64) -> Result<Duration> {
    if !v.is_finite() || v < min || v > max {
        bail!("{key}: {v} is out of range ({min} to {max} seconds)");
    }
    Ok(Duration::from_secs_f64(v))
}

/// `192.168.0.210/24`, `192.168.0.210` (= /32) or `2001:db8::100/64`; errors name `key`.
pub fn parse_addr(key: &str, s: &str) -> Result<VipAddr> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a.trim().parse().map_err(|_| {
        anyhow!("{key}: {s:?} is not an IP address (write 192.168.0.210/24 or 192.168.0.210)")
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| anyhow!("{key}: prefix length {p:?} must be 0 to {max}"))?,
    };
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        bail!("{key}: {addr} cannot be a virtual address");
    }
    Ok(VipAddr { addr, prefix })
}

/// `http://host[:port][/path]` → (host, port, path). Only plain HTTP: the router's status
/// listener does not speak TLS.
pub fn parse_http_url(key: &str, url: &str) -> Result<(String, u16, String)> {
    let example = "write e.g. http://127.0.0.1:8008/ready";
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        bail!("{key}: {url:?}: https is not supported (the router's status listener speaks plain HTTP; point it at a loopback address): {example}");
    } else {
        bail!("{key}: {url:?} is not an http:// URL: {example}");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        bail!("{key}: {url:?}: credentials in the URL are not supported: {example}");
    }
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or_else(|| anyhow!("{key}: {url:?}: unclosed '[' in the host: {example}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => bail!("{key}: {url:?}: unexpected {after:?} after the host: {example}"),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || path.contains(char::is_whitespace) {
        bail!("{key}: {url:?} is not a valid URL: {example}");
    }
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| anyhow!("{key}: {url:?}: port {p:?} must be 1 to 65535"))?,
    };
    Ok((host, port, path))
}

impl VipConfig {
    /// Load the `vip:` section of a router configuration file.
    pub fn load(path: &Path) -> Result<VipConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        VipConfig::parse(&text).with_context(|| format!("{}", path.display()))
    }

    pub fn parse(text: &str) -> Result<VipConfig> {
        if mode_of(text)? == Mode::Leader {
            bail!("vip.mode: leader needs etcd: run it with `tandem vip -c node.yml` (the stand-alone tandem-vip speaks VRRP only)");
        }
        let file: RouterFile = serde_yaml::from_str(text).map_err(|e| anyhow!("{e}"))?;
        let raw = file
            .vip
            .ok_or_else(|| anyhow!("no `vip:` section: add one (see docs/vip.md)"))?;
        Self::validate(raw)
    }

    fn validate(r: RawVip) -> Result<VipConfig> {
        let mut warnings = Vec::new();
        match r.mode.as_deref() {
            None | Some("vrrp") => {}
            Some("leader") => bail!("vip.mode: leader needs etcd: run it with `tandem vip -c node.yml` (the stand-alone tandem-vip speaks VRRP only)"),
            Some(m) => bail!("vip.mode: {m:?} is not a mode: `vrrp` (the default) or `leader`"),
        }
        if r.interface.is_empty() || r.interface.len() >= 16 || r.interface.contains('/') {
            bail!("vip.interface: {:?} is not an interface name", r.interface);
        }
        if r.virtual_router_id == 0 {
            bail!("vip.virtual_router_id: must be 1 to 255");
        }
        if r.priority == 0 {
            bail!("vip.priority: must be 1 to 255 (0 is reserved for a Master that stops; 255 for the address owner)");
        }
        let version = match r.version.unwrap_or(2) {
            2 => Version::V2,
            3 => Version::V3,
            v => bail!("vip.version: {v} is not a VRRP version tandem speaks (2 or 3)"),
        };
        let ai = r.advert_int.unwrap_or(1.0);
        let advert_int = match version {
            Version::V2 => {
                if ai.fract() != 0.0 || !(1.0..=255.0).contains(&ai) {
                    bail!("vip.advert_int: VRRPv2 carries whole seconds, 1 to 255 (got {ai}); use version 3 for shorter intervals");
                }
                Duration::from_secs(ai as u64)
            }
            Version::V3 => {
                let cs = (ai * 100.0).round();
                if !(1.0..=4095.0).contains(&cs) || ((ai * 100.0) - cs).abs() > 1e-6 {
                    bail!("vip.advert_int: VRRPv3 carries hundredths of a second, 0.01 to 40.95 (got {ai})");
                }
                Duration::from_millis(cs as u64 * 10)
            }
        };
        let auth_pass = match (&r.auth_pass, version) {
            (Some(_), Version::V3) => bail!(
                "vip.auth_pass: VRRPv3 has no authentication (RFC 5798 §9); remove auth_pass or set vip.version: 2"
            ),
            (Some(p), Version::V2) => {
                if p.is_empty() {
                    bail!("vip.auth_pass: empty; remove it for no authentication");
                }
                if p.len() > AUTH_PASS_MAX {
                    warnings.push(format!(
                        "vip.auth_pass is {} characters long; VRRP simple authentication carries only 8 and keepalived silently uses only the first 8, so tandem sends and checks the first 8 too: shorten it to remove this warning",
                        p.len()
                    ));
                }
                let mut cut = p.clone();
                while cut.len() > AUTH_PASS_MAX {
                    cut.pop();
                }
                Some(cut)
            }
            (None, _) => None,
        };
        if r.addresses.is_empty() {
            bail!("vip.addresses: give at least one virtual address");
        }
        if r.addresses.len() > 20 {
            bail!("vip.addresses: at most 20 addresses per virtual router");
        }
        let mut addresses = Vec::new();
        for (i, s) in r.addresses.iter().enumerate() {
            let a = parse_addr(&format!("vip.addresses[{i}]"), s)?;
            if a.addr.is_ipv6() && version == Version::V2 {
                bail!(
                    "vip.addresses[{i}]: {} is IPv6; VRRPv2 is IPv4 only: set vip.version: 3",
                    a.addr
                );
            }
            if let Some(first) = addresses.first() {
                let first: &VipAddr = first;
                if first.addr.is_ipv6() != a.addr.is_ipv6() {
                    bail!("vip.addresses[{i}]: {} mixes IPv4 and IPv6 in one virtual router; a VRRP virtual router has one address family (RFC 5798 §5.2.9): run one instance per family", a.addr);
                }
            }
            if addresses.iter().any(|b: &VipAddr| b.addr == a.addr) {
                bail!("vip.addresses[{i}]: {} is listed twice", a.addr);
            }
            addresses.push(a);
        }
        let mut unicast_peers = Vec::new();
        for (i, s) in r.unicast_peers.iter().enumerate() {
            let a: IpAddr = s
                .trim()
                .parse()
                .map_err(|_| anyhow!("vip.unicast_peers[{i}]: {s:?} is not an IP address"))?;
            if a.is_ipv6() != addresses[0].addr.is_ipv6() || a.is_multicast() {
                bail!("vip.unicast_peers[{i}]: {a} must be a unicast address of the same family as vip.addresses");
            }
            unicast_peers.push(a);
        }
        let preempt_delay = secs(
            "vip.preempt_delay",
            r.preempt_delay.unwrap_or(0.0),
            0.0,
            1000.0,
        )?;
        let mut track_scripts = Vec::new();
        for (i, s) in r.track_script.into_iter().enumerate() {
            let key = format!("vip.track_script[{i}]");
            if s.script.trim().is_empty() {
                bail!("{key}.script: empty");
            }
            let interval = secs(
                &format!("{key}.interval"),
                s.interval.unwrap_or(1.0),
                0.01,
                3600.0,
            )?;
            let timeout = match s.timeout {
                Some(t) => secs(&format!("{key}.timeout"), t, 0.01, 3600.0)?,
                None => interval,
            };
            let fall = s.fall.unwrap_or(1);
            let rise = s.rise.unwrap_or(1);
            if fall == 0 || rise == 0 {
                bail!("{key}: fall and rise must be at least 1");
            }
            let weight = s.weight.unwrap_or(0);
            if !(-253..=253).contains(&weight) {
                bail!("{key}.weight: {weight} must be -253 to 253");
            }
            track_scripts.push(TrackScript {
                name: s.name.unwrap_or_else(|| format!("script {i}")),
                script: s.script,
                interval,
                timeout,
                fall,
                rise,
                weight,
            });
        }
        let mut track_interfaces = Vec::new();
        for (i, t) in r.track_interface.into_iter().enumerate() {
            let (name, weight) = match t {
                RawInterface::Name(n) => (n, 0),
                RawInterface::Full { name, weight } => (name, weight.unwrap_or(0)),
            };
            if name.is_empty() || name.len() >= 16 {
                bail!("vip.track_interface[{i}]: {name:?} is not an interface name");
            }
            if !(-253..=253).contains(&weight) {
                bail!("vip.track_interface[{i}].weight: {weight} must be -253 to 253");
            }
            track_interfaces.push(TrackInterface { name, weight });
        }
        let track_router = match r.track_router {
            None => None,
            Some(t) => {
                let key = "vip.track_router";
                let (host, port, path) = parse_http_url(&format!("{key}.url"), t.url.trim())?;
                let interval = secs(
                    &format!("{key}.interval"),
                    t.interval.unwrap_or(1.0),
                    0.05,
                    3600.0,
                )?;
                let timeout = match t.timeout {
                    Some(v) => secs(&format!("{key}.timeout"), v, 0.01, 3600.0)?,
                    None => interval,
                };
                let fall = t.fall.unwrap_or(2);
                let rise = t.rise.unwrap_or(2);
                if fall == 0 || rise == 0 {
                    bail!("{key}: fall and rise must be at least 1 (consecutive probes)");
                }
                let weight = t.weight.unwrap_or(0);
                if !(-253..=253).contains(&weight) {
                    bail!("{key}.weight: {weight} must be -253 to 253: 0 = FAULT (leave Master) while the router is not ready, negative = lower the priority by that much while not ready");
                }
                Some(TrackRouter {
                    url: t.url.trim().to_string(),
                    host,
                    port,
                    path,
                    interval,
                    timeout,
                    fall,
                    rise,
                    weight,
                })
            }
        };
        if r.priority == 255 && !r.preempt.unwrap_or(true) {
            warnings.push("vip.preempt: false has no effect with priority 255 (the address owner always preempts)".into());
        }
        let stats_interval = secs(
            "vip.stats_interval",
            r.stats_interval.unwrap_or(300.0),
            1.0,
            86400.0,
        )?;
        Ok(VipConfig {
            name: r
                .name
                .unwrap_or_else(|| format!("VI_{}", r.virtual_router_id)),
            interface: r.interface,
            vrid: r.virtual_router_id,
            priority: r.priority,
            advert_int,
            version,
            auth_pass,
            preempt: r.preempt.unwrap_or(true),
            preempt_delay,
            addresses,
            unicast_peers,
            track_scripts,
            track_interfaces,
            track_router,
            notify: r.notify,
            fast_takeover: r.fast_takeover.unwrap_or(true),
            stats_interval,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
proxy: {listen: 5432}
vip:
  interface: eth0
  virtual_router_id: 51
  priority: 100
  advert_int: 1
  auth_pass: fzsecret
  addresses: [192.168.0.210/24]
  track_script:
    script: "pidof haproxy"
    interval: 2
    fall: 3
    rise: 2
"#;

    #[test]
    fn seed_settings() {
        let c = VipConfig::parse(SEED).unwrap();
        assert_eq!(c.vrid, 51);
        assert_eq!(c.version, Version::V2);
        assert_eq!(c.advert_int, Duration::from_secs(1));
        assert_eq!(c.auth_pass.as_deref(), Some("fzsecret"));
        assert_eq!(c.addresses[0].to_string(), "192.168.0.210/24");
        assert_eq!(c.track_scripts.len(), 1);
        assert_eq!(c.track_scripts[0].fall, 3);
        assert_eq!(c.track_scripts[0].interval, Duration::from_secs(2));
        assert!(c.preempt);
        assert!(c.warnings.is_empty());
        assert_eq!(c.name, "VI_51");
    }

    fn err(yaml: &str) -> String {
        format!("{:#}", VipConfig::parse(yaml).unwrap_err())
    }

    #[test]
    fn errors_name_the_key() {
        let base = "vip:\n  interface: eth0\n  virtual_router_id: 51\n  priority: 100\n  addresses: [10.0.0.1]\n";
        let cases = [
            (
                base.replace("priority: 100", "priority: 300"),
                "vip.priority",
            ),
            (base.replace("priority: 100", "priority: 0"), "vip.priority"),
            (format!("{base}  advert_int: 1.5\n"), "vip.advert_int"),
            (
                format!("{base}  version: 3\n  advert_int: 0.001\n"),
                "vip.advert_int",
            ),
            (format!("{base}  version: 4\n"), "vip.version"),
            (
                format!("{base}  version: 3\n  auth_pass: x\n"),
                "vip.auth_pass",
            ),
            (
                base.replace("[10.0.0.1]", "[10.0.0.1/40]"),
                "vip.addresses[0]",
            ),
            (base.replace("[10.0.0.1]", "[nope]"), "vip.addresses[0]"),
            (base.replace("[10.0.0.1]", "[]"), "vip.addresses"),
            (
                base.replace("[10.0.0.1]", "['fe80::1']"),
                "vip.addresses[0]",
            ),
            (
                format!("{base}  unicast_peers: [x]\n"),
                "vip.unicast_peers[0]",
            ),
            (
                format!("{base}  track_script: [{{script: ''}}]\n"),
                "vip.track_script[0].script",
            ),
            (
                format!("{base}  track_script: {{script: x, weight: 999}}\n"),
                "vip.track_script[0].weight",
            ),
            (
                format!("{base}  track_script: {{script: x, fall: 0}}\n"),
                "vip.track_script[0]",
            ),
            (format!("{base}  prority: 3\n"), "unknown field `prority`"),
            (
                format!("{base}  track_script: {{script: x, intervall: 2}}\n"),
                "unknown field `intervall`",
            ),
            (
                format!("{base}  notify: {{mater: x}}\n"),
                "unknown field `mater`",
            ),
            (
                base.replace("priority: 100", "priority: high"),
                "vip.priority",
            ),
            ("other: 1\n".to_string(), "no `vip:` section"),
            (
                format!("{base}  track_router: {{url: 'https://127.0.0.1:8008/ready'}}\n"),
                "vip.track_router.url",
            ),
            (
                format!("{base}  track_router: {{url: '127.0.0.1:8008'}}\n"),
                "vip.track_router.url",
            ),
            (
                format!("{base}  track_router: {{url: 'http://127.0.0.1:99999/ready'}}\n"),
                "vip.track_router.url",
            ),
            (
                format!("{base}  track_router: {{url: 'http://h/ready', weight: -300}}\n"),
                "vip.track_router.weight",
            ),
            (
                format!("{base}  track_router: {{url: 'http://h/ready', rise: 0}}\n"),
                "vip.track_router",
            ),
            (
                format!("{base}  track_router: {{url: 'http://h/ready', interval: 0}}\n"),
                "vip.track_router.interval",
            ),
            (
                format!("{base}  track_router: {{url: 'http://h/ready', fal: 2}}\n"),
                "unknown field `fal`",
            ),
            (format!("{base}  mode: leader\n"), "vip.mode"),
            (format!("{base}  mode: floating\n"), "vip.mode"),
        ];
        for (yaml, want) in cases {
            let e = err(&yaml);
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    #[test]
    fn track_router_and_mode() {
        let y = "vip:\n  interface: eth0\n  virtual_router_id: 51\n  priority: 100\n  addresses: [10.0.0.1]\n  track_router: {url: 'http://127.0.0.1:8008/ready', interval: 0.5, weight: -50}\n";
        let c = VipConfig::parse(y).unwrap();
        let t = c.track_router.unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8008, "/ready")
        );
        assert_eq!(t.interval, Duration::from_millis(500));
        assert_eq!(t.timeout, t.interval);
        assert_eq!((t.fall, t.rise, t.weight), (2, 2, -50));
        assert_eq!(
            parse_http_url("k", "http://[::1]:8008/ready?x=1").unwrap(),
            ("::1".to_string(), 8008, "/ready?x=1".to_string())
        );
        assert_eq!(
            parse_http_url("k", "http://router").unwrap(),
            ("router".to_string(), 80, "/".to_string())
        );
        assert_eq!(mode_of(y).unwrap(), Mode::Vrrp);
        assert_eq!(mode_of("vip: {mode: leader}\n").unwrap(), Mode::Leader);
        assert_eq!(mode_of("scope: x\n").unwrap(), Mode::Vrrp);
        assert!(format!("{:#}", mode_of("vip: {mode: x}\n").unwrap_err()).contains("vip.mode"));
        let e = VipConfig::parse("vip: {mode: leader, interface: eth0, addresses: [10.0.0.1]}\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("tandem vip -c node.yml"), "{e:#}");
    }

    #[test]
    fn long_auth_pass_warns_and_is_cut_like_keepalived() {
        let y = "vip:\n  interface: eth0\n  virtual_router_id: 51\n  priority: 100\n  addresses: [10.0.0.1]\n  auth_pass: 0123456789ab\n";
        let c = VipConfig::parse(y).unwrap();
        assert_eq!(c.auth_pass.as_deref(), Some("01234567"));
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("12 characters"), "{}", c.warnings[0]);
        assert!(c.warnings[0].contains("first 8"));
        assert!(!c.warnings[0].contains("89ab"), "no secret in the warning");
    }

    #[test]
    fn v3_fractions_and_interfaces() {
        let y = "vip:\n  interface: eth0\n  virtual_router_id: 7\n  priority: 90\n  version: 3\n  advert_int: 0.25\n  addresses: [10.0.0.1/24, 10.0.0.2]\n  track_interface: [eth1, {name: eth2, weight: -20}]\n  notify: {master: 'echo m', any: 'logger'}\n  preempt: false\n  preempt_delay: 2.5\n";
        let c = VipConfig::parse(y).unwrap();
        assert_eq!(c.advert_int, Duration::from_millis(250));
        assert_eq!(c.addresses[1].prefix, 32);
        assert_eq!(c.track_interfaces[1].weight, -20);
        assert_eq!(c.notify.master.as_deref(), Some("echo m"));
        assert!(!c.preempt);
        assert_eq!(c.preempt_delay, Duration::from_millis(2500));
        let y6 = "vip:\n  interface: eth0\n  virtual_router_id: 7\n  priority: 90\n  version: 3\n  addresses: ['2001:db8::100/64']\n  unicast_peers: ['fe80::2']\n";
        let c = VipConfig::parse(y6).unwrap();
        assert_eq!(c.addresses[0].prefix, 64);
        assert!(c.unicast_peers[0].is_ipv6());
    }
}
