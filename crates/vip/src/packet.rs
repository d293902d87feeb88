//! The VRRP advertisement codec: VRRPv2 (RFC 3768 §5) and VRRPv3 (RFC 5798 §5), pure.
//!
//! ```text
//! v2 (RFC 3768 §5.1)                         v3 (RFC 5798 §5.1)
//!  0      3 4    7 8          15 16   23 24  31   0      3 4    7 8    15 16   23 24      31
//! |Version| Type  | VRID       |Priority|Count|  |Version| Type  | VRID |Priority|Count IPvX|
//! | Auth Type     | Adver Int  | Checksum     |  |Rsvd| Max Adver Int(12)|   Checksum       |
//! | IPv4 address(es) ...                      |  | IPv4 or IPv6 address(es) ...             |
//! | Authentication data (8 octets)            |
//! ```
//!
//! - v2: `Adver Int` is whole seconds; the checksum covers the VRRP message only (§5.3.8);
//!   authentication type 0 (none) or 1 (simple text password, 8 octets, §5.3.6); IPv4 only.
//! - v3: `Max Adver Int` is 12 bits of centiseconds (§5.2.7); the checksum also covers the IPv4
//!   or IPv6 pseudo-header with protocol 112 (§5.2.8); no authentication.
//!
//! Decoding never panics: every malformed input becomes a [`DecodeError`] (proptest-checked).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP (RFC 5798 §5.1.1.4, RFC 3768 §5.2.4).
pub const IPPROTO_VRRP: u8 = 112;
/// The IPv4 multicast group of VRRP (RFC 5798 §5.1.1.2).
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group of VRRP (RFC 5798 §5.1.2.2): ff02::12.
pub const MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The TTL / hop limit every VRRP packet is sent with and must arrive with (RFC 5798 §5.1.1.3).
pub const TTL: u8 = 255;
/// Packet type ADVERTISEMENT, the only one defined (RFC 5798 §5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Length of the v2 authentication data (RFC 3768 §5.3.10).
pub const AUTH_LEN: usize = 8;
/// Largest v3 interval: 12 bits of centiseconds (RFC 5798 §5.2.7).
pub const MAX_INTERVAL_CS_V3: u16 = 0x0fff;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    V2,
    V3,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VRRPv{}", self.number())
    }
}

/// VRRPv2 authentication (RFC 3768 §5.3.6). v3 has none.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Type 0. The data octets are zero on send and ignored on receipt.
    None,
    /// Type 1: simple text password, zero-padded to 8 octets.
    Simple([u8; AUTH_LEN]),
    /// Type 2 (IP Authentication Header, deprecated by RFC 3768) or anything else.
    Other { kind: u8, data: [u8; AUTH_LEN] },
}

impl Auth {
    /// A simple password as keepalived sends it: the first 8 bytes, zero-padded.
    pub fn simple(password: &str) -> Auth {
        let mut data = [0u8; AUTH_LEN];
        let b = password.as_bytes();
        let n = b.len().min(AUTH_LEN);
        data[..n].copy_from_slice(&b[..n]);
        Auth::Simple(data)
    }
    pub fn kind(&self) -> u8 {
        match self {
            Auth::None => 0,
            Auth::Simple(_) => 1,
            Auth::Other { kind, .. } => *kind,
        }
    }
}

// Never print the password.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Simple(_) => f.write_str("Simple(********)"),
            Auth::Other { kind, .. } => write!(f, "Other({kind})"),
        }
    }
}

/// One VRRP advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval in centiseconds. v2 carries whole seconds, so a v2 advert's
    /// interval is a multiple of 100 (at most 255 s).
    pub interval_cs: u16,
    /// The virtual addresses; all of the family of the IP packet that carries them.
    pub addresses: Vec<IpAddr>,
    /// v2 only; always [`Auth::None`] for v3.
    pub auth: Auth,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the fixed header, or than the address count says.
    Truncated { len: usize, need: usize },
    /// Longer than the header and address count say.
    Oversized { len: usize, expected: usize },
    /// Version field other than 2 or 3.
    BadVersion(u8),
    /// Type other than ADVERTISEMENT.
    BadType(u8),
    /// Checksum mismatch.
    BadChecksum { got: u16, computed: u16 },
    /// A v2 packet carried over IPv6 (RFC 3768 is IPv4 only), or mixed families.
    BadFamily,
    /// v3 interval 0 or v2 interval 0: no sender may advertise that.
    ZeroInterval,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { len, need } => {
                write!(f, "truncated: {len} bytes, need {need}")
            }
            DecodeError::Oversized { len, expected } => {
                write!(f, "oversized: {len} bytes, the header says {expected}")
            }
            DecodeError::BadVersion(v) => write!(f, "unknown VRRP version {v}"),
            DecodeError::BadType(t) => write!(f, "unknown packet type {t}"),
            DecodeError::BadChecksum { got, computed } => {
                write!(f, "bad checksum {got:#06x} (computed {computed:#06x})")
            }
            DecodeError::BadFamily => f.write_str("VRRPv2 over IPv6 or mixed address families"),
            DecodeError::ZeroInterval => f.write_str("advertisement interval 0"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The RFC 1071 Internet checksum of the concatenation of `parts` (each part starts on an even
/// offset, which holds for every part used here: pseudo-headers and VRRP messages).
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
        // Fold now and then so the sum cannot overflow however long the input is.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header of RFC 5798 §5.2.8 (IPv4: RFC 791 style; IPv6: RFC 8200 §8.1).
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Option<Vec<u8>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = Vec::with_capacity(12);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.push(0);
            p.push(IPPROTO_VRRP);
            p.extend_from_slice(&(len as u16).to_be_bytes());
            Some(p)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = Vec::with_capacity(40);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, IPPROTO_VRRP]);
            Some(p)
        }
        _ => None,
    }
}

fn checksum_for(version: Version, msg: &[u8], src: IpAddr, dst: IpAddr) -> Option<u16> {
    match version {
        Version::V2 => Some(internet_checksum(&[msg])),
        Version::V3 => {
            let ph = pseudo_header(src, dst, msg.len())?;
            Some(internet_checksum(&[&ph, msg]))
        }
    }
}

/// Decode the VRRP message `msg` (the IP payload) that arrived from `src` to `dst`.
/// The family of `src`/`dst` decides the address size. The TTL and the VRID are the receiver's
/// checks ([`crate::receive`]), not the codec's.
pub fn decode(msg: &[u8], src: IpAddr, dst: IpAddr) -> Result<Advert, DecodeError> {
    const FIXED: usize = 8;
    if msg.len() < FIXED {
        return Err(DecodeError::Truncated {
            len: msg.len(),
            need: FIXED,
        });
    }
    let version = match msg[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        v => return Err(DecodeError::BadVersion(v)),
    };
    let kind = msg[0] & 0x0f;
    if kind != TYPE_ADVERTISEMENT {
        return Err(DecodeError::BadType(kind));
    }
    let alen = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => 4,
        (IpAddr::V6(_), IpAddr::V6(_)) if version == Version::V3 => 16,
        _ => return Err(DecodeError::BadFamily),
    };
    let count = usize::from(msg[3]);
    let trailer = if version == Version::V2 { AUTH_LEN } else { 0 };
    let expected = FIXED + count * alen + trailer;
    if msg.len() < expected {
        return Err(DecodeError::Truncated {
            len: msg.len(),
            need: expected,
        });
    }
    if msg.len() > expected {
        return Err(DecodeError::Oversized {
            len: msg.len(),
            expected,
        });
    }
    let got = u16::from_be_bytes([msg[6], msg[7]]);
    // A correct checksum makes the sum over the whole message (checksum included) fold to 0.
    let verify = checksum_for(version, msg, src, dst).ok_or(DecodeError::BadFamily)?;
    if verify != 0 {
        let mut zeroed = msg.to_vec();
        zeroed[6] = 0;
        zeroed[7] = 0;
        let computed = checksum_for(version, &zeroed, src, dst).ok_or(DecodeError::BadFamily)?;
        return Err(DecodeError::BadChecksum { got, computed });
    }
    let (interval_cs, auth) = match version {
        Version::V2 => {
            let secs = msg[5];
            let mut data = [0u8; AUTH_LEN];
            data.copy_from_slice(&msg[expected - AUTH_LEN..expected]);
            let auth = match msg[4] {
                0 => Auth::None,
                1 => Auth::Simple(data),
                kind => Auth::Other { kind, data },
            };
            (u16::from(secs) * 100, auth)
        }
        Version::V3 => (
            u16::from_be_bytes([msg[4], msg[5]]) & MAX_INTERVAL_CS_V3,
            Auth::None,
        ),
    };
    if interval_cs == 0 {
        return Err(DecodeError::ZeroInterval);
    }
    let addresses = msg[FIXED..FIXED + count * alen]
        .chunks_exact(alen)
        .map(|c| {
            if alen == 4 {
                IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            } else {
                let mut o = [0u8; 16];
                o.copy_from_slice(c);
                IpAddr::V6(Ipv6Addr::from(o))
            }
        })
        .collect();
    Ok(Advert {
        version,
        vrid: msg[1],
        priority: msg[2],
        interval_cs,
        addresses,
        auth,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// More than 255 addresses, or an address of the wrong family.
    Addresses,
    /// v2: not whole seconds in 1..=255; v3: not in 1..=4095 centiseconds.
    Interval(u16),
    /// v2 over IPv6, or authentication on v3.
    Version,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Addresses => f.write_str("1 to 255 addresses of the packet's family"),
            EncodeError::Interval(cs) => write!(f, "interval {cs} cs out of range"),
            EncodeError::Version => f.write_str("VRRPv2 is IPv4 only and v3 has no auth"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Encode `advert` as sent from `src` to `dst` (the addresses enter the v3 checksum).
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>, EncodeError> {
    let v6 = match (src, dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        _ => return Err(EncodeError::Addresses),
    };
    if advert.addresses.len() > 255 || advert.addresses.iter().any(|a| a.is_ipv6() != v6) {
        return Err(EncodeError::Addresses);
    }
    let mut m = Vec::with_capacity(8 + advert.addresses.len() * 16 + AUTH_LEN);
    m.push((advert.version.number() << 4) | TYPE_ADVERTISEMENT);
    m.push(advert.vrid);
    m.push(advert.priority);
    m.push(advert.addresses.len() as u8);
    match advert.version {
        Version::V2 => {
            if v6 {
                return Err(EncodeError::Version);
            }
            let cs = advert.interval_cs;
            if cs == 0 || !cs.is_multiple_of(100) || cs / 100 > 255 {
                return Err(EncodeError::Interval(cs));
            }
            m.push(advert.auth.kind());
            m.push((cs / 100) as u8);
        }
        Version::V3 => {
            if advert.auth != Auth::None {
                return Err(EncodeError::Version);
            }
            let cs = advert.interval_cs;
            if cs == 0 || cs > MAX_INTERVAL_CS_V3 {
                return Err(EncodeError::Interval(cs));
            }
            m.extend_from_slice(&cs.to_be_bytes());
        }
    }
    m.extend_from_slice(&[0, 0]);
    for a in &advert.addresses {
        match a {
            IpAddr::V4(a) => m.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => m.extend_from_slice(&a.octets()),
        }
    }
    if advert.version == Version::V2 {
        match advert.auth {
            Auth::None => m.extend_from_slice(&[0; AUTH_LEN]),
            Auth::Simple(d) | Auth::Other { data: d, .. } => m.extend_from_slice(&d),
        }
    }
    let c = checksum_for(advert.version, &m, src, dst).ok_or(EncodeError::Addresses)?;
    m[6..8].copy_from_slice(&c.to_be_bytes());
    Ok(m)
}

/// The fields of a received IPv4 header that VRRP needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
}

/// Split a datagram as a raw IPv4 socket returns it into header and payload.
pub fn parse_ipv4(buf: &[u8]) -> Result<(Ipv4Header, &[u8]), DecodeError> {
    if buf.len() < 20 {
        return Err(DecodeError::Truncated {
            len: buf.len(),
            need: 20,
        });
    }
    if buf[0] >> 4 != 4 {
        return Err(DecodeError::BadFamily);
    }
    let ihl = usize::from(buf[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if ihl < 20 || total < ihl || buf.len() < total {
        return Err(DecodeError::Truncated {
            len: buf.len(),
            need: total.max(ihl).max(20),
        });
    }
    let h = Ipv4Header {
        ttl: buf[8],
        protocol: buf[9],
        src: Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]),
        dst: Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]),
    };
    Ok((h, &buf[ihl..total]))
}

/// Build the IPv4 header for a VRRP message (for an `IPPROTO_RAW` socket, which sends the
/// header as given): TOS 0xC0 (internetwork control, as keepalived sends), TTL 255, protocol 112.
/// The kernel fills in the identification and header checksum.
pub fn ipv4_datagram(src: Ipv4Addr, dst: Ipv4Addr, msg: &[u8]) -> Vec<u8> {
    let total = (20 + msg.len()) as u16;
    let mut p = Vec::with_capacity(usize::from(total));
    p.extend_from_slice(&[0x45, 0xc0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]); // id (kernel), flags + fragment offset
    p.push(TTL);
    p.push(IPPROTO_VRRP);
    p.extend_from_slice(&[0, 0]); // header checksum (kernel)
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(msg);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // The adverts of the research note (notes/multihost-testing.md §4), as tcpdump showed them
    // coming from keepalived 2.2.7: v2 with auth "fzsecret" and v3, VRID 51, priority 100.
    fn keepalived_v2() -> Vec<u8> {
        let a = Advert {
            version: Version::V2,
            vrid: 51,
            priority: 100,
            interval_cs: 100,
            addresses: vec![v4("10.99.0.100")],
            auth: Auth::simple("fzsecret"),
        };
        encode(&a, v4("10.99.0.11"), v4("224.0.0.18")).unwrap()
    }

    #[test]
    fn v2_layout_matches_rfc3768() {
        let m = keepalived_v2();
        assert_eq!(
            m.len(),
            20,
            "8 fixed + 4 address + 8 auth, as tcpdump's 'length 20'"
        );
        assert_eq!(m[0], 0x21);
        assert_eq!(&m[1..6], &[51, 100, 1, 1, 1]);
        assert_eq!(&m[8..12], &[10, 99, 0, 100]);
        assert_eq!(&m[12..20], b"fzsecret");
        // v2's checksum is over the message alone.
        assert_eq!(internet_checksum(&[&m]), 0);
    }

    #[test]
    fn v3_layout_and_pseudo_header_checksum() {
        let a = Advert {
            version: Version::V3,
            vrid: 51,
            priority: 100,
            interval_cs: 100,
            addresses: vec![v4("10.99.0.100")],
            auth: Auth::None,
        };
        let m = encode(&a, v4("10.99.0.11"), v4("224.0.0.18")).unwrap();
        assert_eq!(m.len(), 12, "tcpdump's 'length 12'");
        assert_eq!(&m[..6], &[0x31, 51, 100, 1, 0x00, 100]);
        // The message alone does not sum to zero; with the pseudo-header it does.
        assert_ne!(internet_checksum(&[&m]), 0);
        let ph = pseudo_header(v4("10.99.0.11"), v4("224.0.0.18"), m.len()).unwrap();
        assert_eq!(internet_checksum(&[&ph, &m]), 0);
        // The same bytes from another source fail the check: the pseudo-header matters.
        assert!(matches!(
            decode(&m, v4("10.99.0.12"), v4("224.0.0.18")),
            Err(DecodeError::BadChecksum { .. })
        ));
        assert_eq!(decode(&m, v4("10.99.0.11"), v4("224.0.0.18")).unwrap(), a);
    }

    #[test]
    fn v3_ipv6_round_trip() {
        let src: IpAddr = "fe80::1".parse().unwrap();
        let a = Advert {
            version: Version::V3,
            vrid: 7,
            priority: 200,
            interval_cs: 50,
            addresses: vec![
                "fe80::100".parse().unwrap(),
                "2001:db8::100".parse().unwrap(),
            ],
            auth: Auth::None,
        };
        let m = encode(&a, src, IpAddr::V6(MCAST_V6)).unwrap();
        assert_eq!(m.len(), 8 + 32);
        assert_eq!(decode(&m, src, IpAddr::V6(MCAST_V6)).unwrap(), a);
    }

    #[test]
    fn table_of_malformed_packets() {
        let good = keepalived_v2();
        let src = v4("10.99.0.11");
        let dst = v4("224.0.0.18");
        let mut bad_version = good.clone();
        bad_version[0] = 0x41;
        let mut bad_type = good.clone();
        bad_type[0] = 0x22;
        let mut bad_sum = good.clone();
        bad_sum[7] ^= 0xff;
        let mut more = good.clone();
        more.push(0);
        type Case = (&'static str, Vec<u8>, IpAddr, fn(&DecodeError) -> bool);
        let cases: Vec<Case> = vec![
            ("empty", vec![], src, |e| {
                matches!(e, DecodeError::Truncated { need: 8, .. })
            }),
            ("header only", good[..8].to_vec(), src, |e| {
                matches!(e, DecodeError::Truncated { need: 20, .. })
            }),
            ("no auth data", good[..12].to_vec(), src, |e| {
                matches!(e, DecodeError::Truncated { .. })
            }),
            ("trailing byte", more, src, |e| {
                matches!(e, DecodeError::Oversized { expected: 20, .. })
            }),
            ("version 4", bad_version, src, |e| {
                *e == DecodeError::BadVersion(4)
            }),
            ("type 2", bad_type, src, |e| *e == DecodeError::BadType(2)),
            ("checksum", bad_sum, src, |e| {
                matches!(e, DecodeError::BadChecksum { .. })
            }),
            (
                "v2 over ipv6",
                good.clone(),
                "fe80::1".parse().unwrap(),
                |e| *e == DecodeError::BadFamily,
            ),
        ];
        for (name, bytes, from, check) in cases {
            let to = if from.is_ipv6() {
                IpAddr::V6(MCAST_V6)
            } else {
                dst
            };
            let err = decode(&bytes, from, to).expect_err(name);
            assert!(check(&err), "{name}: unexpected {err:?}");
        }
    }

    #[test]
    fn v2_auth_types() {
        let src = v4("10.0.0.1");
        let dst = v4("224.0.0.18");
        for (auth, kind) in [
            (Auth::None, 0),
            (Auth::simple("pw"), 1),
            (
                Auth::Other {
                    kind: 2,
                    data: [9; 8],
                },
                2,
            ),
        ] {
            let a = Advert {
                version: Version::V2,
                vrid: 1,
                priority: 1,
                interval_cs: 300,
                addresses: vec![v4("10.0.0.9")],
                auth,
            };
            let m = encode(&a, src, dst).unwrap();
            assert_eq!(m[4], kind);
            assert_eq!(decode(&m, src, dst).unwrap(), a);
        }
        // keepalived truncates to 8 characters; so does Auth::simple.
        assert_eq!(Auth::simple("0123456789"), Auth::simple("01234567"));
        assert_eq!(format!("{:?}", Auth::simple("secret")), "Simple(********)");
    }

    #[test]
    fn encode_refuses_what_cannot_be_sent() {
        let src = v4("10.0.0.1");
        let dst = v4("224.0.0.18");
        let mut a = Advert {
            version: Version::V2,
            vrid: 1,
            priority: 1,
            interval_cs: 150,
            addresses: vec![v4("10.0.0.9")],
            auth: Auth::None,
        };
        assert_eq!(encode(&a, src, dst), Err(EncodeError::Interval(150)));
        a.version = Version::V3;
        a.interval_cs = 4096;
        assert_eq!(encode(&a, src, dst), Err(EncodeError::Interval(4096)));
        a.interval_cs = 100;
        a.addresses = vec!["::1".parse().unwrap()];
        assert_eq!(encode(&a, src, dst), Err(EncodeError::Addresses));
    }

    #[test]
    fn ipv4_header_round_trip() {
        let msg = keepalived_v2();
        let d = ipv4_datagram(Ipv4Addr::new(10, 99, 0, 11), MCAST_V4, &msg);
        let (h, payload) = parse_ipv4(&d).unwrap();
        assert_eq!(h.ttl, 255);
        assert_eq!(h.protocol, 112);
        assert_eq!(h.src, Ipv4Addr::new(10, 99, 0, 11));
        assert_eq!(h.dst, MCAST_V4);
        assert_eq!(payload, &msg[..]);
        assert!(parse_ipv4(&d[..19]).is_err());
        assert!(parse_ipv4(&d[..30]).is_err(), "shorter than total length");
    }
}
