//! Access checks for the state-changing endpoints (spec §5.5), in Patroni's order: the client
//! address against `restapi.allowlist` (and, with `allowlist_include_members`, the members'
//! addresses), then the client certificate, then HTTP basic auth.

use crate::config::{Credentials, RestApiConfig, VerifyClient};
use base64::Engine as _;
use std::net::IpAddr;
use std::time::Duration;

/// Time allowed for resolving the host names of the allowlist.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// One allowlist entry: an address, a network, or a host name to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowEntry {
    Net { addr: IpAddr, prefix: u8 },
    Host(String),
}

impl AllowEntry {
    /// `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`, or a host name.
    pub fn parse(text: &str) -> Option<AllowEntry> {
        let t = text.trim().trim_start_matches('[').trim_end_matches(']');
        if t.is_empty() {
            return None;
        }
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        match addr.parse::<IpAddr>() {
            Ok(ip) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let prefix = match prefix {
                    None => max,
                    Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
                };
                Some(AllowEntry::Net { addr: ip, prefix })
            }
            Err(_) if prefix.is_none() => Some(AllowEntry::Host(t.to_string())),
            Err(_) => None,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, as a dual-stack listener reports IPv4 clients)
/// become plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether `ip` lies in `net/prefix`.
pub fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (canonical(ip), canonical(net)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Resolves a host name to its addresses (none when it does not resolve in time).
pub async fn resolve(host: &str) -> Vec<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(addrs)) => addrs.map(|a| canonical(a.ip())).collect(),
        _ => Vec::new(),
    }
}

/// Whether `client` matches one of `entries` (host names are resolved now).
pub async fn allowed(client: IpAddr, entries: &[AllowEntry]) -> bool {
    let client = canonical(client);
    for e in entries {
        match e {
            AllowEntry::Net { addr, prefix } => {
                if in_network(client, *addr, *prefix) {
                    return true;
                }
            }
            AllowEntry::Host(h) => {
                if resolve(h).await.contains(&client) {
                    return true;
                }
            }
        }
    }
    false
}

/// The host part of a URL such as `http://10.0.0.1:8008/patroni`.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit('@').next()?;
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        hostport.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Why basic auth failed: Patroni's two messages.
pub fn check_basic_auth(header: Option<&[u8]>, creds: &Credentials) -> Result<(), &'static str> {
    let Some(header) = header else {
        return Err("no auth header received");
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            creds.username,
            creds.password.expose()
        ))
    );
    if constant_time_eq(header, expected.as_bytes()) {
        Ok(())
    } else {
        Err("not authenticated")
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// What a protected request brings along.
#[derive(Clone, Debug)]
pub struct Caller<'a> {
    pub ip: IpAddr,
    /// Over TLS, the client presented a certificate that the server verified.
    pub client_cert: bool,
    pub tls: bool,
    pub authorization: Option<&'a [u8]>,
}

/// A refusal: status code and Patroni's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub message: &'static str,
}

/// Runs the checks of spec §5.5. `member_ips` are the members' REST API addresses (used only with
/// `allowlist_include_members` and `check_members`).
pub async fn check(
    api: &RestApiConfig,
    allowlist: &[AllowEntry],
    caller: &Caller<'_>,
    check_members: bool,
    member_ips: impl FnOnce() -> Vec<String>,
) -> Result<(), Refusal> {
    let check_members = check_members && api.allowlist_include_members;
    if !allowlist.is_empty() || check_members {
        let mut ok = allowed(caller.ip, allowlist).await;
        if !ok && check_members {
            for host in member_ips() {
                if resolve(&host).await.contains(&canonical(caller.ip)) {
                    ok = true;
                    break;
                }
            }
        }
        if !ok {
            return Err(Refusal {
                code: 403,
                message: "Access is denied",
            });
        }
    }
    if caller.tls && api.verify_client != VerifyClient::None && !caller.client_cert {
        return Err(Refusal {
            code: 403,
            message: "client certificate required",
        });
    }
    if let Some(creds) = &api.authentication {
        check_basic_auth(caller.authorization, creds)
            .map_err(|message| Refusal { code: 401, message })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn creds() -> Credentials {
        Credentials {
            username: "admin".into(),
            password: Secret::new("s3cret"),
        }
    }

    #[test]
    fn allowlist_entries_parse() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            AllowEntry::parse("10.0.0.0/8"),
            Some(AllowEntry::Net {
                addr: ip("10.0.0.0"),
                prefix: 8
            })
        );
        assert_eq!(
            AllowEntry::parse("127.0.0.1"),
            Some(AllowEntry::Net {
                addr: ip("127.0.0.1"),
                prefix: 32
            })
        );
        assert_eq!(
            AllowEntry::parse("[::1]"),
            Some(AllowEntry::Net {
                addr: ip("::1"),
                prefix: 128
            })
        );
        assert_eq!(
            AllowEntry::parse("db1.example"),
            Some(AllowEntry::Host("db1.example".into()))
        );
        assert_eq!(AllowEntry::parse("10.0.0.0/33"), None);
        assert_eq!(AllowEntry::parse("host/8"), None);
        assert_eq!(AllowEntry::parse(" "), None);
    }

    #[test]
    fn networks_match() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("10.1.2.3"), ip("10.0.0.0"), 8));
        assert!(!in_network(ip("11.1.2.3"), ip("10.0.0.0"), 8));
        assert!(in_network(ip("1.2.3.4"), ip("0.0.0.0"), 0));
        assert!(in_network(ip("::ffff:127.0.0.1"), ip("127.0.0.0"), 8));
        assert!(in_network(ip("fd00::1"), ip("fd00::"), 16));
        assert!(!in_network(ip("fd01::1"), ip("fd00::"), 16));
        assert!(!in_network(ip("127.0.0.1"), ip("::1"), 128));
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("http://10.0.0.1:8008/patroni").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            url_host("https://[::1]:8008/patroni").as_deref(),
            Some("::1")
        );
        assert_eq!(url_host("https://db1/patroni").as_deref(), Some("db1"));
        assert_eq!(url_host("http:///x"), None);
    }

    #[test]
    fn basic_auth() {
        let c = creds();
        // base64("admin:s3cret")
        let good = b"Basic YWRtaW46czNjcmV0";
        assert_eq!(check_basic_auth(Some(good), &c), Ok(()));
        assert_eq!(check_basic_auth(None, &c), Err("no auth header received"));
        assert_eq!(
            check_basic_auth(Some(b"Basic YWRtaW46d3Jvbmc="), &c),
            Err("not authenticated")
        );
        assert_eq!(
            check_basic_auth(Some(b"Bearer x"), &c),
            Err("not authenticated")
        );
        assert_eq!(
            check_basic_auth(Some(b"Basic YWRtaW46czNjcmV0A"), &c),
            Err("not authenticated")
        );
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
        assert!(!constant_time_eq(b"ab", b"ac"));
    }

    fn api() -> RestApiConfig {
        RestApiConfig {
            listen: "127.0.0.1:8008".into(),
            connect_address: "127.0.0.1:8008".into(),
            certfile: None,
            keyfile: None,
            keyfile_password: None,
            cafile: None,
            verify_client: VerifyClient::None,
            authentication: None,
            allowlist: Vec::new(),
            allowlist_include_members: false,
            http_extra_headers: Default::default(),
        }
    }

    #[tokio::test]
    async fn checks_in_order() {
        let caller = |ip: &str, auth: Option<&'static [u8]>| Caller {
            ip: ip.parse().unwrap(),
            client_cert: false,
            tls: false,
            authorization: auth,
        };
        let none = Vec::new;
        // Nothing configured: everyone may.
        assert!(check(&api(), &[], &caller("10.9.9.9", None), true, none)
            .await
            .is_ok());
        let mut a = api();
        a.authentication = Some(creds());
        let list = vec![AllowEntry::parse("127.0.0.0/8").unwrap()];
        let denied = check(&a, &list, &caller("10.9.9.9", None), true, none).await;
        assert_eq!(denied.unwrap_err().code, 403);
        let unauth = check(&a, &list, &caller("127.0.0.2", None), true, none).await;
        assert_eq!(
            unauth.unwrap_err(),
            Refusal {
                code: 401,
                message: "no auth header received"
            }
        );
        let ok = check(
            &a,
            &list,
            &caller("127.0.0.2", Some(b"Basic YWRtaW46czNjcmV0")),
            true,
            none,
        )
        .await;
        assert!(ok.is_ok());
        // Members' addresses count only with allowlist_include_members, and not for /failsafe.
        a.allowlist_include_members = true;
        let members = || vec!["10.9.9.9".to_string()];
        let c = caller("10.9.9.9", Some(b"Basic YWRtaW46czNjcmV0"));
        assert!(check(&a, &list, &c, true, members).await.is_ok());
        assert!(check(&a, &list, &c, false, members).await.is_err());
        // Client certificates, when the server asks for them.
        let mut t = api();
        t.verify_client = VerifyClient::Optional;
        let mut c = caller("127.0.0.1", None);
        c.tls = true;
        assert_eq!(
            check(&t, &[], &c, true, none).await.unwrap_err().message,
            "client certificate required"
        );
        c.client_cert = true;
        assert!(check(&t, &[], &c, true, none).await.is_ok());
    }

    /// Property tests: any allowlist entry, URL or Authorization header is parsed or refused,
    /// never a panic; only the exact credentials pass.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::net::{Ipv4Addr, Ipv6Addr};

        proptest! {
            #[test]
            fn allowlist_entries_parse_or_are_refused(
                text in ".{0,24}",
                v4 in any::<u32>(),
                v6 in any::<u128>(),
                prefix in 0u8..=255,
            ) {
                match AllowEntry::parse(&text) {
                    Some(AllowEntry::Net { addr, prefix }) => {
                        let max = if addr.is_ipv4() { 32 } else { 128 };
                        prop_assert!(prefix <= max, "{}/{}", addr, prefix);
                    }
                    Some(AllowEntry::Host(h)) => prop_assert!(!h.is_empty()),
                    None => {}
                }
                for addr in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6))] {
                    let max = if addr.is_ipv4() { 32 } else { 128 };
                    let want = (prefix <= max).then_some(AllowEntry::Net { addr, prefix });
                    prop_assert_eq!(AllowEntry::parse(&format!("{addr}/{prefix}")), want);
                    let _ = in_network(addr, addr, prefix);
                }
            }

            #[test]
            fn url_hosts_are_found_or_refused(
                text in ".{0,32}",
                v4 in any::<u32>(),
                port in any::<u16>(),
            ) {
                if let Some(h) = url_host(&text) {
                    prop_assert!(!h.is_empty());
                }
                let ip = Ipv4Addr::from(v4).to_string();
                prop_assert_eq!(url_host(&format!("https://{ip}:{port}/patroni")), Some(ip));
            }

            #[test]
            fn only_the_exact_credentials_pass(
                header in prop::collection::vec(any::<u8>(), 0..48),
                a in prop::collection::vec(any::<u8>(), 0..8),
                b in prop::collection::vec(any::<u8>(), 0..8),
            ) {
                let good = b"Basic YWRtaW46czNjcmV0";
                prop_assert_eq!(
                    check_basic_auth(Some(&header), &creds()).is_ok(),
                    header == good
                );
                prop_assert_eq!(constant_time_eq(&a, &b), a == b);
            }
        }
    }
}
