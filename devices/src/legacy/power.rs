//! Power-off port at 0x604.
//!
//! The guest kernel has no ACPI; nimbus's kernel patch powers off with a
//! 16-bit `outw(0x2000, 0x604)`, the SLP_EN|SLP_TYP write QEMU's PC machines
//! use for the ACPI PM1a control register. Anything else written is ignored.

use crate::bus::{BusEvent, PioDevice};

/// Base port of the power-off register.
pub const POWER_OFF_PORT: u16 = 0x604;
/// Width of the register in ports.
pub const POWER_OFF_PORT_LEN: u16 = 2;
/// The value that means "power off".
pub const POWER_OFF_VALUE: u16 = 0x2000;

/// The power-off register.
#[derive(Debug, Default)]
pub struct PowerOffPort;

impl PioDevice for PowerOffPort {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> BusEvent {
        match (offset, data) {
            (0, [lo, hi]) if u16::from_le_bytes([*lo, *hi]) == POWER_OFF_VALUE => {
                BusEvent::PowerOff
            }
            _ => BusEvent::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_16_bit_sleep_write_powers_off() {
        let mut p = PowerOffPort;
        assert_eq!(p.write(0, &[0x00, 0x20]), BusEvent::PowerOff);
        assert_eq!(p.write(0, &[0x00]), BusEvent::None);
        assert_eq!(p.write(1, &[0x20]), BusEvent::None);
        assert_eq!(p.write(0, &[0x00, 0x21]), BusEvent::None);
        assert_eq!(p.write(0, &[0x00, 0x20, 0, 0]), BusEvent::None);
        let mut d = [0xaa; 2];
        p.read(0, &mut d);
        assert_eq!(d, [0, 0]);
    }
}
