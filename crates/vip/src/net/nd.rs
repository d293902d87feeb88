//! Unsolicited Neighbor Advertisement (RFC 4861 §7.2.6), IPv6's gratuitous ARP: sent to all nodes
//! (ff02::1) with the Override flag and our link-layer address, hop limit 255. The kernel fills in
//! the ICMPv6 checksum of a raw ICMPv6 socket.

use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The ICMPv6 message: type 136, Override flag, target `ip`, option 2 (target link-layer address).
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 136;
    // m[1] code 0, m[2..4] checksum (kernel)
    m[4] = 0x20; // R=0 S=0 O=1
    m[8..24].copy_from_slice(&ip.octets());
    m[24] = 2; // target link-layer address
    m[25] = 1; // length in units of 8 octets
    m[26..32].copy_from_slice(&mac);
    m
}

/// Send one unsolicited NA per address from `src` (our link-local address) out of `ifindex`.
pub fn announce(ifindex: u32, src: Ipv6Addr, mac: [u8; 6], ips: &[Ipv6Addr]) -> io::Result<()> {
    // SAFETY: plain socket(2).
    let fd = super::cvt(unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMPV6,
        )
    })?;
    // SAFETY: fd is a fresh socket we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let hops: libc::c_int = 255;
    super::setsockopt(
        fd.as_raw_fd(),
        libc::IPPROTO_IPV6,
        libc::IPV6_MULTICAST_HOPS,
        &hops,
    )?;
    for ip in ips {
        let m = unsolicited_na(mac, *ip);
        super::socket::send6(fd.as_raw_fd(), ifindex, src, ALL_NODES, &m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout() {
        let m = super::unsolicited_na([2, 0, 0, 0, 0, 9], "2001:db8::100".parse().unwrap());
        assert_eq!(m[0], 136);
        assert_eq!(m[4], 0x20);
        assert_eq!(&m[8..10], &[0x20, 0x01]);
        assert_eq!(&m[24..26], &[2, 1]);
        assert_eq!(&m[26..32], &[2, 0, 0, 0, 0, 9]);
    }
}
