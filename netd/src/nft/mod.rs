//! nimbus's nftables ruleset: generated as text from the state and applied
//! in one `nft -f` transaction.

pub mod apply;
pub mod ruleset;

/// Name of nimbus's tables (one `inet`, one `bridge`). netd never touches
/// any other table.
pub const TABLE: &str = "nimbus";
