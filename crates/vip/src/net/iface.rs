//! Facts about a network interface, read with getifaddrs(3) (netlink underneath).

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// Administratively up and with carrier (IFF_UP and IFF_RUNNING).
    pub running: bool,
    pub addresses: Vec<IpAddr>,
}

/// Look up one interface by name.
pub fn lookup(name: &str) -> io::Result<Interface> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name"))?;
    // SAFETY: cname is a valid C string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {name:?} in this network namespace"),
        ));
    }
    let mut out = Interface {
        name: name.to_string(),
        index,
        mac: [0; 6],
        running: false,
        addresses: Vec::new(),
    };
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills head with a list we free below.
    super::cvt(unsafe { libc::getifaddrs(&mut head) })?;
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string.
        let n = unsafe { CStr::from_ptr(ifa.ifa_name) };
        if n.to_bytes() != name.as_bytes() || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and its family says which sockaddr it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        match family {
            libc::AF_PACKET => {
                // SAFETY: an AF_PACKET entry holds a sockaddr_ll.
                let ll = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_ll) };
                if ll.sll_halen == 6 {
                    out.mac.copy_from_slice(&ll.sll_addr[..6]);
                }
                let f = ifa.ifa_flags as libc::c_int;
                out.running = f & libc::IFF_UP != 0 && f & libc::IFF_RUNNING != 0;
            }
            libc::AF_INET => {
                // SAFETY: an AF_INET entry holds a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.addresses.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 entry holds a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.addresses
                    .push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    // SAFETY: head came from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Whether the named interface exists, is up and has carrier.
pub fn is_running(name: &str) -> bool {
    lookup(name).map(|i| i.running).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_found() {
        let lo = super::lookup("lo").unwrap();
        assert!(lo.index > 0);
        assert!(super::lookup("no-such-if0").is_err());
    }
}
