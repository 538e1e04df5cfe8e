//! The on-pool format of a tree: node frames and overflow runs, encoded and decoded here and
//! nowhere else.
//!
//! [`FIELDS`] (node header) and [`OVERFLOW_FIELDS`] (overflow run header) hold every offset;
//! `btree/tests/design_doc.rs` checks that docs/DESIGN.md section 3.4 shows the same tables.
//!
//! ```text
//! node frame (4096 bytes, little-endian)
//! 0      32-byte header (FIELDS)
//! 32     slot directory: count x u16, the byte offset of entry i
//!        zero
//! heap   entries, packed from the end of the frame: entry 0 ends at 4096, entry i ends where
//!        entry i-1 starts; heap = the offset of the last entry (4096 if none)
//! entry: klen u16 | vlen u16 (bit 15: overflow reference) | key | value
//! ```
//!
//! Invariants of a node that decodes (checked by [`Node::decode`], which never panics):
//! - magic, crc32c of the whole frame (crc field zero), flags and reserved zero, count >= 1;
//! - the layout is canonical: slot offsets are exactly the packed positions, the gap between
//!   the slot directory and the heap is zero. So `encode(decode(f)) == f` for every valid `f`;
//! - leaf (level 0): keys 1..=MAX_KEY bytes, strictly increasing; a value is inline
//!   (0..=INLINE_VALUE_MAX bytes) or an overflow reference whose ranges lie in the data region
//!   and add up to exactly the frames the length needs;
//! - branch (level > 0): entry 0 has the empty key, the others keys of 1..=MAX_KEY bytes,
//!   strictly increasing; every value is a child PFN (8 bytes) inside the data region.

use pfnfs_alloc::{FRAME_SIZE, Pfn, PfnRange};

use crate::error::TreeError;

/// Magic of a node frame.
pub const NODE_MAGIC: [u8; 8] = *b"PBTNODE2";
/// Magic of the first frame of an overflow run.
pub const OVERFLOW_MAGIC: [u8; 8] = *b"PBTVAL02";
/// Bytes in a node: one frame.
pub const NODE_BYTES: usize = FRAME_SIZE as usize;
/// Bytes of the node header.
pub const HEADER_BYTES: usize = 32;
/// Bytes of one slot (u16 offset).
pub const SLOT_BYTES: usize = 2;
/// Bytes of an entry's own header (klen u16, vlen u16).
pub const ENTRY_HEADER_BYTES: usize = 4;
/// Bytes of the overflow run header at the start of its first frame.
pub const OVERFLOW_HEADER_BYTES: usize = 32;
/// Longest key.
pub const MAX_KEY: usize = 512;
/// Longest value.
pub const MAX_VALUE: usize = 2 << 20;
/// Longest value stored inside a leaf; longer ones go to an overflow run.
pub const INLINE_VALUE_MAX: usize = 1024;
/// Most ranges an overflow run may consist of.
pub const MAX_OVERFLOW_RANGES: usize = 8;
/// Tallest tree (levels); with at least 7 children per branch far beyond any pool.
pub const MAX_HEIGHT: u8 = 32;
/// `vlen` bit 15: the value is an overflow reference.
pub const VLEN_OVERFLOW: u16 = 0x8000;
/// Bytes of an overflow reference with `n` ranges: len u32, crc u32, n x (start u64, frames u64).
pub const fn overflow_ref_bytes(n: usize) -> usize {
    8 + 16 * n
}
/// Bytes a node can give to slots and entries.
pub const NODE_CAPACITY: usize = NODE_BYTES - HEADER_BYTES;
/// A node whose slots and entries take fewer bytes than this after a delete is merged with
/// (or takes entries from) a sibling.
pub const MIN_FILL: usize = NODE_BYTES / 4;

/// One field of an encoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The name docs/DESIGN.md uses.
    pub name: &'static str,
    /// Byte offset.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

const fn f(name: &'static str, offset: usize, size: usize) -> Field {
    Field { name, offset, size }
}

/// Node header fields.
pub mod field {
    use super::{Field, f};
    /// `PBTNODE2`.
    pub const MAGIC: Field = f("magic", 0, 8);
    /// 0 = leaf; a branch's children have level - 1.
    pub const LEVEL: Field = f("level", 8, 1);
    /// Zero (no flag defined).
    pub const FLAGS: Field = f("flags", 9, 1);
    /// Entries, u16, at least 1.
    pub const COUNT: Field = f("count", 10, 2);
    /// Offset of the lowest entry byte, u32 (4096 if no entry).
    pub const HEAP: Field = f("heap", 12, 4);
    /// Generation of the transaction that wrote the node, u64.
    pub const GENERATION: Field = f("generation", 16, 8);
    /// CRC32C of the whole frame with this field zero.
    pub const CRC32C: Field = f("crc32c", 24, 4);
    /// Zero.
    pub const RESERVED: Field = f("reserved", 28, 4);
}

/// Every node header field in byte order: contiguous, covering [`HEADER_BYTES`].
pub const FIELDS: [Field; 8] = [
    field::MAGIC,
    field::LEVEL,
    field::FLAGS,
    field::COUNT,
    field::HEAP,
    field::GENERATION,
    field::CRC32C,
    field::RESERVED,
];

/// Overflow run header fields.
pub mod overflow_field {
    use super::{Field, f};
    /// `PBTVAL02`.
    pub const MAGIC: Field = f("magic", 0, 8);
    /// Value length in bytes, u64.
    pub const LEN: Field = f("len", 8, 8);
    /// CRC32C of the value bytes.
    pub const CRC32C: Field = f("crc32c", 16, 4);
    /// Zero.
    pub const RESERVED: Field = f("reserved", 20, 4);
    /// Generation of the transaction that wrote the run, u64.
    pub const GENERATION: Field = f("generation", 24, 8);
}

/// Every overflow header field in byte order: contiguous, covering [`OVERFLOW_HEADER_BYTES`].
pub const OVERFLOW_FIELDS: [Field; 5] = [
    overflow_field::MAGIC,
    overflow_field::LEN,
    overflow_field::CRC32C,
    overflow_field::RESERVED,
    overflow_field::GENERATION,
];

/// Frames an overflow run of a `len`-byte value takes (header included).
pub fn overflow_frames(len: usize) -> u64 {
    (OVERFLOW_HEADER_BYTES + len).div_ceil(NODE_BYTES) as u64
}

/// Where a leaf's value lives when it does not fit inline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverflowRef {
    /// Value length in bytes (more than [`INLINE_VALUE_MAX`]).
    pub len: u32,
    /// CRC32C of the value.
    pub crc: u32,
    /// The run's frames in order: 1..=[`MAX_OVERFLOW_RANGES`] ranges, adding up to
    /// [`overflow_frames`]`(len)`.
    pub ranges: Vec<PfnRange>,
}

impl OverflowRef {
    /// The run's first frame (where the header is; the name of the run).
    pub fn first(&self) -> Pfn {
        self.ranges.first().map_or(Pfn(0), |r| r.start)
    }
}

/// An entry's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A leaf value stored in the node.
    Inline(Vec<u8>),
    /// A leaf value stored in an overflow run.
    Overflow(OverflowRef),
    /// A branch entry's child.
    Child(Pfn),
}

impl Value {
    /// Bytes the value takes in a node.
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::Inline(v) => v.len(),
            Value::Overflow(r) => overflow_ref_bytes(r.ranges.len()),
            Value::Child(_) => 8,
        }
    }

    /// The child of a branch entry (`Pfn(0)`, never a data frame, for a leaf value).
    pub fn child(&self) -> Pfn {
        match self {
            Value::Child(p) => *p,
            _ => Pfn(0),
        }
    }
}

/// One entry of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Leaf: the key. Branch: the lower bound of the child's keys (empty for entry 0: the
    /// node's own lower bound).
    pub key: Vec<u8>,
    /// The value or child.
    pub value: Value,
}

impl Entry {
    /// Bytes the entry takes in a node, its slot included.
    pub fn encoded_len(&self) -> usize {
        SLOT_BYTES + ENTRY_HEADER_BYTES + self.key.len() + self.value.encoded_len()
    }
}

/// A decoded node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// 0 for a leaf.
    pub level: u8,
    /// Entries in key order.
    pub entries: Vec<Entry>,
}

fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}
fn put(b: &mut [u8], field: Field, bytes: &[u8]) {
    debug_assert_eq!(bytes.len(), field.size);
    b[field.offset..field.offset + field.size].copy_from_slice(bytes);
}

/// CRC32C of a node frame with its crc field taken as zero.
pub fn node_crc(frame: &[u8]) -> u32 {
    let at = field::CRC32C.offset;
    let crc = crc32c::crc32c(&frame[..at]);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4]);
    crc32c::crc32c_append(crc, &frame[at + 4..])
}

impl Node {
    /// Bytes of slots and entries (the header excluded): at most [`NODE_CAPACITY`] to fit.
    pub fn payload_len(&self) -> usize {
        self.entries.iter().map(Entry::encoded_len).sum()
    }

    /// True if the node fits in one frame.
    pub fn fits(&self) -> bool {
        self.payload_len() <= NODE_CAPACITY && self.entries.len() <= usize::from(u16::MAX)
    }

    /// The frame of this node written by transaction `generation`. The node must fit
    /// ([`Node::fits`]) and hold valid keys and values; both are programmer errors otherwise.
    pub fn encode(&self, generation: u64) -> Vec<u8> {
        assert!(self.fits(), "btree: encoding a node that does not fit");
        let mut b = vec![0u8; NODE_BYTES];
        put(&mut b, field::MAGIC, &NODE_MAGIC);
        put(&mut b, field::LEVEL, &[self.level]);
        put(
            &mut b,
            field::COUNT,
            &(self.entries.len() as u16).to_le_bytes(),
        );
        put(&mut b, field::GENERATION, &generation.to_le_bytes());
        let mut end = NODE_BYTES;
        for (i, e) in self.entries.iter().enumerate() {
            let len = e.encoded_len() - SLOT_BYTES;
            let at = end - len;
            let slot = HEADER_BYTES + SLOT_BYTES * i;
            b[slot..slot + 2].copy_from_slice(&(at as u16).to_le_bytes());
            let vlen = match &e.value {
                Value::Overflow(r) => overflow_ref_bytes(r.ranges.len()) as u16 | VLEN_OVERFLOW,
                v => v.encoded_len() as u16,
            };
            b[at..at + 2].copy_from_slice(&(e.key.len() as u16).to_le_bytes());
            b[at + 2..at + 4].copy_from_slice(&vlen.to_le_bytes());
            let k = at + ENTRY_HEADER_BYTES;
            b[k..k + e.key.len()].copy_from_slice(&e.key);
            let v = k + e.key.len();
            match &e.value {
                Value::Inline(bytes) => b[v..v + bytes.len()].copy_from_slice(bytes),
                Value::Child(p) => b[v..v + 8].copy_from_slice(&p.0.to_le_bytes()),
                Value::Overflow(r) => {
                    b[v..v + 4].copy_from_slice(&r.len.to_le_bytes());
                    b[v + 4..v + 8].copy_from_slice(&r.crc.to_le_bytes());
                    for (j, range) in r.ranges.iter().enumerate() {
                        let at = v + 8 + 16 * j;
                        b[at..at + 8].copy_from_slice(&range.start.0.to_le_bytes());
                        b[at + 8..at + 16].copy_from_slice(&range.len.to_le_bytes());
                    }
                }
            }
            end = at;
        }
        put(&mut b, field::HEAP, &(end as u32).to_le_bytes());
        let crc = node_crc(&b);
        put(&mut b, field::CRC32C, &crc.to_le_bytes());
        b
    }

    /// Decodes and checks node frame `frame`, read from `pfn`, of a tree in data region
    /// `data` (see the module header for every check). Never panics.
    pub fn decode(frame: &[u8], pfn: u64, data: PfnRange) -> Result<Node, TreeError> {
        NodeView::parse(frame, pfn, data)?.to_node(data)
    }
}

/// A node frame that passed every check of [`Node::decode`], read in place: every read
/// (lookups, floor, the range cursor) uses it to search and step through a node without
/// building one; only the keys and values a read returns are copied out.
#[derive(Clone, Copy, Debug)]
pub struct NodeView<'f> {
    frame: &'f [u8],
    pfn: u64,
    level: u8,
    count: usize,
}

impl<'f> NodeView<'f> {
    /// Checks `frame` (read from `pfn`) exactly as [`Node::decode`] does, allocating nothing.
    pub fn parse(frame: &'f [u8], pfn: u64, data: PfnRange) -> Result<NodeView<'f>, TreeError> {
        let bad = |what: String| TreeError::corrupt(pfn, what);
        if frame.len() != NODE_BYTES {
            return Err(bad(format!("node frame of {} bytes", frame.len())));
        }
        if frame[..8] != NODE_MAGIC {
            return Err(bad("no node magic".into()));
        }
        let stored = get_u32(frame, field::CRC32C.offset);
        let crc = node_crc(frame);
        if stored != crc {
            return Err(bad(format!(
                "node crc {stored:#010x}, frame has {crc:#010x}"
            )));
        }
        let level = frame[field::LEVEL.offset];
        if level >= MAX_HEIGHT {
            return Err(bad(format!("level {level}")));
        }
        if frame[field::FLAGS.offset] != 0 || get_u32(frame, field::RESERVED.offset) != 0 {
            return Err(bad("flags or reserved bytes not zero".into()));
        }
        let count = usize::from(get_u16(frame, field::COUNT.offset));
        if count == 0 {
            return Err(bad("node without entries".into()));
        }
        let slots_end = HEADER_BYTES + SLOT_BYTES * count;
        if slots_end > NODE_BYTES {
            return Err(bad(format!("{count} slots do not fit")));
        }
        let heap = get_u32(frame, field::HEAP.offset) as usize;
        let mut end = NODE_BYTES;
        let mut prev: &[u8] = &[];
        for i in 0..count {
            let at = usize::from(get_u16(frame, HEADER_BYTES + SLOT_BYTES * i));
            if at < slots_end || at + ENTRY_HEADER_BYTES > end {
                return Err(bad(format!("entry {i} at {at} outside {slots_end}..{end}")));
            }
            let klen = usize::from(get_u16(frame, at));
            let vlen_raw = get_u16(frame, at + 2);
            let overflow = vlen_raw & VLEN_OVERFLOW != 0;
            let vlen = usize::from(vlen_raw & !VLEN_OVERFLOW);
            if at + ENTRY_HEADER_BYTES + klen + vlen != end {
                return Err(bad(format!(
                    "entry {i} at {at} ({klen}+{vlen} bytes) does not end at {end}"
                )));
            }
            let k = at + ENTRY_HEADER_BYTES;
            let key = &frame[k..k + klen];
            let v = &frame[k + klen..end];
            if level > 0 && i == 0 {
                if klen != 0 {
                    return Err(bad("first branch key not empty".into()));
                }
            } else if klen == 0 || klen > MAX_KEY {
                return Err(bad(format!("entry {i}: key of {klen} bytes")));
            }
            if i >= 1 && prev >= key {
                return Err(bad(format!("entry {i}: keys out of order")));
            }
            if level > 0 {
                if overflow || vlen != 8 {
                    return Err(bad(format!("branch entry {i}: value of {vlen} bytes")));
                }
                let child = get_u64(v, 0);
                if !data.contains(Pfn(child)) {
                    return Err(bad(format!(
                        "branch entry {i}: child {child:#x} outside the data region {data}"
                    )));
                }
            } else if overflow {
                check_ref(v, data).map_err(|e| bad(format!("entry {i}: {e}")))?;
            } else if vlen > INLINE_VALUE_MAX {
                return Err(bad(format!("entry {i}: inline value of {vlen} bytes")));
            }
            prev = key;
            end = at;
        }
        if heap != end {
            return Err(bad(format!("heap field {heap}, entries start at {end}")));
        }
        if frame[slots_end..end].iter().any(|&b| b != 0) {
            return Err(bad("bytes between slots and entries not zero".into()));
        }
        Ok(NodeView {
            frame,
            pfn,
            level,
            count,
        })
    }

    /// The view of `frame` (read from `pfn`), which [`NodeView::parse`] has accepted and
    /// which has not changed since: nothing is checked again. Reads that keep a frame buffer
    /// across calls (the range cursor) take their view back with it.
    pub(crate) fn parsed(frame: &'f [u8], pfn: u64) -> NodeView<'f> {
        debug_assert!(frame.len() == NODE_BYTES && frame[..8] == NODE_MAGIC);
        NodeView {
            frame,
            pfn,
            level: frame[field::LEVEL.offset],
            count: usize::from(get_u16(frame, field::COUNT.offset)),
        }
    }

    /// The node, built: every key and value copied out.
    pub fn to_node(&self, data: PfnRange) -> Result<Node, TreeError> {
        let mut entries = Vec::with_capacity(self.count);
        for i in 0..self.count {
            entries.push(Entry {
                key: self.key(i).to_vec(),
                value: self.value(i, data)?,
            });
        }
        Ok(Node {
            level: self.level,
            entries,
        })
    }

    /// 0 for a leaf.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Entries (at least 1).
    pub fn count(&self) -> usize {
        self.count
    }

    /// (offset, klen, vlen with flags) of entry `i` (`i < count`, checked by `parse`).
    fn entry(&self, i: usize) -> (usize, usize, u16) {
        let at = usize::from(get_u16(self.frame, HEADER_BYTES + SLOT_BYTES * i));
        (
            at,
            usize::from(get_u16(self.frame, at)),
            get_u16(self.frame, at + 2),
        )
    }

    /// The key of entry `i` (`i < count`).
    pub fn key(&self, i: usize) -> &'f [u8] {
        let (at, klen, _) = self.entry(i);
        &self.frame[at + ENTRY_HEADER_BYTES..at + ENTRY_HEADER_BYTES + klen]
    }

    /// The value of entry `i` (`i < count`), decoded.
    pub fn value(&self, i: usize, data: PfnRange) -> Result<Value, TreeError> {
        let (at, klen, vlen_raw) = self.entry(i);
        let v = at + ENTRY_HEADER_BYTES + klen;
        let vlen = usize::from(vlen_raw & !VLEN_OVERFLOW);
        let bytes = &self.frame[v..v + vlen];
        Ok(if self.level > 0 {
            Value::Child(Pfn(get_u64(bytes, 0)))
        } else if vlen_raw & VLEN_OVERFLOW != 0 {
            Value::Overflow(decode_ref(bytes, data).map_err(|e| TreeError::corrupt(self.pfn, e))?)
        } else {
            Value::Inline(bytes.to_vec())
        })
    }

    /// The bytes of leaf entry `i` (`i < count`) if its value is inline (`None` for an
    /// overflow reference or a branch entry).
    pub fn inline_value(&self, i: usize) -> Option<&'f [u8]> {
        let (at, klen, vlen_raw) = self.entry(i);
        if self.level > 0 || vlen_raw & VLEN_OVERFLOW != 0 {
            return None;
        }
        let v = at + ENTRY_HEADER_BYTES + klen;
        Some(&self.frame[v..v + usize::from(vlen_raw)])
    }

    /// The child of branch entry `i` (`i < count`).
    pub fn child(&self, i: usize) -> Pfn {
        let (at, klen, _) = self.entry(i);
        Pfn(get_u64(self.frame, at + ENTRY_HEADER_BYTES + klen))
    }

    /// Index of the entry with key `key` (leaf), or where it would go.
    pub fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Index of the child of a branch whose key range holds `key`.
    pub fn child_index(&self, key: &[u8]) -> usize {
        // Entries 1.. with key <= `key`: their count is the index.
        let (mut lo, mut hi) = (1, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo - 1
    }
}

/// Checks an overflow reference without building it.
fn check_ref(v: &[u8], data: PfnRange) -> Result<(), String> {
    if v.len() < overflow_ref_bytes(1) || !(v.len() - 8).is_multiple_of(16) {
        return Err(format!("overflow reference of {} bytes", v.len()));
    }
    let n = (v.len() - 8) / 16;
    if n > MAX_OVERFLOW_RANGES {
        return Err(format!("overflow reference with {n} ranges"));
    }
    let len = get_u32(v, 0);
    if (len as usize) <= INLINE_VALUE_MAX || len as usize > MAX_VALUE {
        return Err(format!("overflow value of {len} bytes"));
    }
    let mut frames: u64 = 0;
    for j in 0..n {
        let start = get_u64(v, 8 + 16 * j);
        let count = get_u64(v, 16 + 16 * j);
        if !PfnRange::new(Pfn(start), count).is_some_and(|r| data.covers(&r)) {
            return Err(format!(
                "overflow range {start:#x}+{count} outside the data region"
            ));
        }
        frames = frames.saturating_add(count);
    }
    let want = overflow_frames(len as usize);
    if frames != want {
        return Err(format!(
            "overflow run of {frames} frames for {len} bytes (needs {want})"
        ));
    }
    Ok(())
}

/// Decodes an overflow reference (the `vlen` bytes of a leaf value).
fn decode_ref(v: &[u8], data: PfnRange) -> Result<OverflowRef, String> {
    check_ref(v, data)?;
    let n = (v.len() - 8) / 16;
    let ranges = (0..n)
        .filter_map(|j| PfnRange::new(Pfn(get_u64(v, 8 + 16 * j)), get_u64(v, 16 + 16 * j)))
        .collect();
    Ok(OverflowRef {
        len: get_u32(v, 0),
        crc: get_u32(v, 4),
        ranges,
    })
}

/// The bytes of an overflow run holding `value` (header first, zero-padded to whole frames).
pub fn encode_overflow(value: &[u8], generation: u64) -> Vec<u8> {
    let frames = overflow_frames(value.len()) as usize;
    let mut b = vec![0u8; frames * NODE_BYTES];
    put(&mut b, overflow_field::MAGIC, &OVERFLOW_MAGIC);
    put(
        &mut b,
        overflow_field::LEN,
        &(value.len() as u64).to_le_bytes(),
    );
    put(
        &mut b,
        overflow_field::CRC32C,
        &crc32c::crc32c(value).to_le_bytes(),
    );
    put(
        &mut b,
        overflow_field::GENERATION,
        &generation.to_le_bytes(),
    );
    b[OVERFLOW_HEADER_BYTES..OVERFLOW_HEADER_BYTES + value.len()].copy_from_slice(value);
    b
}

/// The value in overflow run bytes `run` (the frames of `r`, concatenated), checked against
/// its reference and its header; the bytes after the value must be zero (so that any damage
/// to the run's frames is caught).
pub fn decode_overflow(run: &[u8], r: &OverflowRef) -> Result<Vec<u8>, TreeError> {
    let bad = |what: String| TreeError::corrupt(r.first().0, what);
    let len = r.len as usize;
    if run.len() < OVERFLOW_HEADER_BYTES + len {
        return Err(bad(format!("overflow run of {} bytes", run.len())));
    }
    if run[..8] != OVERFLOW_MAGIC {
        return Err(bad("no overflow magic".into()));
    }
    let hlen = get_u64(run, overflow_field::LEN.offset);
    let hcrc = get_u32(run, overflow_field::CRC32C.offset);
    if hlen != u64::from(r.len) || hcrc != r.crc {
        return Err(bad(format!(
            "overflow header says {hlen} bytes crc {hcrc:#010x}, the leaf {} bytes crc {:#010x}",
            r.len, r.crc
        )));
    }
    if get_u32(run, overflow_field::RESERVED.offset) != 0 {
        return Err(bad("overflow reserved bytes not zero".into()));
    }
    let value = &run[OVERFLOW_HEADER_BYTES..OVERFLOW_HEADER_BYTES + len];
    if run[OVERFLOW_HEADER_BYTES + len..].iter().any(|&b| b != 0) {
        return Err(bad("bytes after the overflow value not zero".into()));
    }
    let crc = crc32c::crc32c(value);
    if crc != r.crc {
        return Err(bad(format!(
            "overflow value crc {crc:#010x}, expected {:#010x}",
            r.crc
        )));
    }
    Ok(value.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> PfnRange {
        PfnRange::new(Pfn(1536), 2560).unwrap()
    }

    #[test]
    fn fields_are_contiguous() {
        for (table, total) in [
            (&FIELDS[..], HEADER_BYTES),
            (&OVERFLOW_FIELDS[..], OVERFLOW_HEADER_BYTES),
        ] {
            let mut at = 0;
            for f in table {
                assert_eq!(f.offset, at, "{}", f.name);
                at += f.size;
            }
            assert_eq!(at, total);
        }
    }

    #[test]
    fn two_maximal_entries_fit() {
        let big = Entry {
            key: vec![1; MAX_KEY],
            value: Value::Inline(vec![2; INLINE_VALUE_MAX]),
        };
        let ovf = Entry {
            key: vec![1; MAX_KEY],
            value: Value::Overflow(OverflowRef {
                len: MAX_VALUE as u32,
                crc: 0,
                ranges: vec![PfnRange::new(Pfn(1536), 1).unwrap(); MAX_OVERFLOW_RANGES],
            }),
        };
        assert!(ovf.encoded_len() <= big.encoded_len());
        let mut second = big.clone();
        second.key[0] = 2;
        let node = Node {
            level: 0,
            entries: vec![big, second],
        };
        assert!(node.fits());
    }

    #[test]
    fn roundtrip_and_every_byte_flip_fails() {
        let node = Node {
            level: 0,
            entries: vec![
                Entry {
                    key: b"a".to_vec(),
                    value: Value::Inline(b"1".to_vec()),
                },
                Entry {
                    key: b"b".to_vec(),
                    value: Value::Overflow(OverflowRef {
                        len: 5000,
                        crc: 7,
                        ranges: vec![PfnRange::new(Pfn(1600), 2).unwrap()],
                    }),
                },
            ],
        };
        let frame = node.encode(9);
        assert_eq!(Node::decode(&frame, 1, region()).unwrap(), node);
        for at in 0..NODE_BYTES {
            let mut f = frame.clone();
            f[at] ^= 0x10;
            assert!(Node::decode(&f, 1, region()).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn overflow_roundtrip() {
        let value: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let run = encode_overflow(&value, 3);
        let r = OverflowRef {
            len: 5000,
            crc: crc32c::crc32c(&value),
            ranges: vec![PfnRange::new(Pfn(1600), 2).unwrap()],
        };
        assert_eq!(decode_overflow(&run, &r).unwrap(), value);
        let mut bad = run.clone();
        bad[100] ^= 1;
        assert!(decode_overflow(&bad, &r).is_err());
    }
}
