//! tandem: PostgreSQL high availability in one binary. The library holds the I/O adapters
//! (etcd, PostgreSQL, REST) and the agent that wires them to `tandem_core::ha::decide`.

pub mod config;
pub mod status;
