//! Device models plugged into nimbus-vmm.
