//! Memory-mapped I/O bus: maps guest-physical ranges to devices.
//!
//! Only accesses KVM could not complete in the kernel arrive here (queue
//! notifications go through ioeventfd and never do). An address nobody claims
//! reads as all-ones and swallows writes, like the PIO bus.

use std::sync::{Arc, Mutex};

/// A device on the MMIO bus. `offset` is relative to the base of its window;
/// `data` is the access (1, 2, 4 or 8 bytes, little endian).
pub trait MmioDevice: Send {
    /// Fills `data` for a guest load.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a guest store.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A shared handle to a device on the bus.
pub type SharedMmioDevice = Arc<Mutex<dyn MmioDevice>>;

/// Error when inserting a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MmioBusError {
    /// The new window overlaps one that is already taken.
    #[error("MMIO window {base:#x}+{len:#x} overlaps an existing device")]
    Overlap {
        /// First address of the rejected window.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// The window is empty or wraps around the address space.
    #[error("MMIO window {base:#x}+{len:#x} is empty or wraps")]
    InvalidRange {
        /// First address of the rejected window.
        base: u64,
        /// Its length.
        len: u64,
    },
}

struct Entry {
    base: u64,
    len: u64,
    device: SharedMmioDevice,
}

/// Maps MMIO windows to devices (a handful: a linear scan is enough).
#[derive(Default)]
pub struct MmioBus {
    entries: Vec<Entry>,
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `base..base+len`.
    pub fn insert(
        &mut self,
        device: SharedMmioDevice,
        base: u64,
        len: u64,
    ) -> Result<(), MmioBusError> {
        let Some(end) = base.checked_add(len).filter(|_| len > 0) else {
            return Err(MmioBusError::InvalidRange { base, len });
        };
        if self
            .entries
            .iter()
            .any(|e| base < e.base + e.len && e.base < end)
        {
            return Err(MmioBusError::Overlap { base, len });
        }
        self.entries.push(Entry { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&SharedMmioDevice, u64)> {
        self.entries.iter().find_map(|e| {
            let offset = addr.checked_sub(e.base)?;
            (offset < e.len).then_some((&e.device, offset))
        })
    }

    /// A guest load from `addr`; `false` if no device claims it (the data is
    /// then all-ones).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((dev, offset)) => {
                match dev.lock() {
                    Ok(mut d) => d.read(offset, data),
                    Err(_) => data.fill(0xff),
                }
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// A guest store to `addr`; `false` if no device claims it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((dev, offset)) => {
                if let Ok(mut d) = dev.lock() {
                    d.write(offset, data);
                }
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl MmioDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_and_floats() {
        let dev = Arc::new(Mutex::new(Echo(vec![])));
        let mut bus = MmioBus::new();
        bus.insert(dev.clone(), 0xd000_0000, 0x1000).unwrap();
        let mut d = [0u8; 4];
        assert!(bus.read(0xd000_0070, &mut d));
        assert_eq!(d, [0x70; 4]);
        assert!(bus.write(0xd000_0fff, &[1]));
        assert!(!bus.read(0xd000_1000, &mut d));
        assert_eq!(d, [0xff; 4]);
        assert_eq!(dev.lock().unwrap().0, vec![(0xfff, vec![1])]);
    }

    #[test]
    fn rejects_overlap_and_wrap() {
        let dev = Arc::new(Mutex::new(Echo(vec![])));
        let mut bus = MmioBus::new();
        bus.insert(dev.clone(), 0x1000, 0x1000).unwrap();
        assert!(bus.insert(dev.clone(), 0x1fff, 1).is_err());
        assert!(bus.insert(dev.clone(), u64::MAX, 2).is_err());
        assert!(bus.insert(dev.clone(), 0x5000, 0).is_err());
        bus.insert(dev, 0x2000, 0x1000).unwrap();
    }
}
