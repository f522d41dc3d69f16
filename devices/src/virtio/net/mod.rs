//! virtio-net backed by a TAP device.

pub mod device;
mod event_handler;
pub mod frame;
pub mod tap;

pub use device::{MacAddr, Net, NetConfig, NetError};
