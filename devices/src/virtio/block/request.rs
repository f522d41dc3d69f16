//! virtio-blk requests: parsing a descriptor chain (a pure function over
//! guest memory, fed hostile chains by the tests) and carrying a parsed
//! request out against the disk image.
//!
//! Layout (virtio 1.2, 5.2.6): a 16-byte driver-readable header (type,
//! reserved, sector), data buffers (device-writable for reads and GET_ID,
//! driver-readable for writes), and a final device-writable status byte.

use std::fs::File;
use std::io::{Seek, SeekFrom};

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::super::GuestMemory;

/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes of a GET_ID answer.
pub const ID_BYTES: usize = 20;

/// Request types (virtio 1.2, 5.2.6).
pub mod types {
    #![allow(missing_docs)]
    pub const IN: u32 = 0;
    pub const OUT: u32 = 1;
    pub const FLUSH: u32 = 4;
    pub const GET_ID: u32 = 8;
}

/// Status byte values.
pub mod status {
    #![allow(missing_docs)]
    pub const OK: u8 = 0;
    pub const IOERR: u8 = 1;
    pub const UNSUPP: u8 = 2;
}

const HEADER_LEN: u32 = 16;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Read sectors into the data buffers.
    In,
    /// Write the data buffers to sectors.
    Out,
    /// Make earlier writes durable.
    Flush,
    /// Return the device serial.
    GetId,
}

/// One guest buffer of a request, checked to lie inside guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical start.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub kind: RequestKind,
    /// First sector (In/Out).
    pub sector: u64,
    /// Data buffers in order.
    pub data: Vec<Segment>,
    /// Total data length.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than the two descriptors every request needs.
    #[error("chain has {0} descriptor(s), needs a header and a status")]
    TooShort(usize),
    /// The header descriptor is device-writable, short or outside memory.
    #[error("bad header descriptor")]
    BadHeader,
    /// The status descriptor is driver-readable, empty or outside memory.
    #[error("bad status descriptor")]
    BadStatus,
    /// A data buffer lies (partly) outside guest memory.
    #[error("data buffer {addr:#x}+{len} is outside guest memory")]
    OutsideMemory {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// A data buffer has the wrong direction for the request type.
    #[error("data buffer has the wrong direction for request type {0}")]
    WrongDirection(u32),
    /// Read/write length not a positive multiple of 512.
    #[error("data length {0} is not a positive multiple of 512")]
    BadLength(u64),
    /// The sectors run past the end of the disk.
    #[error("sectors {sector}+{count} run past the disk's {capacity} sectors")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Sector count.
        count: u64,
        /// Disk capacity in sectors.
        capacity: u64,
    },
    /// A request type this device does not implement.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
}

impl ParseError {
    /// The status byte to report for this error.
    pub fn status(&self) -> u8 {
        match self {
            ParseError::Unsupported(_) => status::UNSUPP,
            _ => status::IOERR,
        }
    }
}

fn in_memory(mem: &GuestMemory, d: &Descriptor) -> bool {
    d.len() == 0 || mem.check_range(d.addr(), d.len() as usize)
}

/// Where the status byte of a chain goes, if its last descriptor is a usable
/// status descriptor: lets a refused request still be failed properly.
pub fn status_address(mem: &GuestMemory, descs: &[Descriptor]) -> Option<GuestAddress> {
    let last = descs.last()?;
    (descs.len() >= 2 && last.is_write_only() && last.len() >= 1 && mem.check_range(last.addr(), 1))
        .then(|| last.addr())
}

/// Parses and validates one request chain against a disk of `capacity`
/// sectors. `descs` is the chain as the queue walked it (bounded by the
/// queue size, so a looping chain ends up merely long, then refused).
pub fn parse(
    mem: &GuestMemory,
    descs: &[Descriptor],
    capacity: u64,
) -> Result<Request, ParseError> {
    let (Some(head), Some(tail)) = (descs.first(), descs.last()) else {
        return Err(ParseError::TooShort(0));
    };
    if descs.len() < 2 {
        return Err(ParseError::TooShort(descs.len()));
    }
    if head.is_write_only() || head.len() < HEADER_LEN || !in_memory(mem, head) {
        return Err(ParseError::BadHeader);
    }
    let status = status_address(mem, descs).ok_or(ParseError::BadStatus)?;
    let _ = tail;
    let req_type: u32 = mem
        .read_obj(head.addr())
        .map_err(|_| ParseError::BadHeader)?;
    let sector: u64 = mem
        .read_obj(head.addr().checked_add(8).ok_or(ParseError::BadHeader)?)
        .map_err(|_| ParseError::BadHeader)?;
    let (kind, wants_writable) = match req_type {
        types::IN => (RequestKind::In, true),
        types::OUT => (RequestKind::Out, false),
        types::FLUSH => (RequestKind::Flush, false),
        types::GET_ID => (RequestKind::GetId, true),
        other => return Err(ParseError::Unsupported(other)),
    };

    let middle = &descs[1..descs.len() - 1];
    let mut data = Vec::with_capacity(middle.len());
    let mut data_len: u64 = 0;
    for d in middle {
        if !in_memory(mem, d) {
            return Err(ParseError::OutsideMemory {
                addr: d.addr().0,
                len: d.len(),
            });
        }
        if kind != RequestKind::Flush && d.is_write_only() != wants_writable {
            return Err(ParseError::WrongDirection(req_type));
        }
        data_len += u64::from(d.len());
        data.push(Segment {
            addr: d.addr(),
            len: d.len(),
        });
    }

    match kind {
        RequestKind::In | RequestKind::Out => {
            if data_len == 0 || !data_len.is_multiple_of(SECTOR_SIZE) {
                return Err(ParseError::BadLength(data_len));
            }
            let count = data_len / SECTOR_SIZE;
            if sector.checked_add(count).is_none_or(|end| end > capacity) {
                return Err(ParseError::OutOfRange {
                    sector,
                    count,
                    capacity,
                });
            }
        }
        RequestKind::GetId if data_len == 0 => return Err(ParseError::BadLength(0)),
        RequestKind::Flush => data.clear(),
        RequestKind::GetId => {}
    }
    Ok(Request {
        kind,
        sector,
        data,
        data_len,
        status,
    })
}

/// The disk a request runs against.
pub struct Disk<'a> {
    /// The image.
    pub file: &'a mut File,
    /// Writes are refused.
    pub read_only: bool,
    /// The GET_ID answer (at most 20 bytes).
    pub serial: &'a [u8],
}

/// Carries out `req`; returns the status byte and the number of bytes
/// written into guest buffers (for the used ring).
pub fn execute(mem: &GuestMemory, req: &Request, disk: &mut Disk<'_>) -> (u8, u32) {
    let result = match req.kind {
        RequestKind::In => transfer(mem, req, disk, true),
        RequestKind::Out if disk.read_only => Err(std::io::Error::from_raw_os_error(libc::EROFS)),
        RequestKind::Out => transfer(mem, req, disk, false),
        RequestKind::Flush if disk.read_only => Ok(()),
        RequestKind::Flush => disk.file.sync_data(),
        RequestKind::GetId => write_id(mem, req, disk.serial),
    };
    let written = match req.kind {
        RequestKind::In => u32::try_from(req.data_len).unwrap_or(u32::MAX),
        RequestKind::GetId => req.data_len.min(ID_BYTES as u64) as u32,
        _ => 0,
    };
    match result {
        Ok(()) => (status::OK, written.saturating_add(1)),
        Err(e) => {
            tracing::debug!("virtio-blk {:?} at sector {}: {e}", req.kind, req.sector);
            (status::IOERR, 1)
        }
    }
}

fn transfer(
    mem: &GuestMemory,
    req: &Request,
    disk: &mut Disk<'_>,
    read: bool,
) -> std::io::Result<()> {
    let offset = req.sector.saturating_mul(SECTOR_SIZE);
    disk.file.seek(SeekFrom::Start(offset))?;
    for seg in &req.data {
        let r = if read {
            mem.read_exact_volatile_from(seg.addr, disk.file, seg.len as usize)
        } else {
            mem.write_all_volatile_to(seg.addr, disk.file, seg.len as usize)
        };
        r.map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(())
}

fn write_id(mem: &GuestMemory, req: &Request, serial: &[u8]) -> std::io::Result<()> {
    let mut id = [0u8; ID_BYTES];
    let n = serial.len().min(ID_BYTES);
    id[..n].copy_from_slice(&serial[..n]);
    let mut rest: &[u8] = &id;
    for seg in &req.data {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(seg.len as usize);
        mem.write_slice(&rest[..n], seg.addr)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        rest = &rest[n..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use virtio_queue::desc::split::Descriptor as D;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::GuestMemoryMmap;

    const W: u16 = 2; // VRING_DESC_F_WRITE
    const N: u16 = 1; // VRING_DESC_F_NEXT
    const MEM: u64 = 0x10_0000;

    fn mem() -> GuestMemory {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap()
    }

    fn header(m: &GuestMemory, at: u64, t: u32, sector: u64) {
        m.write_obj(t, GuestAddress(at)).unwrap();
        m.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        m.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn d(addr: u64, len: u32, flags: u16) -> D {
        D::new(addr, len, flags, 0)
    }

    #[test]
    fn parses_a_read() {
        let m = mem();
        header(&m, 0x1000, types::IN, 3);
        let c = [d(0x1000, 16, 0), d(0x2000, 1024, W), d(0x3000, 1, W)];
        let r = parse(&m, &c, 8).unwrap();
        assert_eq!(r.kind, RequestKind::In);
        assert_eq!(r.sector, 3);
        assert_eq!(r.data_len, 1024);
        assert_eq!(r.status, GuestAddress(0x3000));
    }

    #[test]
    fn hostile_chains_are_refused() {
        let m = mem();
        header(&m, 0x1000, types::IN, 0);
        let ok_head = d(0x1000, 16, 0);
        let ok_status = d(0x3000, 1, W);
        let cases: Vec<(Vec<D>, ParseError)> = vec![
            (vec![], ParseError::TooShort(0)),
            (vec![ok_head], ParseError::TooShort(1)),
            // Header writable / short / outside memory.
            (vec![d(0x1000, 16, W), ok_status], ParseError::BadHeader),
            (vec![d(0x1000, 8, 0), ok_status], ParseError::BadHeader),
            (vec![d(MEM - 8, 16, 0), ok_status], ParseError::BadHeader),
            (
                vec![d(u64::MAX - 4, 16, 0), ok_status],
                ParseError::BadHeader,
            ),
            // Status readable / empty / outside memory.
            (vec![ok_head, d(0x3000, 1, 0)], ParseError::BadStatus),
            (vec![ok_head, d(0x3000, 0, W)], ParseError::BadStatus),
            (vec![ok_head, d(MEM, 1, W)], ParseError::BadStatus),
            // Data outside memory, straddling the end, wrapping.
            (
                vec![ok_head, d(MEM - 512, 1024, W), ok_status],
                ParseError::OutsideMemory {
                    addr: MEM - 512,
                    len: 1024,
                },
            ),
            (
                vec![ok_head, d(u64::MAX - 511, 512, W), ok_status],
                ParseError::OutsideMemory {
                    addr: u64::MAX - 511,
                    len: 512,
                },
            ),
            // A read whose buffer is driver-readable (device would write
            // into memory the driver marked read-only).
            (
                vec![ok_head, d(0x2000, 512, 0), ok_status],
                ParseError::WrongDirection(types::IN),
            ),
            // Length not a multiple of 512, zero length.
            (
                vec![ok_head, d(0x2000, 100, W), ok_status],
                ParseError::BadLength(100),
            ),
            (vec![ok_head, ok_status], ParseError::BadLength(0)),
            // Past the end of the disk.
            (
                vec![ok_head, d(0x2000, 512 * 9, W), ok_status],
                ParseError::OutOfRange {
                    sector: 0,
                    count: 9,
                    capacity: 8,
                },
            ),
        ];
        for (chain, want) in cases {
            assert_eq!(parse(&m, &chain, 8), Err(want.clone()), "{chain:?}");
        }
        // Sector overflow.
        header(&m, 0x1000, types::IN, u64::MAX);
        assert!(matches!(
            parse(&m, &[ok_head, d(0x2000, 512, W), ok_status], u64::MAX),
            Err(ParseError::OutOfRange { .. })
        ));
        // A write whose buffer is device-writable.
        header(&m, 0x1000, types::OUT, 0);
        assert_eq!(
            parse(&m, &[ok_head, d(0x2000, 512, W), ok_status], 8),
            Err(ParseError::WrongDirection(types::OUT))
        );
        // Unknown type -> UNSUPP.
        header(&m, 0x1000, 77, 0);
        let e = parse(&m, &[ok_head, ok_status], 8).unwrap_err();
        assert_eq!(e.status(), status::UNSUPP);
    }

    #[test]
    fn looping_chain_from_the_queue_ends_and_is_refused() {
        // Descriptor 0 -> 1 -> 0 -> ...: the queue stops after `size`
        // descriptors; the result has a readable tail and is refused.
        let m = mem();
        let mq = MockSplitQueue::new(&m, 16);
        mq.desc_table()
            .store(
                0,
                virtio_queue::desc::RawDescriptor::from(D::new(0x1000, 16, N, 1)),
            )
            .unwrap();
        mq.desc_table()
            .store(
                1,
                virtio_queue::desc::RawDescriptor::from(D::new(0x2000, 512, N, 0)),
            )
            .unwrap();
        mq.avail().ring().ref_at(0).unwrap().store(0u16);
        mq.avail().idx().store(1u16);
        let mut q: Queue = mq.create_queue().unwrap();
        let chain = q.pop_descriptor_chain(&m).unwrap();
        let descs: Vec<D> = chain.collect();
        assert!(descs.len() <= 16);
        header(&m, 0x1000, types::IN, 0);
        assert_eq!(parse(&m, &descs, 8), Err(ParseError::BadStatus));
    }

    fn temp_disk(sectors: u64) -> File {
        let mut f = tempfile();
        f.write_all(&vec![0u8; (sectors * SECTOR_SIZE) as usize])
            .unwrap();
        f
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!(
            "nimbus-blk-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn write_then_read_round_trips_and_ro_refuses() {
        let m = mem();
        let mut file = temp_disk(8);
        m.write_slice(&[0xab; 512], GuestAddress(0x2000)).unwrap();
        header(&m, 0x1000, types::OUT, 2);
        let req = parse(
            &m,
            &[d(0x1000, 16, 0), d(0x2000, 512, 0), d(0x3000, 1, W)],
            8,
        )
        .unwrap();
        let mut disk = Disk {
            file: &mut file,
            read_only: false,
            serial: b"abc",
        };
        assert_eq!(execute(&m, &req, &mut disk), (status::OK, 1));
        let mut ro = Disk {
            file: &mut file,
            read_only: true,
            serial: b"",
        };
        assert_eq!(execute(&m, &req, &mut ro), (status::IOERR, 1));

        header(&m, 0x1000, types::IN, 2);
        let req = parse(
            &m,
            &[d(0x1000, 16, 0), d(0x4000, 512, W), d(0x3000, 1, W)],
            8,
        )
        .unwrap();
        let mut disk = Disk {
            file: &mut file,
            read_only: true,
            serial: b"",
        };
        assert_eq!(execute(&m, &req, &mut disk), (status::OK, 513));
        let mut back = [0u8; 512];
        m.read_slice(&mut back, GuestAddress(0x4000)).unwrap();
        assert_eq!(back, [0xab; 512]);
        let mut raw = vec![];
        file.seek(SeekFrom::Start(1024)).unwrap();
        file.read_to_end(&mut raw).unwrap();
        assert_eq!(&raw[..512], &[0xab; 512]);
    }

    #[test]
    fn get_id_writes_the_serial_padded() {
        let m = mem();
        let mut file = temp_disk(1);
        header(&m, 0x1000, types::GET_ID, 0);
        let req = parse(
            &m,
            &[d(0x1000, 16, 0), d(0x2000, 64, W), d(0x3000, 1, W)],
            1,
        )
        .unwrap();
        let mut disk = Disk {
            file: &mut file,
            read_only: false,
            serial: b"disk-01",
        };
        assert_eq!(execute(&m, &req, &mut disk), (status::OK, 21));
        let mut id = [0xffu8; 20];
        m.read_slice(&mut id, GuestAddress(0x2000)).unwrap();
        assert_eq!(&id[..7], b"disk-01");
        assert_eq!(&id[7..], &[0u8; 13]);
    }
}
