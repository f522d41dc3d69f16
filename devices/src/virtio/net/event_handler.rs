//! The virtio-net thread: moves frames between the TAP and the RX/TX
//! queues through one bounce buffer each way (the copies are the pure
//! functions of `frame.rs`).
//!
//! Notifications are kept rare in both directions, because on a host
//! without hardware virtualization every guest interrupt and every kick
//! runs emulated guest ring-0 code: with VIRTIO_F_RING_EVENT_IDX the guest
//! kicks only when a queue drained by this thread gets new buffers, and is
//! interrupted only when it asked to be; with VIRTIO_NET_F_MRG_RXBUF a
//! received frame takes as many small buffers as it needs instead of a
//! 64 KiB chain of ~19 descriptors each, so the RX ring holds many more
//! frames.

use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::frame::{chain_to_frame, frame_to_chain, frame_to_chains, rx_room, MAX_FRAME};
use super::tap::Tap;
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::{GuestMemory, Interrupt, INT_VRING};

const TOKEN_RX: u64 = 0;
const TOKEN_TX: u64 = 1;
const TOKEN_TAP: u64 = 2;
const TOKEN_KILL: u64 = 3;

/// What taking RX buffers for one frame gave.
enum RxBuffers {
    /// Chains (head index, descriptors) that hold the frame.
    Ready(Vec<(u16, Vec<Descriptor>)>),
    /// Not enough buffers yet: nothing was taken, the frame waits.
    Wait,
    /// The queue is unusable.
    Broken,
}

pub(super) struct NetWorker {
    mem: GuestMemory,
    rx: Queue,
    tx: Queue,
    events: [EventFd; 2],
    interrupt: Arc<Interrupt>,
    tap: Tap,
    limiter: RateLimiter,
    /// VIRTIO_NET_F_MRG_RXBUF was negotiated.
    mergeable_rx: bool,
    rx_buf: Vec<u8>,
    /// A frame read from the TAP that waits for RX buffers.
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
        mergeable_rx: bool,
    ) -> Self {
        Self {
            mem,
            rx,
            tx,
            events,
            interrupt,
            tap,
            limiter,
            mergeable_rx,
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
        let mut expect_more = false;
        'drain: loop {
            // No kicks while this loop drains (VRING_USED_F_NO_NOTIFY; a
            // no-op with EVENT_IDX, whose avail_event is left behind).
            if self.tx.disable_notification(&self.mem).is_err() {
                self.interrupt.device_broken();
                return;
            }
            let mut progress = false;
            while let Some(chain) = self.tx.pop_descriptor_chain(&self.mem) {
                progress = true;
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
                    // The limiter's timer resumes this loop.
                    break 'drain;
                }
            }
            // Entries a re-arm saw must pop now; if none does, the avail
            // index is bogus: stop rather than spin.
            if expect_more && !progress {
                self.interrupt.device_broken();
                return;
            }
            // Re-arm kicks, then take what raced in before the re-arm.
            match self.tx.enable_notification(&self.mem) {
                Ok(true) => {
                    expect_more = true;
                    continue;
                }
                Ok(false) => break,
                Err(_) => {
                    self.interrupt.device_broken();
                    return;
                }
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
            let chains = match self.take_rx_buffers(len) {
                RxBuffers::Ready(chains) => chains,
                RxBuffers::Wait => {
                    // The guest kicks RX when it adds buffers.
                    self.rx_pending = Some(len);
                    break;
                }
                RxBuffers::Broken => {
                    self.interrupt.device_broken();
                    return;
                }
            };
            let written = self.write_frame(&chains, len);
            for ((head, _), n) in chains.iter().zip(written) {
                if self.rx.add_used(&self.mem, *head, n).is_err() {
                    self.interrupt.device_broken();
                    return;
                }
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

    /// Takes the RX chains a frame of `len` bytes needs: one without
    /// MRG_RXBUF, as many as hold it with. When there are not enough,
    /// nothing is taken and RX kicks are re-armed.
    fn take_rx_buffers(&mut self, len: usize) -> RxBuffers {
        let start = self.rx.next_avail();
        let mut chains = Vec::new();
        let mut room: u64 = 0;
        // Set when a re-arm saw new entries; a pop must then succeed, or
        // the avail index is bogus.
        let mut expect_more = false;
        loop {
            match self.rx.pop_descriptor_chain(&self.mem) {
                Some(chain) => {
                    expect_more = false;
                    let head = chain.head_index();
                    let descs: Vec<Descriptor> = chain.collect();
                    // A hostile chain counts as no room; the copy refuses
                    // it and the frame is dropped.
                    room += rx_room(&self.mem, &descs).unwrap_or(u64::MAX / 2);
                    chains.push((head, descs));
                    if !self.mergeable_rx || room >= len as u64 {
                        return RxBuffers::Ready(chains);
                    }
                }
                None if expect_more => return RxBuffers::Broken,
                None => {
                    // Re-arm at the end of what was taken (with EVENT_IDX
                    // avail_event = next_avail), then look again in case
                    // buffers arrived before the re-arm.
                    match self.rx.enable_notification(&self.mem) {
                        Ok(true) => {
                            if self.rx.disable_notification(&self.mem).is_err() {
                                return RxBuffers::Broken;
                            }
                            expect_more = true;
                        }
                        Ok(false) => {
                            // Give a partial set back; the kick resumes.
                            self.rx.set_next_avail(start);
                            return RxBuffers::Wait;
                        }
                        Err(_) => return RxBuffers::Broken,
                    }
                }
            }
        }
    }

    /// Copies the pending frame into `chains`; returns the used length of
    /// each chain (0 for all when the chains are refused: frame dropped).
    fn write_frame(&mut self, chains: &[(u16, Vec<Descriptor>)], len: usize) -> Vec<u32> {
        let frame = &mut self.rx_buf[..len];
        let result = if self.mergeable_rx {
            frame_to_chains(&self.mem, chains.iter().map(|(_, d)| d.as_slice()), frame)
        } else {
            chains.first().map_or(Ok(vec![]), |(_, d)| {
                frame_to_chain(&self.mem, d, frame).map(|n| vec![n])
            })
        };
        result.unwrap_or_else(|e| {
            tracing::debug!("virtio-net: RX frame dropped: {e}");
            vec![0; chains.len()]
        })
    }
}
