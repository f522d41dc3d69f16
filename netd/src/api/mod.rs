//! netd's API: a Unix socket (mode 0600) speaking one JSON object per line.

pub mod client;
pub mod protocol;
pub mod server;
