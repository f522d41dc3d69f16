//! Frames in and out of descriptor chains: pure functions over guest
//! memory, so hostile chains are unit-tested without a guest. Every
//! descriptor of a chain is checked (direction, inside guest memory, total
//! length) before a byte is copied.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestMemoryBackend};

use super::tap::VNET_HDR_LEN;
use crate::virtio::GuestMemory;

/// Largest frame with its header: a 64 KiB TSO segment plus Ethernet and
/// vnet headers.
pub const MAX_FRAME: usize = 65_562;

/// Offset of `num_buffers` in `virtio_net_hdr_v1`.
const NUM_BUFFERS_OFFSET: usize = 10;

/// Why a frame could not be moved through a chain.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A descriptor has the wrong direction (RX buffers must be
    /// device-writable, TX buffers driver-readable).
    #[error("descriptor with the wrong direction")]
    WrongDirection,
    /// A descriptor lies (partly) outside guest memory.
    #[error("descriptor {addr:#x}+{len} outside guest memory")]
    OutsideMemory {
        /// Address.
        addr: u64,
        /// Length.
        len: u32,
    },
    /// The RX buffers are smaller than the frame.
    #[error("frame of {frame} bytes does not fit in {room} bytes of buffers")]
    TooSmall {
        /// Frame length.
        frame: usize,
        /// Buffer space.
        room: u64,
    },
    /// A TX chain is larger than any valid frame, or smaller than a header.
    #[error("TX chain of {0} bytes is not a frame")]
    BadTxLength(u64),
}

fn check(mem: &GuestMemory, d: &Descriptor, writable: bool) -> Result<(), FrameError> {
    if d.is_write_only() != writable {
        return Err(FrameError::WrongDirection);
    }
    if d.len() > 0 && !mem.check_range(d.addr(), d.len() as usize) {
        return Err(FrameError::OutsideMemory {
            addr: d.addr().0,
            len: d.len(),
        });
    }
    Ok(())
}

/// Copies `frame` into the RX chain `descs`; returns the bytes written.
/// The whole chain is checked before anything is written.
pub fn frame_to_chain(
    mem: &GuestMemory,
    descs: &[Descriptor],
    frame: &[u8],
) -> Result<u32, FrameError> {
    let room = rx_room(mem, descs)?;
    if (frame.len() as u64) > room {
        return Err(FrameError::TooSmall {
            frame: frame.len(),
            room,
        });
    }
    let mut rest = frame;
    scatter(mem, descs, &mut rest)
}

/// Writes the head of `rest` into the (checked) chain `descs` and advances
/// `rest`; returns the bytes written.
fn scatter(mem: &GuestMemory, descs: &[Descriptor], rest: &mut &[u8]) -> Result<u32, FrameError> {
    let mut written = 0u32;
    for d in descs {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(d.len() as usize);
        mem.write_slice(&rest[..n], d.addr())
            .map_err(|_| FrameError::OutsideMemory {
                addr: d.addr().0,
                len: d.len(),
            })?;
        *rest = &rest[n..];
        // n <= d.len(), a u32; the sum is bounded by the frame length.
        written += n as u32;
    }
    Ok(written)
}

/// The writable room of an RX chain, after checking every descriptor.
pub fn rx_room(mem: &GuestMemory, descs: &[Descriptor]) -> Result<u64, FrameError> {
    let mut room: u64 = 0;
    for d in descs {
        check(mem, d, true)?;
        room += u64::from(d.len());
    }
    Ok(room)
}

/// Copies `frame` across several RX chains (VIRTIO_NET_F_MRG_RXBUF) and
/// sets the header's `num_buffers` to the number of chains used; returns
/// the bytes written to each chain. Every chain is checked before anything
/// is written, and each must hold at least a header.
pub fn frame_to_chains<'a>(
    mem: &GuestMemory,
    chains: impl Iterator<Item = &'a [Descriptor]> + Clone,
    frame: &mut [u8],
) -> Result<Vec<u32>, FrameError> {
    let mut room: u64 = 0;
    let mut count: usize = 0;
    for descs in chains.clone() {
        count += 1;
        let r = rx_room(mem, descs)?;
        if r < VNET_HDR_LEN as u64 {
            return Err(FrameError::TooSmall {
                frame: VNET_HDR_LEN,
                room: r,
            });
        }
        room += r;
    }
    if (frame.len() as u64) > room || frame.len() < VNET_HDR_LEN {
        return Err(FrameError::TooSmall {
            frame: frame.len(),
            room,
        });
    }
    let count = u16::try_from(count).map_err(|_| FrameError::TooSmall {
        frame: frame.len(),
        room,
    })?;
    frame[NUM_BUFFERS_OFFSET..VNET_HDR_LEN].copy_from_slice(&count.to_le_bytes());
    let mut rest: &[u8] = frame;
    let mut written = Vec::with_capacity(usize::from(count));
    for descs in chains {
        written.push(scatter(mem, descs, &mut rest)?);
    }
    Ok(written)
}

/// Gathers the TX chain `descs` into `buf`; returns the frame length.
pub fn chain_to_frame(
    mem: &GuestMemory,
    descs: &[Descriptor],
    buf: &mut [u8],
) -> Result<usize, FrameError> {
    let mut total: u64 = 0;
    for d in descs {
        check(mem, d, false)?;
        total += u64::from(d.len());
    }
    if total > buf.len() as u64 || total < VNET_HDR_LEN as u64 {
        return Err(FrameError::BadTxLength(total));
    }
    let mut at = 0usize;
    for d in descs {
        let n = d.len() as usize;
        mem.read_slice(&mut buf[at..at + n], d.addr())
            .map_err(|_| FrameError::OutsideMemory {
                addr: d.addr().0,
                len: d.len(),
            })?;
        at += n;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    const W: u16 = 2;
    const MEM: u64 = 0x10_0000;

    fn mem() -> GuestMemory {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
    }
    fn d(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    #[test]
    fn rx_scatters_over_the_chain() {
        let m = mem();
        let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let n = frame_to_chain(&m, &[d(0x1000, 12, W), d(0x2000, 4096, W)], &frame).unwrap();
        assert_eq!(n, 3000);
        let mut back = vec![0u8; 2988];
        m.read_slice(&mut back, GuestAddress(0x2000)).unwrap();
        assert_eq!(&back[..], &frame[12..]);
    }

    #[test]
    fn rx_hostile_chains_write_nothing() {
        let m = mem();
        let frame = [7u8; 100];
        assert_eq!(
            frame_to_chain(&m, &[d(0x1000, 200, 0)], &frame),
            Err(FrameError::WrongDirection)
        );
        assert!(matches!(
            frame_to_chain(&m, &[d(0x1000, 50, W), d(MEM - 10, 50, W)], &frame),
            Err(FrameError::OutsideMemory { .. })
        ));
        assert!(matches!(
            frame_to_chain(&m, &[d(u64::MAX - 10, 200, W)], &frame),
            Err(FrameError::OutsideMemory { .. })
        ));
        assert!(matches!(
            frame_to_chain(&m, &[d(0x1000, 50, W)], &frame),
            Err(FrameError::TooSmall { .. })
        ));
        // Nothing was written by the refused chains.
        let mut b = [0u8; 50];
        m.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(b, [0u8; 50]);
    }

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn mergeable_rx_spreads_a_frame_and_counts_buffers() {
        let m = mem();
        let mut f = frame(5000);
        let chains = [
            vec![d(0x1000, 2048, W)],
            vec![d(0x2000, 2048, W)],
            vec![d(0x3000, 2048, W)],
        ];
        let written = frame_to_chains(&m, chains.iter().map(Vec::as_slice), &mut f).unwrap();
        assert_eq!(written, vec![2048, 2048, 904]);
        let mut hdr = [0u8; 12];
        m.read_slice(&mut hdr, GuestAddress(0x1000)).unwrap();
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 3);
        let mut tail = vec![0u8; 904];
        m.read_slice(&mut tail, GuestAddress(0x3000)).unwrap();
        assert_eq!(&tail[..], &f[4096..]);
    }

    #[test]
    fn mergeable_rx_refuses_hostile_chains_before_writing() {
        let m = mem();
        let mut f = frame(3000);
        // The second chain is read-only: nothing may be written to the first.
        let bad = [vec![d(0x1000, 2048, W)], vec![d(0x2000, 2048, 0)]];
        assert_eq!(
            frame_to_chains(&m, bad.iter().map(Vec::as_slice), &mut f),
            Err(FrameError::WrongDirection)
        );
        let mut b = [0u8; 64];
        m.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(b, [0u8; 64]);
        // A chain smaller than a header, one outside memory, too little room.
        let tiny = [vec![d(0x1000, 4, W)], vec![d(0x2000, 4096, W)]];
        assert!(matches!(
            frame_to_chains(&m, tiny.iter().map(Vec::as_slice), &mut f),
            Err(FrameError::TooSmall { .. })
        ));
        let outside = [vec![d(MEM - 100, 2048, W)]];
        assert!(matches!(
            frame_to_chains(&m, outside.iter().map(Vec::as_slice), &mut f),
            Err(FrameError::OutsideMemory { .. })
        ));
        let short = [vec![d(0x1000, 1024, W)], vec![d(0x2000, 1024, W)]];
        assert!(matches!(
            frame_to_chains(&m, short.iter().map(Vec::as_slice), &mut f),
            Err(FrameError::TooSmall { .. })
        ));
    }

    #[test]
    fn tx_gathers_and_refuses_hostile_chains() {
        let m = mem();
        m.write_slice(&[1u8; 12], GuestAddress(0x1000)).unwrap();
        m.write_slice(&[2u8; 60], GuestAddress(0x2000)).unwrap();
        let mut buf = vec![0u8; MAX_FRAME];
        let n = chain_to_frame(&m, &[d(0x1000, 12, 0), d(0x2000, 60, 0)], &mut buf).unwrap();
        assert_eq!(n, 72);
        assert_eq!(&buf[..12], &[1u8; 12]);
        assert_eq!(&buf[12..72], &[2u8; 60]);
        assert_eq!(
            chain_to_frame(&m, &[d(0x1000, 12, W)], &mut buf),
            Err(FrameError::WrongDirection)
        );
        assert_eq!(
            chain_to_frame(&m, &[d(0x1000, 4, 0)], &mut buf),
            Err(FrameError::BadTxLength(4))
        );
        let huge = [
            d(0x1000, 0x8000, 0),
            d(0x1000, 0x8000, 0),
            d(0x1000, 0x8000, 0),
        ];
        assert!(matches!(
            chain_to_frame(&m, &huge, &mut buf),
            Err(FrameError::BadTxLength(_))
        ));
        assert!(matches!(
            chain_to_frame(&m, &[d(MEM - 4, 16, 0)], &mut buf),
            Err(FrameError::OutsideMemory { .. })
        ));
    }
}
