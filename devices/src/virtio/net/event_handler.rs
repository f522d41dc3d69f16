//! The virtio-net thread: moves frames between the TAP and the RX/TX
//! queues. Frames are copied through one bounce buffer; the copies to and
//! from guest memory are pure functions over a descriptor chain, tested
//! with hostile chains.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::tap::{Tap, VNET_HDR_LEN};
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::{GuestMemory, Interrupt, INT_VRING};

/// Largest frame with its header: a 64 KiB TSO segment plus Ethernet and
/// vnet headers.
pub const MAX_FRAME: usize = 65_562;

const TOKEN_RX: u64 = 0;
const TOKEN_TX: u64 = 1;
const TOKEN_TAP: u64 = 2;
const TOKEN_KILL: u64 = 3;

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
    let mut room: u64 = 0;
    for d in descs {
        check(mem, d, true)?;
        room += u64::from(d.len());
    }
    if (frame.len() as u64) > room {
        return Err(FrameError::TooSmall {
            frame: frame.len(),
            room,
        });
    }
    let mut rest = frame;
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
        rest = &rest[n..];
    }
    Ok(frame.len() as u32)
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

pub(super) struct NetWorker {
    mem: GuestMemory,
    rx: Queue,
    tx: Queue,
    events: [EventFd; 2],
    interrupt: Arc<Interrupt>,
    tap: Tap,
    limiter: RateLimiter,
    rx_buf: Vec<u8>,
    /// A frame read from the TAP that waits for an RX buffer.
    rx_pending: Option<usize>,
    tx_buf: Vec<u8>,
    resume_at: Option<Instant>,
}

impl NetWorker {
    pub(super) fn new(
        mem: GuestMemory,
        [rx, tx]: [Queue; 2],
        events: [EventFd; 2],
        interrupt: Arc<Interrupt>,
        tap: Tap,
        limiter: RateLimiter,
    ) -> Self {
        Self {
            mem,
            rx,
            tx,
            events,
            interrupt,
            tap,
            limiter,
            rx_buf: vec![0; MAX_FRAME],
            rx_pending: None,
            tx_buf: vec![0; MAX_FRAME],
            resume_at: None,
        }
    }

    pub(super) fn run(mut self, kill: EventFd) {
        let epoll = match self.setup_epoll(&kill) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("virtio-net: epoll: {e}");
                self.interrupt.device_broken();
                return;
            }
        };
        let mut events = [EpollEvent::default(); 8];
        loop {
            if self.throttled() {
                // Keep the wake-ups pending; the timeout resumes us.
            } else {
                self.process_tx();
                self.process_rx();
            }
            let timeout = self.resume_at.map_or(-1, |t| {
                i32::try_from(t.saturating_duration_since(Instant::now()).as_millis() + 1)
                    .unwrap_or(i32::MAX)
            });
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio-net: epoll_wait: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_KILL => return,
                    TOKEN_RX => {
                        let _ = self.events[0].read();
                    }
                    TOKEN_TX => {
                        let _ = self.events[1].read();
                    }
                    _ => {}
                }
            }
        }
    }

    fn setup_epoll(&self, kill: &EventFd) -> std::io::Result<Epoll> {
        let epoll = Epoll::new()?;
        let add = |fd: i32, set: EventSet, token| {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(set, token))
        };
        add(self.events[0].as_raw_fd(), EventSet::IN, TOKEN_RX)?;
        add(self.events[1].as_raw_fd(), EventSet::IN, TOKEN_TX)?;
        // Edge-triggered: the TAP is drained until EAGAIN, or until the
        // guest runs out of RX buffers (then an RX kick resumes draining).
        add(
            self.tap.as_raw_fd(),
            EventSet::IN | EventSet::EDGE_TRIGGERED,
            TOKEN_TAP,
        )?;
        add(kill.as_raw_fd(), EventSet::IN, TOKEN_KILL)?;
        Ok(epoll)
    }

    fn throttled(&mut self) -> bool {
        match self.resume_at {
            Some(t) if Instant::now() < t => true,
            _ => {
                self.resume_at = None;
                false
            }
        }
    }

    fn account(&mut self, bytes: usize) -> bool {
        if !self.limiter.is_limited() {
            return false;
        }
        let wait = self.limiter.consume(bytes as u64);
        if wait > Duration::ZERO {
            self.resume_at = Some(Instant::now() + wait);
            true
        } else {
            false
        }
    }

    fn signal(&mut self, rx: bool) {
        let q = if rx { &mut self.rx } else { &mut self.tx };
        match q.needs_notification(&self.mem) {
            Ok(false) => {}
            _ => self.interrupt.trigger(INT_VRING),
        }
    }

    fn process_tx(&mut self) {
        let mut used = false;
        while let Some(chain) = self.tx.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            let mut sent = 0;
            match chain_to_frame(&self.mem, &descs, &mut self.tx_buf) {
                Ok(len) => match self.tap.write_frame(&self.tx_buf[..len]) {
                    Ok(_) => sent = len,
                    Err(e) => tracing::debug!("virtio-net: TAP write: {e}"),
                },
                Err(e) => tracing::debug!("virtio-net: TX frame dropped: {e}"),
            }
            if self.tx.add_used(&self.mem, head, 0).is_err() {
                self.interrupt.device_broken();
                return;
            }
            used = true;
            if self.account(sent) {
                break;
            }
        }
        if used {
            self.signal(false);
        }
    }

    fn process_rx(&mut self) {
        let mut used = false;
        loop {
            let len = match self.rx_pending.take() {
                Some(len) => len,
                None => match self.tap.read_frame(&mut self.rx_buf) {
                    Ok(0) => break,
                    Ok(len) => len,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::debug!("virtio-net: TAP read: {e}");
                        break;
                    }
                },
            };
            let Some(chain) = self.rx.pop_descriptor_chain(&self.mem) else {
                // No buffer: keep the frame until the guest adds some.
                self.rx_pending = Some(len);
                break;
            };
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            let written = match frame_to_chain(&self.mem, &descs, &self.rx_buf[..len]) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!("virtio-net: RX frame dropped: {e}");
                    0
                }
            };
            if self.rx.add_used(&self.mem, head, written).is_err() {
                self.interrupt.device_broken();
                return;
            }
            used = true;
            if self.account(len) {
                break;
            }
        }
        if used {
            self.signal(true);
        }
    }
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
