//! Port I/O bus: maps port ranges to devices.
//!
//! The guest can touch any port with any access width. A port nobody claims
//! reads as all-ones (what a floating ISA bus returns) and swallows writes;
//! nothing a guest does here can make the VMM fail.

use std::sync::{Arc, Mutex};

/// What a device access asks of the VMM, beyond the access itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BusEvent {
    /// Nothing: the access was handled by the device.
    #[default]
    None,
    /// The guest asked for a reset (reboot).
    Reset,
    /// The guest asked to be powered off.
    PowerOff,
}

/// A device on the port I/O bus.
///
/// `offset` is relative to the base of the range the device was inserted at;
/// `data` is the access (1, 2 or 4 bytes, little endian).
pub trait PioDevice: Send {
    /// Fills `data` for a guest `in` instruction.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Handles a guest `out` instruction.
    fn write(&mut self, offset: u16, data: &[u8]) -> BusEvent;
}

/// A shared handle to a device on the bus.
pub type SharedPioDevice = Arc<Mutex<dyn PioDevice>>;

/// Error when inserting a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one that is already taken.
    #[error("port range {base:#x}+{len} overlaps an existing device")]
    Overlap {
        /// First port of the rejected range.
        base: u16,
        /// Length of the rejected range.
        len: u16,
    },
    /// The range is empty or runs past port 0xffff.
    #[error("port range {base:#x}+{len} is empty or past 0xffff")]
    InvalidRange {
        /// First port of the rejected range.
        base: u16,
        /// Length of the rejected range.
        len: u16,
    },
}

struct Entry {
    base: u16,
    len: u16,
    device: SharedPioDevice,
}

/// Maps port ranges to devices. Lookups are a linear scan: the bus holds a
/// handful of legacy devices, so a tree would only cost memory.
#[derive(Default)]
pub struct PioBus {
    entries: Vec<Entry>,
}

impl PioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at ports `base..base+len`.
    pub fn insert(&mut self, device: SharedPioDevice, base: u16, len: u16) -> Result<(), BusError> {
        let end = u32::from(base) + u32::from(len);
        if len == 0 || end > 0x1_0000 {
            return Err(BusError::InvalidRange { base, len });
        }
        let overlaps = self.entries.iter().any(|e| {
            let e_end = u32::from(e.base) + u32::from(e.len);
            u32::from(base) < e_end && u32::from(e.base) < end
        });
        if overlaps {
            return Err(BusError::Overlap { base, len });
        }
        self.entries.push(Entry { base, len, device });
        Ok(())
    }

    fn find(&self, port: u16) -> Option<(&SharedPioDevice, u16)> {
        self.entries.iter().find_map(|e| {
            let offset = port.checked_sub(e.base)?;
            (offset < e.len).then_some((&e.device, offset))
        })
    }

    /// A guest `in` from `port`. Unclaimed ports read as all-ones.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match self.find(port) {
            Some((dev, offset)) => match dev.lock() {
                Ok(mut d) => d.read(offset, data),
                Err(_) => data.fill(0xff),
            },
            None => data.fill(0xff),
        }
    }

    /// A guest `out` to `port`. Unclaimed ports ignore the write.
    pub fn write(&self, port: u16, data: &[u8]) -> BusEvent {
        match self.find(port) {
            Some((dev, offset)) => match dev.lock() {
                Ok(mut d) => d.write(offset, data),
                Err(_) => BusEvent::None,
            },
            None => BusEvent::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder {
        last: Vec<(u16, Vec<u8>)>,
    }

    impl PioDevice for Recorder {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) -> BusEvent {
            self.last.push((offset, data.to_vec()));
            BusEvent::None
        }
    }

    #[test]
    fn routes_by_range_and_offset() {
        let dev = Arc::new(Mutex::new(Recorder { last: vec![] }));
        let mut bus = PioBus::new();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut d = [0u8; 1];
        bus.read(0x3fa, &mut d);
        assert_eq!(d, [2]);
        bus.write(0x3ff, &[9]);
        assert_eq!(dev.lock().unwrap().last, vec![(7, vec![9])]);
    }

    #[test]
    fn unclaimed_ports_float_high_and_ignore_writes() {
        let bus = PioBus::new();
        let mut d = [0u8; 4];
        bus.read(0x80, &mut d);
        assert_eq!(d, [0xff; 4]);
        assert_eq!(bus.write(0xcf8, &[1, 2, 3, 4]), BusEvent::None);
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = PioBus::new();
        let a = Arc::new(Mutex::new(Recorder { last: vec![] }));
        bus.insert(a.clone(), 0x60, 5).unwrap();
        assert_eq!(
            bus.insert(a.clone(), 0x64, 1),
            Err(BusError::Overlap { base: 0x64, len: 1 })
        );
        assert!(bus.insert(a.clone(), 0xfff0, 0x20).is_err());
        assert!(bus.insert(a.clone(), 0x10, 0).is_err());
        bus.insert(a, 0x65, 1).unwrap();
    }
}
