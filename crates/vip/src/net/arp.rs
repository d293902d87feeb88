//! Gratuitous ARP (RFC 5227 §3 "ARP Announcement"; RFC 5798 §6.4.2 asks for one per address on
//! becoming Master) on an AF_PACKET socket.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = 0x0806;

/// A broadcast ARP request whose sender and target address are both `ip`: every host on the
/// link that has `ip` in its neighbour table updates it to `mac` at once.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 60] {
    let mut f = [0u8; 60]; // the minimum Ethernet frame (without FCS): zero padding after 42
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // target hardware address stays zero
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Send one gratuitous ARP for each address out of interface `ifindex`.
pub fn announce(ifindex: u32, mac: [u8; 6], ips: &[Ipv4Addr]) -> io::Result<()> {
    // SAFETY: plain socket(2).
    let fd = super::cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    })?;
    // SAFETY: fd is a fresh socket we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_ll, then filled.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = ETH_P_ARP.to_be();
    sa.sll_ifindex = ifindex as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for ip in ips {
        let f = garp_frame(mac, *ip);
        // SAFETY: f and sa are live for the call.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                f.as_ptr() as *const libc::c_void,
                f.len(),
                0,
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn frame_layout() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = super::garp_frame(mac, "10.99.0.100".parse().unwrap());
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[22..28], &mac);
        assert_eq!(&f[28..32], &[10, 99, 0, 100]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[10, 99, 0, 100]);
    }
}
