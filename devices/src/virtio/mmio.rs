//! The virtio-mmio transport, version 2 ("modern") register layout
//! (virtio 1.2, 4.2.2).
//!
//! Every register access is validated here: writes that the status state
//! machine does not allow at that point are ignored, feature negotiation
//! refuses features the device did not offer, and DRIVER_OK only activates
//! the device when every queue the driver enabled lies inside guest memory.
//! Anything else sets DEVICE_NEEDS_RESET; nothing a driver writes can make
//! the VMM fail.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{
    status, ActivateContext, GuestMemory, Interrupt, VirtioDevice, F_RING_EVENT_IDX, F_VERSION_1,
};
use super::{INT_CONFIG, INT_VRING};
use crate::mmio_bus::MmioDevice;

/// Size of one device's MMIO window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// "virt" in little endian.
pub const MAGIC_VALUE: u32 = 0x7472_6976;
/// Transport version 2 = virtio 1.x.
pub const VERSION: u32 = 2;
/// Our vendor ID ("NIMB" would not fit a PCI vendor space; any value works).
pub const VENDOR_ID: u32 = 0x4e49_4d42;

/// Register offsets.
pub mod reg {
    #![allow(missing_docs)]
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Offset of QueueNotify, where the VMM registers the ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = reg::QUEUE_NOTIFY;

/// One virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    queue_events: Vec<EventFd>,
    queues: Vec<Queue>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    config_generation: u32,
    active: bool,
    /// The driver wrote a queue size the queue refused: activation fails.
    bad_queue_size: bool,
}

/// Error building a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A queue size the device asked for is not a power of two in 1..=32768.
    #[error("device queue {index}: invalid maximum size {size}")]
    QueueSize {
        /// Queue index.
        index: usize,
        /// Size asked for.
        size: u16,
    },
    /// An eventfd could not be created or cloned.
    #[error("queue eventfd: {0}")]
    EventFd(std::io::Error),
}

impl MmioTransport {
    /// Wraps `device`. `interrupt` carries the irqfd the VMM registered for
    /// the device's IRQ.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
    ) -> Result<Self, TransportError> {
        let mut queues = Vec::new();
        let mut queue_events = Vec::new();
        for (index, &size) in device.queue_max_sizes().iter().enumerate() {
            queues.push(Queue::new(size).map_err(|_| TransportError::QueueSize { index, size })?);
            queue_events.push(EventFd::new(libc::EFD_NONBLOCK).map_err(TransportError::EventFd)?);
        }
        Ok(Self {
            device,
            mem,
            interrupt,
            queue_events,
            queues,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            config_generation: 0,
            active: false,
            bad_queue_size: false,
        })
    }

    /// The per-queue notification eventfds, for the VMM to register as
    /// ioeventfds at `base + QUEUE_NOTIFY_OFFSET` with datamatch = index.
    pub fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device's queues are being processed.
    pub fn is_active(&self) -> bool {
        self.active
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only between FEATURES_OK and DRIVER_OK.
    fn queue_config_allowed(&self) -> bool {
        self.status & (status::FEATURES_OK | status::DRIVER_OK | status::FAILED)
            == status::FEATURES_OK
    }

    fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt.trigger(INT_CONFIG);
        }
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        for q in &mut self.queues {
            q.reset();
        }
        // Drain kicks that arrived for the old queues.
        for e in &self.queue_events {
            let _ = e.read();
        }
        self.interrupt.reset();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_sel = 0;
        self.bad_queue_size = false;
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // The driver only ever adds bits (2.1.2); anything else is refused.
        if value & self.status != self.status {
            tracing::debug!(
                "virtio-mmio: status {:#x} -> {value:#x} drops bits",
                self.status
            );
            return;
        }
        let added = value & !self.status;
        if added & status::FEATURES_OK != 0 {
            let ok = self.status & status::DRIVER != 0
                && self.acked_features & !self.offered_features() == 0
                && self.acked_features & F_VERSION_1 != 0;
            if !ok {
                // Leave FEATURES_OK clear: the driver reads it back and gives up.
                self.status = value & !status::FEATURES_OK & !status::DRIVER_OK;
                return;
            }
        }
        if added & status::DRIVER_OK != 0 {
            if value & status::FEATURES_OK == 0 {
                self.status = value & !status::DRIVER_OK;
                self.needs_reset();
                return;
            }
            self.status = value;
            self.activate();
            return;
        }
        self.status = value;
    }

    fn activate(&mut self) {
        if self.bad_queue_size {
            tracing::warn!("virtio-mmio: the driver set an invalid queue size");
            self.needs_reset();
            return;
        }
        let mut queues = Vec::with_capacity(self.queues.len());
        let mut events = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            if !q.is_valid(&self.mem) {
                tracing::warn!("virtio-mmio: queue {i} is not ready or outside guest memory");
                self.needs_reset();
                return;
            }
            let Ok(mut copy) = Queue::try_from(q.state()) else {
                self.needs_reset();
                return;
            };
            copy.set_event_idx(self.acked_features & F_RING_EVENT_IDX != 0);
            queues.push(copy);
            match self.queue_events[i].try_clone() {
                Ok(e) => events.push(e),
                Err(e) => {
                    tracing::warn!("virtio-mmio: eventfd clone: {e}");
                    self.needs_reset();
                    return;
                }
            }
        }
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues,
            queue_events: events,
            interrupt: self.interrupt.clone(),
            acked_features: self.acked_features,
        };
        match self.device.activate(ctx) {
            Ok(()) => self.active = true,
            Err(e) => {
                tracing::warn!("virtio device type {}: {e}", self.device.device_type());
                self.needs_reset();
            }
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            reg::MAGIC => MAGIC_VALUE,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| q.max_size().into()),
            reg::QUEUE_READY => self.selected_queue().map_or(0, |q| q.ready().into()),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS if self.interrupt.is_broken() => self.status | status::DEVICE_NEEDS_RESET,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => {
                tracing::debug!("virtio-mmio: read of write-only/unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let features_allowed =
            self.status & (status::DRIVER | status::FEATURES_OK | status::FAILED) == status::DRIVER;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES if features_allowed => match self.driver_features_sel {
                0 => self.acked_features = (self.acked_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.acked_features = (self.acked_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NOTIFY => {
                // Normally caught by the ioeventfd; forward if it was not.
                if let Some(e) = self.queue_events.get(v as usize) {
                    let _ = e.write(1);
                }
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(v & (INT_VRING | INT_CONFIG)),
            reg::STATUS => self.write_status(v),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH
                if self.queue_config_allowed() =>
            {
                let Some(q) = self.queues.get_mut(self.queue_sel as usize) else {
                    return;
                };
                match offset {
                    // An invalid size (not a power of two, too big) is ignored
                    // by the queue and later caught by is_valid.
                    reg::QUEUE_NUM => {
                        let size = u16::try_from(v).ok();
                        if size.map(|s| q.try_set_size(s)).is_none_or(|r| r.is_err()) {
                            self.bad_queue_size = true;
                        }
                    }
                    reg::QUEUE_READY => q.set_ready(v == 1),
                    reg::QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
                    reg::QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
                    reg::QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(v), None),
                    reg::QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(v)),
                    reg::QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(v), None),
                    _ => q.set_used_ring_address(None, Some(v)),
                }
            }
            _ => tracing::debug!(
                "virtio-mmio: write {v:#x} to {offset:#x} ignored (status {:#x})",
                self.status
            ),
        }
    }
}

impl MmioDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        // Registers are 32 bits wide and must be accessed as such (4.2.2.2).
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

impl Drop for MmioTransport {
    fn drop(&mut self) {
        if self.active {
            self.device.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ActivateError;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use vm_memory::GuestAddress;

    struct Dummy {
        activations: Arc<AtomicUsize>,
        resets: Arc<AtomicUsize>,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn features(&self) -> u64 {
            1 << 5
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data);
        }
        fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
            assert_eq!(ctx.queues.len(), 2);
            self.activations.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn reset(&mut self) {
            self.resets.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn transport() -> (MmioTransport, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let a = Arc::new(AtomicUsize::new(0));
        let r = Arc::new(AtomicUsize::new(0));
        let dev = Dummy {
            activations: a.clone(),
            resets: r.clone(),
        };
        let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        (MmioTransport::new(Box::new(dev), mem, irq).unwrap(), a, r)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }
    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut d = [0u8; 4];
        t.read(off, &mut d);
        u32::from_le_bytes(d)
    }

    fn negotiate(t: &mut MmioTransport) {
        w(t, reg::STATUS, status::ACKNOWLEDGE);
        w(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(t, reg::DRIVER_FEATURES_SEL, 1);
        w(t, reg::DRIVER_FEATURES, 1); // VERSION_1
        w(t, reg::DRIVER_FEATURES_SEL, 0);
        w(t, reg::DRIVER_FEATURES, 1 << 5);
        w(
            t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    fn setup_queue(t: &mut MmioTransport, sel: u32, base: u32) {
        w(t, reg::QUEUE_SEL, sel);
        w(t, reg::QUEUE_NUM, 16);
        w(t, reg::QUEUE_DESC_LOW, base);
        w(t, reg::QUEUE_DRIVER_LOW, base + 0x1000);
        w(t, reg::QUEUE_DEVICE_LOW, base + 0x2000);
        w(t, reg::QUEUE_READY, 1);
    }

    const ALL_OK: u32 =
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;

    #[test]
    fn identity_registers() {
        let (mut t, _, _) = transport();
        assert_eq!(r(&mut t, reg::MAGIC), MAGIC_VALUE);
        assert_eq!(r(&mut t, reg::VERSION), 2);
        assert_eq!(r(&mut t, reg::DEVICE_ID), 42);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1 << 5);
        w(&mut t, reg::DEVICE_FEATURES_SEL, 7);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 0);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 16);
        w(&mut t, reg::QUEUE_SEL, 9);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), 0);
        let mut c = [0u8; 2];
        t.read(reg::CONFIG + 3, &mut c);
        assert_eq!(c, [4, 0]);
    }

    #[test]
    fn full_handshake_activates_and_reset_stops() {
        let (mut t, act, rst) = transport();
        negotiate(&mut t);
        assert_ne!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
        setup_queue(&mut t, 0, 0x1_0000);
        setup_queue(&mut t, 1, 0x2_0000);
        w(&mut t, reg::STATUS, ALL_OK);
        assert_eq!(act.load(Ordering::SeqCst), 1);
        assert!(t.is_active());
        // Queue registers are frozen once live.
        w(&mut t, reg::QUEUE_SEL, 0);
        w(&mut t, reg::QUEUE_DESC_LOW, 0xdead_0000);
        assert_eq!(t.queues[0].desc_table(), 0x1_0000);
        w(&mut t, reg::STATUS, 0);
        assert_eq!(rst.load(Ordering::SeqCst), 1);
        assert_eq!(r(&mut t, reg::STATUS), 0);
        assert!(!t.is_active());
        assert!(!t.queues[0].ready());
    }

    #[test]
    fn unoffered_or_legacy_features_refuse_features_ok() {
        let (mut t, _, _) = transport();
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, reg::DRIVER_FEATURES, 1 << 6); // never offered
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);

        let (mut t, _, _) = transport();
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, reg::DRIVER_FEATURES, 1 << 5); // no VERSION_1
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
    }

    #[test]
    fn queue_outside_memory_needs_reset_not_activate() {
        let (mut t, act, _) = transport();
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x1_0000);
        setup_queue(&mut t, 1, 0xfff0_0000); // beyond the 1 MiB of RAM
        w(&mut t, reg::STATUS, ALL_OK);
        assert_eq!(act.load(Ordering::SeqCst), 0);
        assert_ne!(r(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn unready_queue_or_skipped_features_ok_needs_reset() {
        let (mut t, act, _) = transport();
        negotiate(&mut t);
        setup_queue(&mut t, 0, 0x1_0000);
        w(&mut t, reg::STATUS, ALL_OK);
        assert_eq!(act.load(Ordering::SeqCst), 0);
        assert_ne!(r(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);

        let (mut t, act, _) = transport();
        w(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::DRIVER_OK,
        );
        assert_eq!(act.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn hostile_accesses_are_harmless() {
        let (mut t, _, _) = transport();
        // Queue setup before FEATURES_OK is ignored.
        setup_queue(&mut t, 0, 0x1_0000);
        assert!(!t.queues[0].ready());
        // Odd widths and offsets, huge queue selectors, notify of a missing queue.
        t.write(reg::STATUS, &[1]);
        t.write(reg::STATUS + 1, &[1, 2, 3, 4]);
        let mut b = [0u8; 8];
        t.read(reg::MAGIC, &mut b);
        assert_eq!(b, [0; 8]);
        w(&mut t, reg::QUEUE_SEL, u32::MAX);
        w(&mut t, reg::QUEUE_NOTIFY, u32::MAX);
        t.read(u64::MAX - 3, &mut [0u8; 4]);
        t.write(u64::MAX - 3, &[0u8; 4]);
        // Dropping bits from the status is refused.
        negotiate(&mut t);
        w(&mut t, reg::STATUS, status::ACKNOWLEDGE);
        assert_ne!(r(&mut t, reg::STATUS) & status::FEATURES_OK, 0);
        // Bad queue size: activation refused.
        w(&mut t, reg::QUEUE_SEL, 0);
        w(&mut t, reg::QUEUE_NUM, 3);
        setup_queue(&mut t, 1, 0x2_0000);
        w(&mut t, reg::QUEUE_SEL, 0);
        w(&mut t, reg::QUEUE_NUM, 3);
        w(&mut t, reg::QUEUE_READY, 1);
        w(&mut t, reg::STATUS, ALL_OK);
        assert!(!t.is_active());
    }

    #[test]
    fn interrupt_ack_clears_status() {
        let (mut t, _, _) = transport();
        t.interrupt.trigger(INT_VRING);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), INT_VRING);
        w(&mut t, reg::INTERRUPT_ACK, INT_VRING);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
    }
}
