//! `struct rtentry` from the kernel's `include/uapi/linux/route.h`, for the
//! SIOCADDRT ioctl (the `libc` crate has it only for musl and uClibc).
//! Kept apart from the logic, transcribed from the header, not edited by taste.

#![allow(non_camel_case_types)]

use libc::{c_char, c_short, c_ulong, c_ushort, c_void, sockaddr};

/// Route flag: the route is usable.
pub const RTF_UP: c_ushort = 0x0001;
/// Route flag: the destination is reached through a gateway.
pub const RTF_GATEWAY: c_ushort = 0x0002;

/// `struct rtentry` (uapi/linux/route.h).
#[repr(C)]
pub struct rtentry {
    pub rt_pad1: c_ulong,
    pub rt_dst: sockaddr,
    pub rt_gateway: sockaddr,
    pub rt_genmask: sockaddr,
    pub rt_flags: c_ushort,
    pub rt_pad2: c_short,
    pub rt_pad3: c_ulong,
    pub rt_pad4: *mut c_void,
    pub rt_metric: c_short,
    pub rt_dev: *mut c_char,
    pub rt_mtu: c_ulong,
    pub rt_window: c_ulong,
    pub rt_irtt: c_ushort,
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #[test]
    fn layout_matches_the_kernel_on_x86_64() {
        assert_eq!(std::mem::size_of::<super::rtentry>(), 120);
        assert_eq!(std::mem::offset_of!(super::rtentry, rt_flags), 56);
        assert_eq!(std::mem::offset_of!(super::rtentry, rt_dev), 88);
    }
}
