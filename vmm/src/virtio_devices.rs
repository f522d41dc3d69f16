//! virtio-mmio devices of one VM: their MMIO windows and IRQs (from an
//! allocator over the region `memory.rs` reserves), their ioeventfds and
//! irqfds, and the `virtio_mmio.device=` parameters that tell the guest
//! kernel where they are.

use std::sync::{Arc, Mutex};

use devices::virtio::mmio::{MmioTransport, MMIO_WINDOW_SIZE, QUEUE_NOTIFY_OFFSET};
use devices::virtio::{Interrupt, VirtioDevice};
use devices::MmioBus;
use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::memory::{GuestMemory, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};

/// IRQs free for virtio devices: the ISA lines the MP table routes to the
/// IOAPIC that no legacy device uses (0 PIT, 1 keyboard, 2 cascade, 3/4
/// serial, 8 RTC are taken).
pub const VIRTIO_IRQS: [u32; 10] = [5, 6, 7, 9, 10, 11, 12, 13, 14, 15];

/// Error placing or wiring a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No MMIO window or IRQ left.
    #[error("too many virtio devices: at most {} (one IRQ each)", VIRTIO_IRQS.len())]
    Exhausted,
    /// KVM refused an irqfd/ioeventfd.
    #[error("KVM: {what}: {source}")]
    Kvm {
        /// The step.
        what: &'static str,
        /// The cause.
        source: kvm_ioctls::Error,
    },
    /// A host resource.
    #[error("{0}")]
    Host(String),
}

/// Hands out MMIO windows and IRQs, in order.
#[derive(Debug)]
pub struct MmioAllocator {
    next_base: u64,
    next_irq: usize,
}

impl Default for MmioAllocator {
    fn default() -> Self {
        Self {
            next_base: VIRTIO_MMIO_START,
            next_irq: 0,
        }
    }
}

impl MmioAllocator {
    /// The next (window base, IRQ).
    pub fn allocate(&mut self) -> Result<(u64, u32), DeviceError> {
        let irq = *VIRTIO_IRQS
            .get(self.next_irq)
            .ok_or(DeviceError::Exhausted)?;
        if self.next_base + MMIO_WINDOW_SIZE > VIRTIO_MMIO_START + VIRTIO_MMIO_SIZE {
            return Err(DeviceError::Exhausted);
        }
        let base = self.next_base;
        self.next_base += MMIO_WINDOW_SIZE;
        self.next_irq += 1;
        Ok((base, irq))
    }
}

/// The kernel parameter announcing a device.
pub fn cmdline_param(base: u64, irq: u32) -> String {
    format!("virtio_mmio.device=4K@{base:#x}:{irq}")
}

/// Places `device` on the bus: window + IRQ, irqfd, one ioeventfd per queue
/// (QueueNotify with datamatch = queue index). Returns the kernel parameter.
pub fn attach(
    vm: &VmFd,
    mem: &GuestMemory,
    bus: &mut MmioBus,
    alloc: &mut MmioAllocator,
    device: Box<dyn VirtioDevice>,
) -> Result<String, DeviceError> {
    let (base, irq) = alloc.allocate()?;
    let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| DeviceError::Host(e.to_string()))?;
    vm.register_irqfd(&irqfd, irq)
        .map_err(|source| DeviceError::Kvm {
            what: "KVM_IRQFD",
            source,
        })?;
    let transport = MmioTransport::new(device, mem.clone(), Arc::new(Interrupt::new(irqfd)))
        .map_err(|e| DeviceError::Host(e.to_string()))?;
    for (i, evt) in transport.queue_events().iter().enumerate() {
        vm.register_ioevent(
            evt,
            &IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET),
            i as u32,
        )
        .map_err(|source| DeviceError::Kvm {
            what: "KVM_IOEVENTFD",
            source,
        })?;
    }
    bus.insert(Arc::new(Mutex::new(transport)), base, MMIO_WINDOW_SIZE)
        .map_err(|e| DeviceError::Host(e.to_string()))?;
    Ok(cmdline_param(base, irq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_windows_and_irqs_until_exhausted() {
        let mut a = MmioAllocator::default();
        let mut seen = vec![];
        for _ in 0..VIRTIO_IRQS.len() {
            seen.push(a.allocate().unwrap());
        }
        assert_eq!(seen[0], (VIRTIO_MMIO_START, 5));
        assert_eq!(seen[1], (VIRTIO_MMIO_START + 0x1000, 6));
        assert!(seen.iter().all(|(_, irq)| *irq != 4 && *irq != 8));
        assert!(matches!(a.allocate(), Err(DeviceError::Exhausted)));
        assert_eq!(
            cmdline_param(0xd000_0000, 5),
            "virtio_mmio.device=4K@0xd0000000:5"
        );
    }
}
