//! Legacy PC devices on port I/O: the 8250 serial console, the i8042 reset
//! line and the power-off port.

pub mod i8042;
pub mod power;
pub mod serial;

pub use i8042::I8042;
pub use power::PowerOffPort;
pub use serial::{ConsoleEscape, EscapeAction, SerialConsole};
