//! virtio 1.x devices over the MMIO transport.
//!
//! The transport ([`mmio::MmioTransport`]) owns the register file and the
//! status state machine; a device ([`VirtioDevice`]) owns its configuration
//! space and, once the driver sets DRIVER_OK, a worker thread that processes
//! its queues. Queue kicks reach that thread through ioeventfds and used
//! buffers are signalled through an irqfd, so the vCPU threads are only
//! involved in register accesses.

pub mod block;
pub mod mmio;
pub mod net;
pub mod rate_limiter;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

pub use mmio::MmioTransport;

/// Guest memory as devices see it.
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Device IDs (virtio 1.2, 5 "Device Types").
pub const TYPE_NET: u32 = 1;
/// Block device ID.
pub const TYPE_BLOCK: u32 = 2;

/// VIRTIO_F_VERSION_1: the modern interface; required by this transport.
pub const F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_F_RING_EVENT_IDX: the driver and device tell each other, through
/// the rings, up to which index they want to be notified. A device offers it
/// only if its queue loops re-arm notifications (`enable_notification`).
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
/// VIRTIO_F_RING_INDIRECT_DESC: a chain may be a table of descriptors in
/// guest memory, so a request of many segments takes one ring slot.
/// virtio-queue's chain iterator follows (and bounds) the table.
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready; queues are live.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// InterruptStatus bit: a queue has new used buffers.
pub const INT_VRING: u32 = 1;
/// InterruptStatus bit: the configuration (or the status) changed.
pub const INT_CONFIG: u32 = 2;

/// The device's interrupt line: the InterruptStatus register plus the irqfd
/// that raises the guest IRQ, and the flag a device thread raises when the
/// driver broke the queue protocol (read back as DEVICE_NEEDS_RESET).
#[derive(Debug)]
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
    broken: AtomicBool,
}

impl Interrupt {
    /// An interrupt raised by writing to `irqfd` (registered with KVM by the
    /// VMM).
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irqfd,
            broken: AtomicBool::new(false),
        }
    }

    /// Raises the interrupt with `bit` (INT_VRING or INT_CONFIG) pending.
    pub fn trigger(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irqfd.write(1) {
            tracing::warn!("virtio irqfd write failed: {e}");
        }
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Clears everything (device reset).
    pub fn reset(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.broken.store(false, Ordering::SeqCst);
    }

    /// A device thread found the queues unusable (e.g. the used ring is no
    /// longer in guest memory): report DEVICE_NEEDS_RESET to the driver.
    pub fn device_broken(&self) {
        if !self.broken.swap(true, Ordering::SeqCst) {
            self.trigger(INT_CONFIG);
        }
    }

    /// Whether [`Interrupt::device_broken`] was called since the last reset.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct ActivateContext {
    /// Guest memory.
    pub mem: GuestMemory,
    /// The queues, configured and validated by the transport.
    pub queues: Vec<Queue>,
    /// One notification eventfd per queue (registered as ioeventfds).
    pub queue_events: Vec<EventFd>,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
    /// Features the driver accepted.
    pub acked_features: u64,
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver handed over a queue layout that does not fit.
    #[error("bad queue configuration: {0}")]
    BadQueue(String),
    /// A host resource (thread, epoll, TAP ioctl) failed.
    #[error("{what}: {source}")]
    Host {
        /// The step.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
}

/// A virtio device model behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (TYPE_BLOCK, TYPE_NET).
    fn device_type(&self) -> u32;
    /// Features offered to the driver (VERSION_1 is added by the transport).
    fn features(&self) -> u64;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space (out-of-range bytes read
    /// as zero).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the configuration space (ignored unless the device has
    /// writable fields).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts processing the queues (DRIVER_OK).
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// Stops processing and forgets the queues (status written to 0). The
    /// device must be ready for another `activate`.
    fn reset(&mut self);
}

/// Reads `data.len()` bytes of a configuration structure `bytes` at
/// `offset`; bytes past its end read as zero.
pub fn read_config_bytes(bytes: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = bytes.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
