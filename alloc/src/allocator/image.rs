//! The free-set image: the allocator's free extents as a self-checking byte string, written
//! into the fs checkpoint and read back at mount.
//!
//! The byte layout lives here and nowhere else in code; `docs/DESIGN.md` (section 4) shows the
//! same table and a test checks that the two agree.
//!
//! ```text
//! offset  size  field
//!      0     8  magic b"PFNFREE1"
//!      8     8  region start PFN            (u64 LE)
//!     16     8  region length in frames     (u64 LE)
//!     24     8  extent count n              (u64 LE)
//!     32     4  crc32c of bytes [0, 32) followed by bytes [40, 40 + 16 n)   (u32 LE)
//!     36     4  reserved, zero
//!     40  16 n  n extents: start PFN (u64 LE), length in frames (u64 LE),
//!               sorted by start, non-empty, disjoint, never adjacent, inside the region
//! ```
//!
//! Decoding checks every field and never panics; the only allocation it makes is the vector of
//! extents, whose capacity is bounded by the image length (not by the count field).

use crate::error::AllocError;
use crate::pfn::{Pfn, PfnRange};

/// First eight bytes of every free-set image.
pub const MAGIC: [u8; 8] = *b"PFNFREE1";
/// Offset of the magic.
pub const OFF_MAGIC: usize = 0;
/// Offset of the region's first PFN.
pub const OFF_REGION_START: usize = 8;
/// Offset of the region's length in frames.
pub const OFF_REGION_LEN: usize = 16;
/// Offset of the extent count.
pub const OFF_EXTENT_COUNT: usize = 24;
/// Offset of the crc32c.
pub const OFF_CRC: usize = 32;
/// Offset of the reserved (zero) word.
pub const OFF_RESERVED: usize = 36;
/// Bytes before the first extent.
pub const HEADER_BYTES: usize = 40;
/// Bytes per extent entry: start PFN at +0, length at +8.
pub const ENTRY_BYTES: usize = 16;

/// One header field: where it is, how long, and its name in docs/DESIGN.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset in the image.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
    /// Name as the design document spells it.
    pub name: &'static str,
}

/// The header fields in order; they tile bytes `[0, HEADER_BYTES)`.
pub const FIELDS: [Field; 6] = [
    Field {
        offset: OFF_MAGIC,
        size: 8,
        name: "magic",
    },
    Field {
        offset: OFF_REGION_START,
        size: 8,
        name: "region_start",
    },
    Field {
        offset: OFF_REGION_LEN,
        size: 8,
        name: "region_len",
    },
    Field {
        offset: OFF_EXTENT_COUNT,
        size: 8,
        name: "extent_count",
    },
    Field {
        offset: OFF_CRC,
        size: 4,
        name: "crc32c",
    },
    Field {
        offset: OFF_RESERVED,
        size: 4,
        name: "reserved",
    },
];

fn corrupt(what: String) -> AllocError {
    AllocError::Corrupt(what)
}

fn read_u64(bytes: &[u8], off: usize) -> Option<u64> {
    let raw = bytes.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

fn read_u32(bytes: &[u8], off: usize) -> Option<u32> {
    let raw = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

/// The checksum stored at [`OFF_CRC`]: crc32c over the header before it and the whole body.
fn image_crc(image: &[u8]) -> u32 {
    let head = image.get(..OFF_CRC).unwrap_or(&[]);
    let body = image.get(HEADER_BYTES..).unwrap_or(&[]);
    crc32c::crc32c_append(crc32c::crc32c(head), body)
}

/// Encodes `extents` (sorted, disjoint, non-adjacent, inside `region`) as an image.
/// Anything else would make [`decode`] reject the image, so that precondition is asserted in
/// debug builds.
pub fn encode(region: PfnRange, extents: &[PfnRange]) -> Vec<u8> {
    debug_assert!(
        extents.iter().all(|e| region.covers(e))
            && extents.windows(2).all(|w| w[0].end() < w[1].start),
        "free-set image input must be sorted, coalesced and inside the region"
    );
    let body_bytes = extents.len().saturating_mul(ENTRY_BYTES);
    let mut out = Vec::with_capacity(HEADER_BYTES.saturating_add(body_bytes));
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&region.start.0.to_le_bytes());
    out.extend_from_slice(&region.len.to_le_bytes());
    out.extend_from_slice(&(extents.len() as u64).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // crc, filled in below
    out.extend_from_slice(&0u32.to_le_bytes()); // reserved
    debug_assert_eq!(out.len(), HEADER_BYTES);
    for e in extents {
        out.extend_from_slice(&e.start.0.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
    }
    let crc = image_crc(&out);
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and validates an image made by [`encode`] for the data region `region`: the
/// returned extents are sorted, non-empty, disjoint, non-adjacent and inside `region`.
pub fn decode(region: PfnRange, image: &[u8]) -> Result<Vec<PfnRange>, AllocError> {
    if image.len() < HEADER_BYTES {
        return Err(corrupt(format!(
            "image is {} bytes, shorter than its {HEADER_BYTES}-byte header",
            image.len()
        )));
    }
    if image.get(OFF_MAGIC..OFF_MAGIC + MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(corrupt("bad magic (not a free-set image)".to_string()));
    }
    let field = |off: usize| read_u64(image, off).ok_or_else(|| corrupt("short header".into()));
    let region_start = field(OFF_REGION_START)?;
    let region_len = field(OFF_REGION_LEN)?;
    let count = field(OFF_EXTENT_COUNT)?;
    let stored_crc = read_u32(image, OFF_CRC).ok_or_else(|| corrupt("short header".to_string()))?;
    let reserved =
        read_u32(image, OFF_RESERVED).ok_or_else(|| corrupt("short header".to_string()))?;
    let body = &image[HEADER_BYTES..];
    if !body.len().is_multiple_of(ENTRY_BYTES) {
        return Err(corrupt(format!(
            "body is {} bytes, not a whole number of {ENTRY_BYTES}-byte extents",
            body.len()
        )));
    }
    let entries = body.len() / ENTRY_BYTES;
    if u64::try_from(entries).ok() != Some(count) {
        return Err(corrupt(format!(
            "header says {count} extents, the body holds {entries}"
        )));
    }
    let actual_crc = image_crc(image);
    if stored_crc != actual_crc {
        return Err(corrupt(format!(
            "checksum mismatch: stored {stored_crc:#010x}, computed {actual_crc:#010x}"
        )));
    }
    if reserved != 0 {
        return Err(corrupt(format!("reserved word is {reserved:#x}, not zero")));
    }
    if region_start != region.start.0 || region_len != region.len {
        return Err(corrupt(format!(
            "image is for region [{region_start:#x}+{region_len}], the data region is {region}"
        )));
    }
    // `entries` is at most image.len() / 16: the allocation is bounded by the input.
    let mut out = Vec::with_capacity(entries);
    let mut prev_end: Option<u64> = None;
    for (i, raw) in body.chunks_exact(ENTRY_BYTES).enumerate() {
        let start = read_u64(raw, 0).ok_or_else(|| corrupt("short entry".into()))?;
        let len = read_u64(raw, 8).ok_or_else(|| corrupt("short entry".into()))?;
        let range = PfnRange::new(Pfn(start), len).ok_or_else(|| {
            corrupt(format!(
                "extent {i} ({start:#x}+{len}) is empty or overflows"
            ))
        })?;
        if !region.covers(&range) {
            return Err(corrupt(format!(
                "extent {i} {range} lies outside the data region {region}"
            )));
        }
        if let Some(pe) = prev_end {
            if start < pe {
                return Err(corrupt(format!(
                    "extent {i} {range} overlaps or precedes the one ending at {pe:#x}"
                )));
            }
            if start == pe {
                return Err(corrupt(format!(
                    "extent {i} {range} touches the one ending at {pe:#x} (not coalesced)"
                )));
            }
        }
        prev_end = Some(range.end().0);
        out.push(range);
    }
    Ok(out)
}
