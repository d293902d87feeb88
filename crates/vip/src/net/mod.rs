//! The adapters: interface facts (getifaddrs), netlink address changes, gratuitous ARP on a
//! packet socket, and the raw VRRP socket. Linux only; each needs CAP_NET_ADMIN or CAP_NET_RAW.

pub mod arp;
pub mod iface;
pub mod nd;
pub mod netlink;
pub mod socket;

use std::io;

/// `Err(last_os_error)` when a libc call returned -1.
pub(crate) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// setsockopt(2) with a value of plain C data (an int, a struct); tandem's router uses it too.
pub fn setsockopt<T>(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: value points to a live T of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}
