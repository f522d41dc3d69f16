//! nimbus-vmm library: one VM per process.
//!
//! `config` parses and validates what the user asked for; `memory` holds
//! the guest-physical layout; `arch` and `boot` prepare the guest; `vcpu`
//! and `emulation` run it; `vm` wires everything together. The binary
//! (`main.rs`) only parses arguments and reports.

pub mod api;
pub mod arch;
pub mod boot;
pub mod config;
pub mod console;
pub mod console_socket;
pub mod device_options;
pub mod emulation;
pub mod exit;
pub mod exit_record;
pub mod guest_cmdline;
pub mod host;
pub mod memory;
pub mod signals;
pub mod vcpu;
pub mod vcpu_control;
pub mod virtio_devices;
pub mod vm;

pub use config::{ConfigError, SerialOutput, VmConfig};
pub use exit::ExitReason;
pub use host::KvmBackend;
pub use vm::{run, run_with, ControlOptions, RunSummary, VmmError};
