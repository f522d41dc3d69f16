//! One vCPU: its boot-time state, and the thread that runs it and handles
//! its exits.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use devices::{BusEvent, MmioBus, PioBus};
use kvm_bindings::{
    kvm_mp_state, CpuId, Msrs, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, KVM_MP_STATE_UNINITIALIZED,
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::arch::x86_64::regs::{boot_fpu, boot_regs, setup_sregs, BootMode};
use crate::arch::x86_64::{cpuid, interrupts, msr};
use crate::boot::BootEntry;
use crate::emulation::{self, Assist, AssistCounters};
use crate::exit::ExitReason;
use crate::memory::GuestMemory;
use crate::vcpu_control::VcpuControl;

/// Error setting up a vCPU.
#[derive(Debug, thiserror::Error)]
#[error("vCPU {id}: {what}: {source}")]
pub struct VcpuError {
    /// vCPU index.
    pub id: u8,
    /// The step that failed.
    pub what: &'static str,
    /// The KVM error.
    pub source: kvm_ioctls::Error,
}

/// Something the VM's main thread must react to.
#[derive(Debug)]
pub enum VmEvent {
    /// A vCPU ended the VM.
    VcpuExit {
        /// Which vCPU.
        id: u8,
        /// Why.
        reason: ExitReason,
        /// Details for the log/summary.
        detail: String,
    },
    /// SIGTERM or SIGINT arrived.
    Signal(i32),
    /// The user typed Ctrl-A x on the console.
    ConsoleQuit,
}

/// What every vCPU thread shares.
#[derive(Clone)]
pub struct VcpuContext {
    /// Port I/O devices.
    pub pio: Arc<PioBus>,
    /// Memory-mapped devices (virtio-mmio register windows).
    pub mmio: Arc<MmioBus>,
    /// Guest memory (to read instructions at RIP).
    pub mem: GuestMemory,
    /// Run/pause/stop; checked before every KVM_RUN.
    pub control: Arc<VcpuControl>,
    /// Where the ending is reported.
    pub events: Sender<VmEvent>,
    /// Emulation assists done.
    pub assists: Arc<AssistCounters>,
    /// Whether emulation assists are allowed (kvm-pvm only).
    pub assist_emulation: bool,
}

/// A vCPU, configured and ready to run.
pub struct Vcpu {
    fd: VcpuFd,
    id: u8,
    ctx: VcpuContext,
    /// Consecutive assists at the same RIP: a guard against looping forever.
    last_assist: (u64, u32),
}

/// Assists in a row at one RIP before the VMM gives up.
const MAX_REPEATED_ASSISTS: u32 = 1000;

impl Vcpu {
    /// Creates vCPU `id` and sets CPUID, MSRs, FPU and LAPIC. vCPU 0 (the
    /// BSP) gets the boot registers; the others wait for INIT/SIPI.
    pub fn new(
        vm: &VmFd,
        id: u8,
        vcpu_count: u8,
        supported_cpuid: &CpuId,
        pvm: bool,
        boot: &BootEntry,
        ctx: VcpuContext,
    ) -> Result<Vcpu, VcpuError> {
        let err = |what| move |source| VcpuError { id, what, source };
        let fd = vm.create_vcpu(u64::from(id)).map_err(err("create"))?;

        let entries = cpuid::filter(
            supported_cpuid.as_slice(),
            cpuid::CpuidTarget {
                vcpu_id: id,
                vcpu_count,
                pvm,
            },
        );
        let cpuid = CpuId::from_entries(&entries).map_err(|_| VcpuError {
            id,
            what: "build CPUID",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        fd.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;

        let msr_entries = msr::boot_msr_entries();
        let msrs = Msrs::from_entries(&msr_entries).map_err(|_| VcpuError {
            id,
            what: "build MSRs",
            source: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let written = fd.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
        if written != msr_entries.len() {
            // KVM stops at the first MSR it refuses; the rest are not set.
            let refused = msr_entries.get(written).map(|m| m.index).unwrap_or(0);
            tracing::warn!(
                vcpu = id,
                "KVM set {written} of {} boot MSRs; refused MSR {refused:#x}",
                msr_entries.len()
            );
        }

        fd.set_fpu(&boot_fpu()).map_err(err("KVM_SET_FPU"))?;
        let mut lapic = fd.get_lapic().map_err(err("KVM_GET_LAPIC"))?;
        interrupts::set_lint(&mut lapic);
        fd.set_lapic(&lapic).map_err(err("KVM_SET_LAPIC"))?;

        if id == 0 {
            let mut sregs = fd.get_sregs().map_err(err("KVM_GET_SREGS"))?;
            setup_sregs(&ctx.mem, boot.mode, &mut sregs).map_err(|_| VcpuError {
                id,
                what: "write boot GDT/page tables",
                source: kvm_ioctls::Error::new(libc::EFAULT),
            })?;
            fd.set_sregs(&sregs).map_err(err("KVM_SET_SREGS"))?;
            let regs = boot_regs(boot.rip, boot.rsp, boot.rbx, boot.rsi);
            fd.set_regs(&regs).map_err(err("KVM_SET_REGS"))?;
        } else {
            // An AP that has not seen INIT yet: KVM_RUN blocks until Linux
            // sends INIT and SIPI (found through the MP table).
            fd.set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_UNINITIALIZED,
            })
            .map_err(err("KVM_SET_MP_STATE"))?;
        }
        Ok(Vcpu {
            fd,
            id,
            ctx,
            last_assist: (u64::MAX, 0),
        })
    }

    /// This vCPU's index.
    pub fn id(&self) -> u8 {
        self.id
    }

    fn report(&self, reason: ExitReason, detail: String) {
        // The receiver is gone only when the VM is already ending.
        let _ = self.ctx.events.send(VmEvent::VcpuExit {
            id: self.id,
            reason,
            detail,
        });
    }

    /// Runs until the guest ends the VM (reported as a [`VmEvent`]) or the
    /// stop flag is set.
    pub fn run(mut self) {
        let control = self.ctx.control.clone();
        let run_ptr: *mut kvm_bindings::kvm_run = self.fd.get_kvm_run();
        let _registered = control.register(self.id, run_ptr);
        loop {
            if !control.before_run() {
                return;
            }
            match self.run_once() {
                Ok(None) => {}
                Ok(Some((reason, detail))) => {
                    self.report(reason, detail);
                    return;
                }
                Err(detail) => {
                    self.report(ExitReason::VmmFailure, detail);
                    return;
                }
            }
        }
    }

    /// One KVM_RUN. `Ok(Some(..))` ends the VM.
    fn run_once(&mut self) -> Result<Option<(ExitReason, String)>, String> {
        let pio = &self.ctx.pio;
        // Exits handled in place return early; only an internal error,
        // which needs the vCPU again, falls through.
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => {
                pio.read(port, data);
                return Ok(None);
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                return Ok(match pio.write(port, data) {
                    BusEvent::None => None,
                    BusEvent::Reset => Some((ExitReason::GuestReboot, "i8042 reset".into())),
                    BusEvent::PowerOff => Some((ExitReason::PoweredOff, "port 0x604".into())),
                });
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                if !self.ctx.mmio.read(addr, data) {
                    tracing::debug!(vcpu = self.id, "MMIO read from {addr:#x}: no device");
                }
                return Ok(None);
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if !self.ctx.mmio.write(addr, data) {
                    tracing::debug!(vcpu = self.id, "MMIO write to {addr:#x}: no device");
                }
                return Ok(None);
            }
            Ok(VcpuExit::Hlt) => {
                return Ok(Some((ExitReason::PoweredOff, "HLT".into())));
            }
            Ok(VcpuExit::Shutdown) => {
                return Ok(Some((ExitReason::TripleFault, "KVM_EXIT_SHUTDOWN".into())));
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                return Ok(Some(match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => (ExitReason::PoweredOff, "system event".into()),
                    KVM_SYSTEM_EVENT_RESET => (ExitReason::GuestReboot, "system event".into()),
                    KVM_SYSTEM_EVENT_CRASH => {
                        (ExitReason::InternalError, "guest crash event".into())
                    }
                    other => (
                        ExitReason::VmmFailure,
                        format!("unknown system event {other}"),
                    ),
                }));
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Ok(Some((
                    ExitReason::InternalError,
                    format!("KVM_EXIT_FAIL_ENTRY: reason {reason:#x} on host CPU {cpu}"),
                )));
            }
            Ok(VcpuExit::InternalError) => {}
            Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => return Ok(None),
            Ok(other) => {
                return Ok(Some((
                    ExitReason::InternalError,
                    format!("unexpected exit {other:?}"),
                )));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // A kick (pause/stop) set immediate_exit; the state is
                // looked at again before the next KVM_RUN.
                self.fd.set_kvm_immediate_exit(0);
                return Ok(None);
            }
            Err(e) => return Err(format!("KVM_RUN failed: {e}")),
        }
        Ok(self.internal_error())
    }

    /// A KVM_EXIT_INTERNAL_ERROR: assist the emulation failure if possible,
    /// otherwise describe it and end the VM.
    fn internal_error(&mut self) -> Option<(ExitReason, String)> {
        let run = self.fd.get_kvm_run();
        // SAFETY: KVM_RUN returned with exit_reason KVM_EXIT_INTERNAL_ERROR,
        // so `internal` (and, for emulation failures, `emulation_failure`,
        // which starts with the same suberror/ndata) is the active member.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        // SAFETY: as above; the struct is plain data and is only read.
        let emul = unsafe { run.__bindgen_anon_1.emulation_failure };
        let ndata = (internal.ndata as usize).min(internal.data.len());
        let data_hex: Vec<String> = internal.data[..ndata]
            .iter()
            .map(|d| format!("{d:#x}"))
            .collect();
        if internal.suberror != KVM_INTERNAL_ERROR_EMULATION {
            return Some((
                ExitReason::InternalError,
                format!(
                    "KVM internal error, suberror {} data [{}]",
                    internal.suberror,
                    data_hex.join(", ")
                ),
            ));
        }

        let regs = self.fd.get_regs().ok();
        let sregs = self.fd.get_sregs().ok();
        let mut bytes = Vec::new();
        if emul.flags & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0 {
            // SAFETY: the union's only member is the byte array; plain data.
            let insn = unsafe { emul.__bindgen_anon_1.__bindgen_anon_1 };
            let n = usize::from(insn.insn_size).min(insn.insn_bytes.len());
            bytes.extend_from_slice(&insn.insn_bytes[..n]);
        }
        if bytes.is_empty() {
            if let (Some(r), Some(s)) = (&regs, &sregs) {
                bytes = emulation::fetch_at_rip(&self.fd, &self.ctx.mem, r, s);
            }
        }
        let rip = regs.map(|r| r.rip).unwrap_or(0);
        let long_mode = sregs.map(|s| s.cs.l == 1).unwrap_or(true);
        let decoded = emulation::decode(&bytes, long_mode);

        if self.ctx.assist_emulation {
            match self.assist(decoded, rip) {
                Ok(true) => return None,
                Ok(false) => {}
                Err(e) => tracing::warn!(vcpu = self.id, "emulation assist failed: {e}"),
            }
        }
        Some((
            ExitReason::InternalError,
            format!(
                "emulation failure at RIP {rip:#x}: bytes [{}] = {}",
                emulation::hex(&bytes),
                decoded.insn.name()
            ),
        ))
    }

    /// Delivers the effect of `decoded` and advances RIP. `Ok(false)` if
    /// there is no assist for it.
    fn assist(&mut self, decoded: emulation::Decoded, rip: u64) -> Result<bool, kvm_ioctls::Error> {
        if self.last_assist.0 == rip {
            self.last_assist.1 += 1;
            if self.last_assist.1 > MAX_REPEATED_ASSISTS {
                return Ok(false);
            }
        } else {
            self.last_assist = (rip, 1);
        }
        let mut fpu = None;
        let fsw =
            if decoded.insn == emulation::Insn::Fwait || decoded.insn == emulation::Insn::Fnclex {
                let f = self.fd.get_fpu()?;
                let fsw = f.fsw;
                fpu = Some(f);
                fsw
            } else {
                0
            };
        let Some(assist) = emulation::plan(decoded, fsw) else {
            return Ok(false);
        };
        let mut regs = self.fd.get_regs()?;
        let len = match assist {
            Assist::InjectBreakpoint { len } => {
                let mut ev = self.fd.get_vcpu_events()?;
                ev.exception.injected = 1;
                ev.exception.nr = 3;
                ev.exception.has_error_code = 0;
                ev.exception.error_code = 0;
                regs.rip = regs.rip.wrapping_add(len as u64);
                self.fd.set_regs(&regs)?;
                self.fd.set_vcpu_events(&ev)?;
                len
            }
            Assist::Skip { len } => len,
            Assist::SetAc { set, len } => {
                regs.rflags = emulation::rflags_with_ac(regs.rflags, set);
                len
            }
            Assist::ClearFpuExceptions { len } => {
                if let Some(mut f) = fpu {
                    f.fsw &= !emulation::FSW_FNCLEX_MASK;
                    self.fd.set_fpu(&f)?;
                }
                len
            }
        };
        if !matches!(assist, Assist::InjectBreakpoint { .. }) {
            regs.rip = regs.rip.wrapping_add(len as u64);
            self.fd.set_regs(&regs)?;
        }
        self.ctx.assists.count(decoded.insn);
        tracing::debug!(
            vcpu = self.id,
            "assisted {} at {rip:#x}",
            decoded.insn.name()
        );
        Ok(true)
    }
}

/// Whether the vCPU setup needs boot registers (for the log).
pub fn describe_boot(boot: &BootEntry) -> String {
    format!(
        "{} entry at {:#x} ({})",
        boot.protocol,
        boot.rip,
        match boot.mode {
            BootMode::Protected32 => "32-bit protected mode, paging off",
            BootMode::Long64 => "64-bit long mode",
        }
    )
}
