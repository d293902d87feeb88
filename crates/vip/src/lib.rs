//! `tandem vip`: a VRRP virtual router (VRRPv2, RFC 3768, with simple-password authentication;
//! VRRPv3, RFC 5798) that stands in a group with keepalived.
//!
//! Pure parts, unit- and property-tested: [`packet`] (codec and checksums), [`machine`] (the
//! RFC 5798 §6.4 state machine, stepped with events and the time, returning actions),
//! [`receive`] (the receiver's checks and drop counters), [`track`] (fall/rise and weights),
//! [`config`] (the `vip:` section). Adapters: [`net`] (raw socket, netlink, gratuitous ARP),
//! [`ready`] (the HTTP readiness probe of `track_router`) and [`daemon`] (the loop that carries
//! the actions out).

pub mod config;
pub mod daemon;
pub mod machine;
pub mod net;
pub mod packet;
pub mod ready;
pub mod receive;
pub mod track;

use std::path::Path;

/// `tandem vip -c router.yml`: run the virtual router of the file's `vip:` section until
/// SIGTERM/SIGINT. Blocking; builds its own single-threaded tokio runtime. Logging is the
/// caller's (a `tracing` subscriber).
pub fn main_entry(config: &Path) -> anyhow::Result<()> {
    let cfg = config::VipConfig::load(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(daemon::run(cfg))
}
