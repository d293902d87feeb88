//! The raw VRRP sockets, IPv4 and IPv6.
//!
//! IPv4:
//! - Receive: `socket(AF_INET, SOCK_RAW, 112)` bound to the interface (SO_BINDTODEVICE) and joined
//!   to 224.0.0.18 there. It stays unbound to an address: a raw socket bound to an address only
//!   sees packets sent to that address. Reads return the IP header, so the TTL is checked.
//! - Send: `socket(AF_INET, SOCK_RAW, IPPROTO_RAW)`, which never receives and takes the IP header
//!   from us: TTL 255, TOS 0xC0, protocol 112, our primary address as source (the v3 checksum
//!   covers it). Multicast goes out of the interface (IP_MULTICAST_IF) and is not looped back.
//!
//! IPv6 (RFC 5798 §5.1.2): one `socket(AF_INET6, SOCK_RAW, 112)` bound to the interface, joined
//! to ff02::12, hop limit 255 for multicast and unicast. The hop limit and destination of received
//! packets come as ancillary data (IPV6_HOPLIMIT, IPV6_PKTINFO); the source of sent packets, our
//! link-local address, is set per packet with IPV6_PKTINFO.

use crate::packet::{ipv4_datagram, MCAST_V4, MCAST_V6};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// One datagram read: its real length (which may exceed the buffer), and for IPv6 the header
/// fields the kernel hands over as ancillary data (IPv4 datagrams carry their header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram {
    V4 {
        len: usize,
    },
    V6 {
        len: usize,
        src: Ipv6Addr,
        dst: Option<Ipv6Addr>,
        hop_limit: Option<u8>,
    },
}

pub struct VrrpSocket {
    rx: AsyncFd<OwnedFd>,
    /// IPv4 only: the IPPROTO_RAW sending socket.
    tx: Option<OwnedFd>,
    src: IpAddr,
    ifindex: u32,
}

fn raw_socket(family: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = super::cvt(unsafe {
        libc::socket(
            family,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto,
        )
    })?;
    // SAFETY: fd is a fresh socket we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_to_device(fd: &OwnedFd, ifname: &str) -> io::Result<()> {
    super::cvt(unsafe {
        // SAFETY: the name bytes are live for the call.
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr() as *const libc::c_void,
            ifname.len() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

fn mreqn(group: Ipv4Addr, local: Ipv4Addr, ifindex: u32) -> libc::ip_mreqn {
    libc::ip_mreqn {
        imr_multiaddr: libc::in_addr {
            s_addr: u32::from(group).to_be(),
        },
        imr_address: libc::in_addr {
            s_addr: u32::from(local).to_be(),
        },
        imr_ifindex: ifindex as libc::c_int,
    }
}

fn in6(a: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: a.octets(),
    }
}

fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open while registered.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))
}

impl VrrpSocket {
    /// Open the socket(s) on `ifname` (index `ifindex`) with `src` as our address (IPv4: the
    /// interface's primary address; IPv6: its link-local address). Joins the multicast group
    /// unless `multicast` is false (unicast peers only).
    pub fn open(ifname: &str, ifindex: u32, src: IpAddr, multicast: bool) -> io::Result<Self> {
        let proto = libc::c_int::from(crate::packet::IPPROTO_VRRP);
        let rcvbuf: libc::c_int = 256 * 1024;
        let one: libc::c_int = 1;
        let zero: libc::c_int = 0;
        let ttl: libc::c_int = 255;
        match src {
            IpAddr::V4(src4) => {
                let rx = raw_socket(libc::AF_INET, proto)?;
                bind_to_device(&rx, ifname)?;
                if multicast {
                    let m = mreqn(MCAST_V4, src4, ifindex);
                    super::setsockopt(
                        rx.as_raw_fd(),
                        libc::IPPROTO_IP,
                        libc::IP_ADD_MEMBERSHIP,
                        &m,
                    )?;
                }
                let _ =
                    super::setsockopt(rx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf);
                let tx = raw_socket(libc::AF_INET, libc::IPPROTO_RAW)?;
                bind_to_device(&tx, ifname)?;
                let m = mreqn(Ipv4Addr::UNSPECIFIED, src4, ifindex);
                super::setsockopt(tx.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &m)?;
                super::setsockopt(
                    tx.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_LOOP,
                    &zero,
                )?;
                super::setsockopt(
                    tx.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_TTL,
                    &ttl,
                )?;
                Ok(VrrpSocket {
                    rx: register(rx)?,
                    tx: Some(tx),
                    src,
                    ifindex,
                })
            }
            IpAddr::V6(_) => {
                let s = raw_socket(libc::AF_INET6, proto)?;
                let fd = s.as_raw_fd();
                bind_to_device(&s, ifname)?;
                if multicast {
                    let m = libc::ipv6_mreq {
                        ipv6mr_multiaddr: in6(MCAST_V6),
                        ipv6mr_interface: ifindex,
                    };
                    super::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &m)?;
                }
                let _ = super::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf);
                super::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &one)?;
                super::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &one)?;
                super::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &ttl)?;
                super::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
                super::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &zero)?;
                let idx = ifindex as libc::c_int;
                super::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &idx)?;
                Ok(VrrpSocket {
                    rx: register(s)?,
                    tx: None,
                    src,
                    ifindex,
                })
            }
        }
    }

    pub fn source(&self) -> IpAddr {
        self.src
    }

    /// Send one VRRP message to `dst` (the multicast group or a unicast peer).
    pub fn send(&self, dst: IpAddr, msg: &[u8]) -> io::Result<()> {
        match (self.src, dst, &self.tx) {
            (IpAddr::V4(src), IpAddr::V4(dst), Some(tx)) => {
                let d = ipv4_datagram(src, dst, msg);
                // SAFETY: zeroed sockaddr_in, then filled.
                let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_addr.s_addr = u32::from(dst).to_be();
                // SAFETY: d and sa are live for the call.
                let n = unsafe {
                    libc::sendto(
                        tx.as_raw_fd(),
                        d.as_ptr() as *const libc::c_void,
                        d.len(),
                        0,
                        &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            (IpAddr::V6(src), IpAddr::V6(dst), None) => {
                send6(self.rx.get_ref().as_raw_fd(), self.ifindex, src, dst, msg)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "destination of another address family",
            )),
        }
    }

    /// Wait until a datagram can be read.
    pub async fn readable(&self) -> io::Result<()> {
        let mut g = self.rx.readable().await?;
        g.clear_ready();
        Ok(())
    }

    /// Read one datagram without waiting: `Ok(None)` when there is none.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
        let fd = self.rx.get_ref().as_raw_fd();
        let r = match self.src {
            IpAddr::V4(_) => {
                // SAFETY: buf is writable for its length.
                let n = unsafe {
                    libc::recv(
                        fd,
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        libc::MSG_TRUNC | libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(Datagram::V4 { len: n as usize })
                }
            }
            IpAddr::V6(_) => recv6(fd, buf),
        };
        match r {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// sendmsg(2) with IPV6_PKTINFO choosing the source address and interface.
pub(crate) fn send6(
    fd: libc::c_int,
    ifindex: u32,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg: &[u8],
) -> io::Result<()> {
    // SAFETY: zeroed sockaddr_in6, then filled.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr = in6(dst);
    sa.sin6_scope_id = ifindex;
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    let mut cbuf = [0u64; 8];
    let info = libc::in6_pktinfo {
        ipi6_addr: in6(src),
        ipi6_ifindex: ifindex,
    };
    // SAFETY: a zeroed msghdr, then pointed at live buffers; the CMSG macros stay inside cbuf,
    // which is 64 bytes, more than CMSG_SPACE(sizeof in6_pktinfo) = 40.
    unsafe {
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_name = &mut sa as *mut libc::sockaddr_in6 as *mut libc::c_void;
        m.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        m.msg_controllen =
            libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&m);
        (*c).cmsg_level = libc::IPPROTO_IPV6;
        (*c).cmsg_type = libc::IPV6_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in6_pktinfo, info);
        if libc::sendmsg(fd, &m, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn recv6(fd: libc::c_int, buf: &mut [u8]) -> io::Result<Datagram> {
    // SAFETY: recvmsg into live buffers; the ancillary data is walked with the CMSG macros
    // within msg_controllen, and read unaligned.
    unsafe {
        let mut name: libc::sockaddr_in6 = std::mem::zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 32];
        let mut m: libc::msghdr = std::mem::zeroed();
        m.msg_name = &mut name as *mut libc::sockaddr_in6 as *mut libc::c_void;
        m.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        m.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = libc::recvmsg(fd, &mut m, libc::MSG_TRUNC | libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut dst = None;
        let mut hop_limit = None;
        let mut c = libc::CMSG_FIRSTHDR(&m);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 {
                if (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                    let h = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                    hop_limit = u8::try_from(h).ok();
                } else if (*c).cmsg_type == libc::IPV6_PKTINFO {
                    let p =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in6_pktinfo);
                    dst = Some(Ipv6Addr::from(p.ipi6_addr.s6_addr));
                }
            }
            c = libc::CMSG_NXTHDR(&m, c);
        }
        Ok(Datagram::V6 {
            len: n as usize,
            src: Ipv6Addr::from(name.sin6_addr.s6_addr),
            dst,
            hop_limit,
        })
    }
}
