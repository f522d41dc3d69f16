//! nimbus-vmm library: one VM per process.
