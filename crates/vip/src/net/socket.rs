//! The raw VRRP socket pair for IPv4.
//!
//! - Receive: `socket(AF_INET, SOCK_RAW, 112)` bound to the interface (SO_BINDTODEVICE) and joined
//!   to 224.0.0.18 there. It must stay unbound to an address: a raw socket bound to an address
//!   only sees packets sent to that address. Reads return the IP header, so the TTL is checked.
//! - Send: `socket(AF_INET, SOCK_RAW, IPPROTO_RAW)`, which never receives and takes the IP header
//!   from us: TTL 255, TOS 0xC0, protocol 112, our primary address as source (the v3 checksum
//!   covers it). Multicast goes out of the interface (IP_MULTICAST_IF) and is not looped back.

use crate::packet::{ipv4_datagram, MCAST_V4};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct VrrpSocket {
    rx: AsyncFd<OwnedFd>,
    tx: OwnedFd,
    src: Ipv4Addr,
}

fn raw_socket(proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = super::cvt(unsafe {
        libc::socket(
            libc::AF_INET,
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

impl VrrpSocket {
    /// Open both sockets on `ifname` (index `ifindex`) with `src` as our address. Joins the
    /// multicast group unless `multicast` is false (unicast peers only).
    pub fn open(ifname: &str, ifindex: u32, src: Ipv4Addr, multicast: bool) -> io::Result<Self> {
        let rx = raw_socket(libc::c_int::from(crate::packet::IPPROTO_VRRP))?;
        bind_to_device(&rx, ifname)?;
        if multicast {
            let m = mreqn(MCAST_V4, src, ifindex);
            super::setsockopt(
                rx.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_ADD_MEMBERSHIP,
                &m,
            )?;
        }
        let rcvbuf: libc::c_int = 256 * 1024;
        let _ = super::setsockopt(rx.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &rcvbuf);

        let tx = raw_socket(libc::IPPROTO_RAW)?;
        bind_to_device(&tx, ifname)?;
        let m = mreqn(Ipv4Addr::UNSPECIFIED, src, ifindex);
        super::setsockopt(tx.as_raw_fd(), libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &m)?;
        let zero: libc::c_int = 0;
        super::setsockopt(
            tx.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_LOOP,
            &zero,
        )?;
        let ttl: libc::c_int = 255;
        super::setsockopt(
            tx.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_TTL,
            &ttl,
        )?;
        Ok(VrrpSocket {
            // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open while registered.
            rx: unsafe { AsyncFd::register_with_interest(rx, Interest::READABLE) }
                .map_err(|e| io::Error::other(e.to_string()))?,
            tx,
            src,
        })
    }

    pub fn source(&self) -> Ipv4Addr {
        self.src
    }

    /// Send one VRRP message to `dst` (224.0.0.18 or a unicast peer).
    pub fn send(&self, dst: Ipv4Addr, msg: &[u8]) -> io::Result<()> {
        let d = ipv4_datagram(self.src, dst, msg);
        // SAFETY: zeroed sockaddr_in, then filled.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(dst).to_be();
        // SAFETY: d and sa are live for the call.
        let n = unsafe {
            libc::sendto(
                self.tx.as_raw_fd(),
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

    /// Wait until a datagram can be read.
    pub async fn readable(&self) -> io::Result<()> {
        let mut g = self.rx.readable().await?;
        g.clear_ready();
        Ok(())
    }

    /// Read one datagram without waiting: `Ok(None)` when there is none. The length returned is
    /// the datagram's real length (MSG_TRUNC), which may exceed `buf`.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is writable for its length.
        let n = unsafe {
            libc::recv(
                self.rx.get_ref().as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(n as usize))
    }
}
