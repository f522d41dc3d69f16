//! Realizing the state on the host: bridges, TAPs, veths, addresses and
//! sysctls. Links are managed through rtnetlink; TAPs are created with the
//! TUN ioctls; veth peers are configured inside their namespace from a
//! thread that entered it.

pub mod links;
pub mod netns;
pub mod realize;
pub mod sysctl;
pub mod tap;
