//! virtio-blk backed by a raw image file.

pub mod device;
mod event_handler;
pub mod request;

pub use device::{Block, BlockConfig, BlockError};
