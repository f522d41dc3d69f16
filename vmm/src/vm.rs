//! One VM, wired together: KVM, guest memory, irqchip and PIT, devices,
//! the loaded kernel and the vCPU threads; then wait for it to end.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::legacy::{i8042, power, serial, PowerOffPort, SerialConsole, I8042};
use devices::virtio::block::Block;
use devices::virtio::net::Net;
use devices::{MmioBus, PioBus};
use kvm_bindings::{
    kvm_enable_cap, kvm_pit_config, kvm_userspace_memory_region, KVM_CAP_EXIT_ON_EMULATION_FAILURE,
    KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::mptable;
use crate::boot::{self, BootError};
use crate::config::VmConfig;
use crate::console;
use crate::emulation::AssistCounters;
use crate::exit::ExitReason;
use crate::host::KvmBackend;
use crate::memory::{create_guest_memory, GuestMemory, MemoryError, KVM_TSS_START};
use crate::signals;
use crate::vcpu::{describe_boot, Vcpu, VcpuContext, VcpuError, VmEvent};
use crate::vcpu_control::VcpuControl;

/// vCPU thread stack: KVM_RUN and exit handling need little.
const VCPU_STACK_SIZE: usize = 256 * 1024;
/// How long stopping vCPUs may take before the VMM exits regardless.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Error building or running the VM (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// KVM (the device or an ioctl) failed.
    #[error("KVM: {what}: {source}")]
    Kvm {
        /// The step.
        what: &'static str,
        /// The cause.
        source: kvm_ioctls::Error,
    },
    /// KVM lacks a capability nimbus needs.
    #[error("KVM lacks {0}")]
    MissingCap(&'static str),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Loading the kernel/initrd/cmdline.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The MP table.
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
    /// A vCPU.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// A virtio device (disk, TAP, window, IRQ).
    #[error("{0}")]
    Device(String),
    /// A host resource (thread, eventfd, file, terminal).
    #[error("{what}: {source}")]
    Host {
        /// The step.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}

fn host_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmmError {
    move |source| VmmError::Host { what, source }
}

/// How the run went.
#[derive(Debug)]
pub struct RunSummary {
    /// Why the VM ended.
    pub reason: ExitReason,
    /// Details (which port, which instruction, which signal).
    pub detail: String,
    /// Wall time from the start of `run` to the end of the VM.
    pub wall: Duration,
    /// Emulation assists done.
    pub assists: Arc<AssistCounters>,
    /// Whether the VM ended because it was told to stop (SIGTERM/SIGINT,
    /// the console's quit key) rather than by the guest or a failure.
    pub stop_requested: bool,
}

/// How the VM is controlled from outside, besides signals.
#[derive(Debug, Clone, Default)]
pub struct ControlOptions {
    /// Serve the API (status, pause/resume, shutdown) on this Unix socket.
    pub api_socket: Option<PathBuf>,
    /// Serve the serial console on this Unix socket.
    pub console_socket: Option<PathBuf>,
}

fn register_memory(vm: &VmFd, mem: &GuestMemory) -> Result<(), VmmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| VmmError::MissingCap("a host mapping for guest memory"))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mmap owned by `mem`, which outlives
        // the VM (both are dropped at the end of `run`, the VM first).
        unsafe { vm.set_user_memory_region(r) }.map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

/// Builds the VM described by `config` and runs it to its end.
pub fn run(config: &VmConfig, backend: KvmBackend) -> Result<RunSummary, VmmError> {
    run_with(config, backend, &ControlOptions::default())
}

/// [`run`], with the API and console sockets of `control`.
pub fn run_with(
    config: &VmConfig,
    backend: KvmBackend,
    control: &ControlOptions,
) -> Result<RunSummary, VmmError> {
    let start = Instant::now();
    let pvm = backend.is_pvm();
    signals::block_termination_signals().map_err(host_err("block SIGINT/SIGTERM"))?;
    signals::install_vcpu_kick_handler().map_err(host_err("install vCPU kick handler"))?;

    let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmmError::MissingCap(name));
        }
    }
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    let mem = create_guest_memory(config.memory_bytes())?;
    register_memory(&vm, &mem)?;

    if let Err(e) = vm.set_tss_address(KVM_TSS_START as usize) {
        tracing::debug!("KVM_SET_TSS_ADDR: {e} (only VMX needs it)");
    }
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    if vm.check_extension_raw(u64::from(KVM_CAP_EXIT_ON_EMULATION_FAILURE)) > 0 {
        let cap = kvm_enable_cap {
            cap: KVM_CAP_EXIT_ON_EMULATION_FAILURE,
            args: [1, 0, 0, 0],
            ..Default::default()
        };
        if let Err(e) = vm.enable_cap(&cap) {
            tracing::debug!("KVM_CAP_EXIT_ON_EMULATION_FAILURE: {e}");
        }
    }

    // virtio devices first: the guest learns where they are from the
    // command line.
    let mut mmio = MmioBus::new();
    let mut alloc = crate::virtio_devices::MmioAllocator::default();
    let mut cmdline = config.cmdline.trim().to_string();
    let mut add = |dev: Box<dyn devices::virtio::VirtioDevice>| -> Result<(), VmmError> {
        let param = crate::virtio_devices::attach(&vm, &mem, &mut mmio, &mut alloc, dev)
            .map_err(|e| VmmError::Device(e.to_string()))?;
        cmdline.push(' ');
        cmdline.push_str(&param);
        Ok(())
    };
    for disk in &config.disks {
        add(Box::new(
            Block::new(disk.clone()).map_err(|e| VmmError::Device(e.to_string()))?,
        ))?;
    }
    for nic in &config.nics {
        add(Box::new(
            Net::new(nic.clone()).map_err(|e| VmmError::Device(e.to_string()))?,
        ))?;
    }

    let entry = boot::load(
        &mem,
        config.memory_bytes(),
        &config.kernel,
        config.initrd.as_deref(),
        &cmdline,
    )?;
    tracing::info!(
        "kernel {}: {}",
        config.kernel.display(),
        describe_boot(&entry)
    );
    mptable::write(&mem, config.vcpus)?;

    // Devices.
    let (events_tx, events_rx) = mpsc::channel::<VmEvent>();
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(host_err("eventfd"))?;
    vm.register_irqfd(&serial_irq, serial::COM1_IRQ)
        .map_err(kvm_err("KVM_IRQFD (serial)"))?;
    let log = console::open_output(&config.serial).map_err(host_err("open serial output"))?;
    let console_client = Arc::new(crate::console_socket::ConsoleClient::default());
    let out: devices::legacy::serial::ConsoleOutput = if control.console_socket.is_some() {
        Box::new(crate::console_socket::ConsoleTee::new(
            log,
            console_client.clone(),
        ))
    } else {
        log
    };
    let serial_irq_dev = serial_irq.try_clone().map_err(host_err("eventfd clone"))?;
    let com1 = Arc::new(Mutex::new(SerialConsole::new(serial_irq_dev, out)));
    let mut pio = PioBus::new();
    let insert = |pio: &mut PioBus, dev, base, len| {
        pio.insert(dev, base, len).map_err(|e| VmmError::Host {
            what: "PIO bus",
            source: std::io::Error::other(e.to_string()),
        })
    };
    insert(&mut pio, com1.clone(), serial::COM1_BASE, serial::COM1_LEN)?;
    insert(
        &mut pio,
        Arc::new(Mutex::new(I8042::new())),
        i8042::I8042_BASE,
        i8042::I8042_LEN,
    )?;
    insert(
        &mut pio,
        Arc::new(Mutex::new(PowerOffPort)),
        power::POWER_OFF_PORT,
        power::POWER_OFF_PORT_LEN,
    )?;

    // Console input: only from a terminal, and only when the console is ours.
    let _raw_terminal = if matches!(config.serial, crate::config::SerialOutput::Stdout)
        && console::stdin_is_tty()
    {
        let guard = console::RawTerminal::stdin().map_err(host_err("terminal raw mode"))?;
        console::spawn_input_thread(com1.clone(), events_tx.clone())
            .map_err(host_err("spawn console thread"))?;
        Some(guard)
    } else {
        None
    };
    signals::spawn_signal_thread(events_tx.clone()).map_err(host_err("spawn signal thread"))?;

    // vCPUs.
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let vcpu_control = Arc::new(VcpuControl::new(signals::vcpu_kick_signal()));
    let assists = Arc::new(AssistCounters::default());
    let ctx = VcpuContext {
        pio: Arc::new(pio),
        mmio: Arc::new(mmio),
        mem: mem.clone(),
        control: vcpu_control.clone(),
        events: events_tx.clone(),
        assists: assists.clone(),
        assist_emulation: pvm,
    };
    let mut vcpus = Vec::with_capacity(usize::from(config.vcpus));
    for id in 0..config.vcpus {
        vcpus.push(Vcpu::new(
            &vm,
            id,
            config.vcpus,
            &supported,
            pvm,
            &entry,
            ctx.clone(),
        )?);
    }
    drop(ctx);
    drop(supported);
    let mut threads = Vec::with_capacity(vcpus.len());
    for vcpu in vcpus {
        let name = format!("vcpu{}", vcpu.id());
        let t = std::thread::Builder::new()
            .name(name)
            .stack_size(VCPU_STACK_SIZE)
            .spawn(move || vcpu.run())
            .map_err(host_err("spawn vCPU thread"))?;
        threads.push(t);
    }
    drop(events_tx);

    if let Some(path) = &control.console_socket {
        crate::console_socket::spawn(path, console_client.clone(), com1.clone())
            .map_err(host_err("console socket"))?;
    }
    if let Some(path) = &control.api_socket {
        let ctx = Arc::new(crate::api::ApiContext {
            control: vcpu_control.clone(),
            serial: com1.clone(),
            console: console_client.clone(),
            started: start,
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
        });
        crate::api::spawn(path, ctx).map_err(host_err("API socket"))?;
    }

    let (reason, detail, stop_requested) = wait_for_end(&events_rx);
    let wall = start.elapsed();
    stop_vcpus(&vcpu_control, threads);
    if let Ok(s) = com1.lock() {
        if s.output_errors() > 0 {
            tracing::warn!("{} console writes failed", s.output_errors());
        }
    }
    Ok(RunSummary {
        reason,
        detail,
        wall,
        assists,
        stop_requested,
    })
}

fn wait_for_end(events: &Receiver<VmEvent>) -> (ExitReason, String, bool) {
    match events.recv() {
        Ok(VmEvent::VcpuExit { id, reason, detail }) => {
            (reason, format!("vCPU {id}: {detail}"), false)
        }
        Ok(VmEvent::Signal(sig)) => (
            ExitReason::VmmFailure,
            format!(
                "stopped by {}",
                if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                }
            ),
            true,
        ),
        Ok(VmEvent::ConsoleQuit) => (ExitReason::VmmFailure, "stopped by Ctrl-A x".into(), true),
        Err(_) => (
            ExitReason::VmmFailure,
            "all vCPU threads ended".into(),
            false,
        ),
    }
}

/// Tells every vCPU thread to stop (waking parked ones, kicking running
/// ones out of KVM_RUN) and joins those that ended in time.
fn stop_vcpus(control: &VcpuControl, threads: Vec<JoinHandle<()>>) {
    if !control.stop(STOP_TIMEOUT) {
        tracing::warn!("a vCPU thread did not stop in time");
    }
    for t in threads {
        if t.is_finished() {
            let _ = t.join();
        }
    }
}
