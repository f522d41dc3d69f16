//! The virtio-blk thread: waits on the queue's ioeventfd, processes
//! requests, signals the irqfd.

use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::request::{self, Disk};
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::{GuestMemory, Interrupt, INT_VRING};

const TOKEN_QUEUE: u64 = 0;
const TOKEN_KILL: u64 = 1;

pub(super) struct BlockWorker {
    pub mem: GuestMemory,
    pub queue: Queue,
    pub queue_event: EventFd,
    pub interrupt: Arc<Interrupt>,
    pub file: File,
    pub read_only: bool,
    pub serial: Vec<u8>,
    pub capacity: u64,
    pub limiter: RateLimiter,
}

impl BlockWorker {
    pub(super) fn run(mut self, kill: EventFd) {
        let epoll = match Epoll::new() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("virtio-blk: epoll: {e}");
                self.interrupt.device_broken();
                return;
            }
        };
        for (fd, token) in [(&self.queue_event, TOKEN_QUEUE), (&kill, TOKEN_KILL)] {
            if let Err(e) = epoll.ctl(
                ControlOperation::Add,
                std::os::fd::AsRawFd::as_raw_fd(fd),
                EpollEvent::new(EventSet::IN, token),
            ) {
                tracing::error!("virtio-blk: epoll_ctl: {e}");
                self.interrupt.device_broken();
                return;
            }
        }
        let mut events = [EpollEvent::default(); 4];
        // Set while the rate limiter holds the queue back.
        let mut resume_at: Option<Instant> = None;
        // Requests may already be queued when the driver sets DRIVER_OK.
        let mut pending = true;
        loop {
            if pending {
                pending = false;
                match resume_at {
                    Some(t) if Instant::now() < t => {}
                    _ => resume_at = self.process_queue(),
                }
            }
            let timeout = resume_at.map_or(-1, |t| {
                i32::try_from(t.saturating_duration_since(Instant::now()).as_millis())
                    .unwrap_or(i32::MAX)
            });
            let n = match epoll.wait(timeout, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!("virtio-blk: epoll_wait: {e}");
                    return;
                }
            };
            if n == 0 {
                // Throttle expired.
                resume_at = None;
                pending = true;
            }
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_KILL => return,
                    _ => {
                        let _ = self.queue_event.read();
                        pending = true;
                    }
                }
            }
        }
    }

    /// Processes available requests. Returns when the limiter wants a
    /// pause, with the time to resume.
    fn process_queue(&mut self) -> Option<Instant> {
        let mut used = false;
        let mut resume = None;
        let mut expect_more = false;
        'drain: loop {
            // Without EVENT_IDX this sets VRING_USED_F_NO_NOTIFY: the driver
            // need not kick while this loop is still draining.
            if self.queue.disable_notification(&self.mem).is_err() {
                self.interrupt.device_broken();
                return None;
            }
            let mut progress = false;
            while let Some(chain) = self.queue.pop_descriptor_chain(&self.mem) {
                progress = true;
                let head = chain.head_index();
                let descs: Vec<Descriptor> = chain.collect();
                let (len, bytes) = self.handle(&descs);
                if let Err(e) = self.queue.add_used(&self.mem, head, len) {
                    tracing::warn!("virtio-blk: add_used: {e}; device needs reset");
                    self.interrupt.device_broken();
                    return None;
                }
                used = true;
                if self.limiter.is_limited() {
                    let wait = self.limiter.consume(bytes);
                    if wait > Duration::ZERO {
                        resume = Some(Instant::now() + wait);
                        break 'drain;
                    }
                }
            }
            // Entries a re-arm saw must pop now; if none does, the avail
            // index is bogus: stop rather than spin.
            if expect_more && !progress {
                self.interrupt.device_broken();
                return None;
            }
            // Re-arm the driver's kicks; requests that raced in are taken
            // now rather than waiting for a kick that will not come.
            match self.queue.enable_notification(&self.mem) {
                Ok(true) => {
                    expect_more = true;
                    continue;
                }
                Ok(false) => break,
                Err(_) => {
                    self.interrupt.device_broken();
                    return None;
                }
            }
        }
        if used {
            match self.queue.needs_notification(&self.mem) {
                Ok(false) => {}
                _ => self.interrupt.trigger(INT_VRING),
            }
        }
        resume
    }

    /// Parses and executes one chain; returns (used length, bytes moved).
    fn handle(&mut self, descs: &[Descriptor]) -> (u32, u64) {
        match request::parse(&self.mem, descs, self.capacity) {
            Ok(req) => {
                let mut disk = Disk {
                    file: &mut self.file,
                    read_only: self.read_only,
                    serial: &self.serial,
                };
                let (status, len) = request::execute(&self.mem, &req, &mut disk);
                self.write_status(req.status, status);
                (len, req.data_len)
            }
            Err(e) => {
                tracing::debug!("virtio-blk: refused request: {e}");
                match request::status_address(&self.mem, descs) {
                    Some(addr) => {
                        self.write_status(addr, e.status());
                        (1, 0)
                    }
                    None => (0, 0),
                }
            }
        }
    }

    fn write_status(&self, addr: GuestAddress, status: u8) {
        if self.mem.write_obj(status, addr).is_err() {
            tracing::debug!("virtio-blk: status byte outside guest memory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn a_bogus_avail_index_breaks_the_device_instead_of_spinning() {
        let mem: GuestMemory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("memory");
        let mq = MockSplitQueue::new(&mem, 16);
        // The driver claims 1000 new requests in a 16-entry ring.
        mq.avail().idx().store(1000u16);
        let queue: Queue = mq.create_queue().expect("queue");
        let file = std::fs::File::open("/dev/null").expect("/dev/null");
        let mut worker = BlockWorker {
            mem: mem.clone(),
            queue,
            queue_event: EventFd::new(0).expect("eventfd"),
            interrupt: Arc::new(Interrupt::new(EventFd::new(0).expect("eventfd"))),
            file,
            read_only: true,
            serial: Vec::new(),
            capacity: 0,
            limiter: RateLimiter::new(None, None),
        };
        // Returns (no endless re-arm loop) with the device marked broken.
        assert_eq!(worker.process_queue(), None);
        assert!(worker.interrupt.is_broken());
    }
}
