//! Just enough of the i8042 keyboard controller for Linux's `reboot=k`.
//!
//! Linux resets the machine by writing the "pulse reset line" command 0xFE to
//! the command port 0x64 after polling the status register until the input
//! buffer is empty. Status reads therefore return "input and output buffers
//! empty, system flag set"; the data port reads 0. No keyboard is emulated.

use crate::bus::{BusEvent, PioDevice};

/// First port of the controller (data port 0x60).
pub const I8042_BASE: u16 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_LEN: u16 = 5;

const DATA_OFFSET: u16 = 0;
const COMMAND_OFFSET: u16 = 4;
/// Status bit 2: system flag (self-test passed). Both buffers empty.
const STATUS_IDLE: u8 = 0x04;
const CMD_RESET_CPU: u8 = 0xfe;

/// The i8042 controller.
#[derive(Debug, Default)]
pub struct I8042 {
    resets_requested: u64,
}

impl I8042 {
    /// A controller with both buffers empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many reset requests the guest made.
    pub fn resets_requested(&self) -> u64 {
        self.resets_requested
    }
}

impl PioDevice for I8042 {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let value = match offset {
            COMMAND_OFFSET => STATUS_IDLE,
            DATA_OFFSET => 0,
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> BusEvent {
        match (offset, data.first()) {
            (COMMAND_OFFSET, Some(&CMD_RESET_CPU)) => {
                self.resets_requested += 1;
                BusEvent::Reset
            }
            // Everything else (keyboard data, 0xD0 "read output port", ...)
            // needs no answer for a guest that only wants to reset.
            _ => BusEvent::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_requests_reboot() {
        let mut k = I8042::new();
        assert_eq!(k.write(COMMAND_OFFSET, &[0xfe]), BusEvent::Reset);
        assert_eq!(k.resets_requested(), 1);
    }

    #[test]
    fn other_writes_are_ignored() {
        let mut k = I8042::new();
        assert_eq!(k.write(COMMAND_OFFSET, &[0xd0]), BusEvent::None);
        assert_eq!(k.write(DATA_OFFSET, &[0xfe]), BusEvent::None);
        assert_eq!(k.write(COMMAND_OFFSET, &[]), BusEvent::None);
        assert_eq!(k.resets_requested(), 0);
    }

    #[test]
    fn status_reads_idle() {
        let mut k = I8042::new();
        let mut d = [0xaa];
        k.read(COMMAND_OFFSET, &mut d);
        // Input buffer empty (bit 1 clear) so Linux's kb_wait() does not spin.
        assert_eq!(d[0] & 0x02, 0);
        assert_eq!(d[0], STATUS_IDLE);
        let mut d = [0xaa, 0xaa];
        k.read(DATA_OFFSET, &mut d);
        assert_eq!(d, [0, 0]);
    }
}
