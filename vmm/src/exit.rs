//! How a VM run ends, and the process exit code for each ending.

use std::fmt;

/// Why the VM stopped. Each reason has a stable process exit code
/// (see CONTRACT.md); `nimbus run` passes it on unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered itself off (write of 0x2000 to port 0x604, a
    /// KVM shutdown system event, or HLT with no in-kernel irqchip).
    PoweredOff,
    /// The VMM itself failed (a KVM ioctl, a host resource), or it was
    /// stopped from outside (SIGTERM, SIGINT, Ctrl-A x).
    VmmFailure,
    /// The configuration or the command line was invalid; nothing ran.
    InvalidConfig,
    /// The guest asked for a reboot (i8042 reset, KVM reset event).
    GuestReboot,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// KVM reported an internal or emulation error the VMM could not assist.
    InternalError,
}

impl ExitReason {
    /// The process exit code: 0 powered off, 1 VMM failure, 2 invalid
    /// configuration, 3 guest reboot, 4 triple fault, 5 KVM internal error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::PoweredOff => 0,
            ExitReason::VmmFailure => 1,
            ExitReason::InvalidConfig => 2,
            ExitReason::GuestReboot => 3,
            ExitReason::TripleFault => 4,
            ExitReason::InternalError => 5,
        }
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExitReason::PoweredOff => "guest powered off",
            ExitReason::VmmFailure => "VMM failure or stopped",
            ExitReason::InvalidConfig => "invalid configuration",
            ExitReason::GuestReboot => "guest requested reboot",
            ExitReason::TripleFault => "guest triple fault",
            ExitReason::InternalError => "KVM internal/emulation error",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_the_contract() {
        assert_eq!(ExitReason::PoweredOff.exit_code(), 0);
        assert_eq!(ExitReason::VmmFailure.exit_code(), 1);
        assert_eq!(ExitReason::InvalidConfig.exit_code(), 2);
        assert_eq!(ExitReason::GuestReboot.exit_code(), 3);
        assert_eq!(ExitReason::TripleFault.exit_code(), 4);
        assert_eq!(ExitReason::InternalError.exit_code(), 5);
    }
}
