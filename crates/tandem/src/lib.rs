//! tandem: PostgreSQL high availability in one binary. The library holds the I/O adapters
//! (etcd, PostgreSQL, REST) and the agent that wires them to `tandem_core::ha::decide`.

pub mod agent;
pub mod api;
pub mod callbacks;
pub mod certs;
pub mod cli;
pub mod config;
pub mod control;
pub mod dcs;
pub mod demo;
pub mod fence;
pub mod lab;
pub mod listing;
pub mod peer;
pub mod pg;
pub mod proxy;
pub mod status;
pub mod tlscheck;
pub mod vip_leader;
