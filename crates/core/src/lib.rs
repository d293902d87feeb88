//! tandem's pure core: the cluster model, the values stored in etcd (Patroni's format),
//! the dynamic configuration and timing rules, and `ha::decide`.
//!
//! Nothing in this crate reads a clock, a socket or a file: callers pass time and state in,
//! and get decisions out. That is what makes every branch unit-testable.

pub mod cluster;
pub mod dynamic;
pub mod ha;
pub mod lsn;
pub mod pgparams;
pub mod sync;
pub mod time;
