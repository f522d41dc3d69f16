//! Device models plugged into nimbus-vmm.
//!
//! Devices know nothing of the VMM that hosts them: they are driven through
//! the [`bus::PioBus`] (port I/O) and report guest requests that only the VMM
//! can carry out (reset, power-off) as [`bus::BusEvent`]s. Each one is tested
//! here on its own, without KVM.

pub mod bus;
pub mod legacy;
pub mod mmio_bus;
pub mod virtio;

pub use bus::{BusEvent, PioBus, PioDevice};
pub use mmio_bus::{MmioBus, MmioDevice};
