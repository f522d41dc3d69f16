//! 8250 UART (COM1, ports 0x3f8..0x3ff) as the guest console.
//!
//! The register model is vm-superio's `Serial`; this module wires it to an
//! interrupt `EventFd` (registered by the VMM as an irqfd for GSI 4) and to
//! any `Write` (stdout or a file). Host input is pushed in with
//! [`SerialConsole::enqueue_input`]; [`ConsoleEscape`] filters the
//! `Ctrl-A x` quit sequence out of a terminal's input stream.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{BusEvent, PioDevice};

/// Base port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1 spans eight ports.
pub const COM1_LEN: u16 = 8;
/// The ISA IRQ (and GSI) of COM1.
pub const COM1_IRQ: u32 = 4;

/// Raises the serial interrupt by writing to an `EventFd` (an irqfd).
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps `evt`; the VMM registers the same eventfd with KVM.
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }
}

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Where console output goes.
pub type ConsoleOutput = Box<dyn Write + Send>;

/// The guest's serial console.
pub struct SerialConsole {
    serial: Serial<EventFdTrigger, NoEvents, ConsoleOutput>,
    output_errors: u64,
}

impl SerialConsole {
    /// A UART that interrupts through `irq` and writes to `out`.
    pub fn new(irq: EventFd, out: ConsoleOutput) -> Self {
        Self {
            serial: Serial::new(EventFdTrigger::new(irq), out),
            output_errors: 0,
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the
    /// receive FIFO (the rest must be offered again later).
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        let room = self.serial.fifo_capacity().min(input.len());
        if room == 0 {
            return 0;
        }
        match self.serial.enqueue_raw_bytes(&input[..room]) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("serial input dropped: {e}");
                0
            }
        }
    }

    /// How many console writes failed (a closed pipe, a full disk).
    pub fn output_errors(&self) -> u64 {
        self.output_errors
    }
}

impl PioDevice for SerialConsole {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.serial.read(off);
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> BusEvent {
        if let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) {
            if let Err(e) = self.serial.write(off, value) {
                // Losing console output must not stop the guest.
                if self.output_errors == 0 {
                    tracing::warn!("serial console output failed: {e}");
                }
                self.output_errors += 1;
            }
        }
        BusEvent::None
    }
}

/// Ctrl-A, the escape key (as in QEMU and screen).
pub const ESCAPE_KEY: u8 = 0x01;

/// What to do with a chunk of terminal input.
#[derive(Debug, PartialEq, Eq)]
pub enum EscapeAction {
    /// Forward these bytes to the guest.
    Forward(Vec<u8>),
    /// The user typed Ctrl-A x: forward these bytes, then quit.
    Quit(Vec<u8>),
}

/// Filters `Ctrl-A x` (quit) out of terminal input. `Ctrl-A Ctrl-A` sends
/// one Ctrl-A; Ctrl-A followed by anything else sends both bytes.
#[derive(Debug, Default)]
pub struct ConsoleEscape {
    pending_escape: bool,
}

impl ConsoleEscape {
    /// A filter with no escape pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk of input (the sequence may straddle chunks).
    pub fn feed(&mut self, input: &[u8]) -> EscapeAction {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.pending_escape {
                self.pending_escape = false;
                match b {
                    b'x' | b'X' => return EscapeAction::Quit(out),
                    ESCAPE_KEY => out.push(ESCAPE_KEY),
                    other => out.extend_from_slice(&[ESCAPE_KEY, other]),
                }
            } else if b == ESCAPE_KEY {
                self.pending_escape = true;
            } else {
                out.push(b);
            }
        }
        EscapeAction::Forward(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const LSR: u16 = 5;
    const IER: u16 = 1;

    #[test]
    fn output_reaches_the_writer() {
        let buf = SharedBuf::default();
        let mut s = SerialConsole::new(EventFd::new(0).unwrap(), Box::new(buf.clone()));
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*buf.0.lock().unwrap(), b"hi\n");
        // Transmitter empty: the guest driver keeps writing.
        let mut d = [0u8];
        s.read(LSR, &mut d);
        assert_ne!(d[0] & 0x20, 0);
    }

    #[test]
    fn input_raises_interrupt_and_reads_back() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = SerialConsole::new(irq.try_clone().unwrap(), Box::new(SharedBuf::default()));
        // Enable "received data available" interrupts.
        s.write(IER, &[0x01]);
        assert_eq!(s.enqueue_input(b"ab"), 2);
        assert_eq!(irq.read().unwrap(), 1);
        let mut d = [0u8];
        s.read(0, &mut d);
        assert_eq!(d[0], b'a');
        s.read(0, &mut d);
        assert_eq!(d[0], b'b');
    }

    #[test]
    fn input_beyond_fifo_is_refused_not_lost() {
        let mut s = SerialConsole::new(EventFd::new(0).unwrap(), Box::new(SharedBuf::default()));
        let big = vec![b'z'; 1000];
        let n = s.enqueue_input(&big);
        assert!(n > 0 && n < 1000);
        assert_eq!(s.enqueue_input(&big), 0);
    }

    #[test]
    fn broken_output_does_not_fail_the_guest() {
        let mut s = SerialConsole::new(EventFd::new(0).unwrap(), Box::new(Broken));
        assert_eq!(s.write(0, b"x"), BusEvent::None);
        assert_eq!(s.output_errors(), 1);
        // Odd widths and offsets are harmless.
        s.write(200, &[]);
        let mut d = [0u8; 4];
        s.read(7, &mut d);
    }

    #[test]
    fn escape_sequence() {
        let mut e = ConsoleEscape::new();
        assert_eq!(e.feed(b"ls\r"), EscapeAction::Forward(b"ls\r".to_vec()));
        assert_eq!(e.feed(b"a\x01"), EscapeAction::Forward(b"a".to_vec()));
        assert_eq!(e.feed(b"x"), EscapeAction::Quit(vec![]));
        let mut e = ConsoleEscape::new();
        assert_eq!(e.feed(b"\x01\x01"), EscapeAction::Forward(vec![1]));
        assert_eq!(e.feed(b"\x01c"), EscapeAction::Forward(vec![1, b'c']));
        assert_eq!(e.feed(b"q\x01xz"), EscapeAction::Quit(b"q".to_vec()));
    }
}
