//! Adding and removing an address through rtnetlink (RTM_NEWADDR / RTM_DELADDR, rtnetlink(7)),
//! without shelling out to `ip`. Messages are built and parsed by pure functions.

use crate::config::VipAddr;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

const NLMSG_HDRLEN: usize = 16;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const NLMSG_ERROR: u16 = 2;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// The RTM_NEWADDR (add) or RTM_DELADDR message for `a` on interface `ifindex`.
pub fn address_message(add: bool, seq: u32, ifindex: u32, a: &VipAddr) -> Vec<u8> {
    let (family, bytes): (u8, Vec<u8>) = match a.addr {
        IpAddr::V4(v) => (libc::AF_INET as u8, v.octets().to_vec()),
        IpAddr::V6(v) => (libc::AF_INET6 as u8, v.octets().to_vec()),
    };
    let kind = if add {
        libc::RTM_NEWADDR
    } else {
        libc::RTM_DELADDR
    };
    let mut flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    if add {
        flags |= (libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    }
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&[0; 4]); // length, set below
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct ifaddrmsg { family, prefixlen, flags, scope, index }
    m.push(family);
    m.push(a.prefix);
    m.push(0);
    m.push(libc::RT_SCOPE_UNIVERSE);
    m.extend_from_slice(&ifindex.to_ne_bytes());
    push_attr(&mut m, IFA_LOCAL, &bytes);
    push_attr(&mut m, IFA_ADDRESS, &bytes);
    if a.addr.is_ipv6() && add {
        push_attr(&mut m, IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
    }
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// Find the acknowledgement of `seq` in a netlink reply: `Some(0)` success, `Some(-errno)`.
pub fn parse_ack(buf: &[u8], seq: u32) -> Option<i32> {
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().ok()?);
        let s = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().ok()?);
        if kind == NLMSG_ERROR && s == seq && len >= NLMSG_HDRLEN + 4 {
            let e = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().ok()?);
            return Some(e);
        }
        off += align4(len);
    }
    None
}

static SEQ: AtomicU32 = AtomicU32::new(1);

/// Add (`add`) or remove the address. Adding one already there, or removing one not there, is
/// success: both leave the interface as asked.
pub fn change_address(add: bool, ifindex: u32, a: &VipAddr) -> io::Result<()> {
    // SAFETY: plain socket(2).
    let fd = super::cvt(unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    })?;
    // SAFETY: fd is a fresh socket we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    super::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let msg = address_message(add, seq, ifindex, a);
    // SAFETY: a zeroed sockaddr_nl with family set addresses the kernel (pid 0).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: msg and sa are live for the call.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr() as *const libc::c_void,
            msg.len(),
            0,
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: buf is writable for its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        match parse_ack(&buf[..n as usize], seq) {
            Some(0) => return Ok(()),
            Some(e) => {
                let errno = -e;
                let benign = if add {
                    errno == libc::EEXIST
                } else {
                    errno == libc::EADDRNOTAVAIL || errno == libc::ENODEV
                };
                return if benign {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(errno))
                };
            }
            None => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_message_layout() {
        let a = VipAddr {
            addr: "10.99.0.100".parse().unwrap(),
            prefix: 24,
        };
        let m = address_message(true, 7, 3, &a);
        assert_eq!(m.len(), 16 + 8 + 8 + 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(
            u16::from_ne_bytes(m[4..6].try_into().unwrap()),
            libc::RTM_NEWADDR
        );
        assert_eq!(&m[16..20], &[libc::AF_INET as u8, 24, 0, 0]);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 3);
        assert_eq!(&m[28..32], &[10, 99, 0, 100]);
        let d = address_message(false, 8, 3, &a);
        assert_eq!(
            u16::from_ne_bytes(d[4..6].try_into().unwrap()),
            libc::RTM_DELADDR
        );
    }

    #[test]
    fn ack_parsing() {
        let mut r = Vec::new();
        r.extend_from_slice(&36u32.to_ne_bytes());
        r.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        r.extend_from_slice(&0u16.to_ne_bytes());
        r.extend_from_slice(&9u32.to_ne_bytes());
        r.extend_from_slice(&0u32.to_ne_bytes());
        r.extend_from_slice(&(-17i32).to_ne_bytes());
        r.extend_from_slice(&[0; 16]);
        assert_eq!(parse_ack(&r, 9), Some(-17));
        assert_eq!(parse_ack(&r, 10), None);
        assert_eq!(parse_ack(&r[..10], 9), None);
    }
}
