//! x86_64: CPUID, MSRs, registers and page tables, interrupt controller
//! set-up, the MP table and the e820 memory map.

pub mod cpuid;
pub mod e820;
pub mod interrupts;
pub mod mptable;
pub mod msr;
pub mod regs;
