//! Power-off: the last thing PID 1 does.

use std::io;

use crate::console::Console;

/// Flushes file systems and powers the machine off. Never returns: if the
/// kernel refuses, it halts, and failing that PID 1 idles forever (exiting
/// would panic the kernel).
pub fn power_off(console: &mut Console) -> ! {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    for (cmd, name) in [
        (libc::LINUX_REBOOT_CMD_POWER_OFF, "power-off"),
        (libc::LINUX_REBOOT_CMD_HALT, "halt"),
    ] {
        // SAFETY: reboot(2) with a constant command; it only returns on error.
        unsafe { libc::reboot(cmd) };
        console.error(name, io::Error::last_os_error());
    }
    idle_forever()
}

/// Sleeps forever without spinning.
pub fn idle_forever() -> ! {
    loop {
        // SAFETY: pause(2) has no arguments and no memory effects.
        unsafe { libc::pause() };
    }
}
