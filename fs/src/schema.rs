//! The keys and values of the metadata tree (format 2).
//!
//! Format 2 keeps a pool's metadata in one copy-on-write B+tree of byte keys and values
//! (`pfnfs-btree`), committed by naming its root in the superblock. This module is the one
//! place that says what those bytes mean: every key starts with a one-byte *tag* naming its
//! table, followed by big-endian integers (so that the tree's byte order is numeric order and
//! one inode's entries are adjacent), and every value has a fixed little-endian layout.
//! Encoders and decoders live here and nowhere else; decoders check lengths and ranges and
//! never panic. docs/DESIGN.md section 3.5 draws every layout, and `tests/schema.rs` checks
//! the table there against [`TABLES`] and pins every layout with golden bytes, so a reordered
//! field or enum cannot change the format silently.

use pfnfs_alloc::{Pfn, PfnRange};
use pfnfs_extent::Extent;

use crate::inode::{Attr, Kind, Time};

/// Tag of the inode table: `[0x10][ino]` -> [`InodeRecord`]; the inode's extents and xattrs
/// follow it under the same prefix ([`SUB_EXTENT`], [`SUB_XATTR`]), so that one range scan
/// reads an inode whole.
pub const TAG_INODE: u8 = 0x10;
/// Sub-tag of an extent: `[0x10][ino][0x20][file frame]` -> [`encode_extent`].
pub const SUB_EXTENT: u8 = 0x20;
/// Sub-tag of an extended attribute: `[0x10][ino][0x30][name]` -> the value's bytes.
pub const SUB_XATTR: u8 = 0x30;
/// Tag of the name index of directories: `[0x40][dir][name]` -> [`NameEntry`].
pub const TAG_NAME: u8 = 0x40;
/// Tag of the readdir index of directories: `[0x41][dir][cookie]` -> [`CookieEntry`].
pub const TAG_COOKIE: u8 = 0x41;
/// Tag of the free set: `[0x50][start pfn]` -> frames, u64.
pub const TAG_FREE: u8 = 0x50;
/// Tag of the orphan list: `[0x60][ino]` -> empty. Inodes with no name left that were
/// still open at the commit; reclaimed at the next mount.
pub const TAG_ORPHAN: u8 = 0x60;

/// Tag of the bad-frame table: `[0x70][start pfn]` -> frames, u64. Frames whose memory
/// failed (a SIGBUS on the pool): never allocated again, listed by `pfnfs stat` and fsck.
pub const TAG_BAD: u8 = 0x70;

/// One table of the tree, for the document check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    /// The tag byte.
    pub tag: u8,
    /// The sub-tag after the inode number, for the tables inside an inode's prefix.
    pub sub: Option<u8>,
    /// The table's name as docs/DESIGN.md writes it.
    pub name: &'static str,
}

/// Every table, in key order.
pub const TABLES: [Table; 8] = [
    Table {
        tag: TAG_INODE,
        sub: None,
        name: "inode",
    },
    Table {
        tag: TAG_INODE,
        sub: Some(SUB_EXTENT),
        name: "extent",
    },
    Table {
        tag: TAG_INODE,
        sub: Some(SUB_XATTR),
        name: "xattr",
    },
    Table {
        tag: TAG_NAME,
        sub: None,
        name: "name",
    },
    Table {
        tag: TAG_COOKIE,
        sub: None,
        name: "cookie",
    },
    Table {
        tag: TAG_FREE,
        sub: None,
        name: "free",
    },
    Table {
        tag: TAG_ORPHAN,
        sub: None,
        name: "orphan",
    },
    Table {
        tag: TAG_BAD,
        sub: None,
        name: "bad",
    },
];

fn key2(tag: u8, a: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(tag);
    k.extend_from_slice(&a.to_be_bytes());
    k
}

fn key3(tag: u8, a: u64, b: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + b.len());
    k.push(tag);
    k.extend_from_slice(&a.to_be_bytes());
    k.extend_from_slice(b);
    k
}

fn inode_sub_key(ino: u64, sub: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + rest.len());
    k.push(TAG_INODE);
    k.extend_from_slice(&ino.to_be_bytes());
    k.push(sub);
    k.extend_from_slice(rest);
    k
}

/// Key of inode `ino`'s record.
pub fn inode_key(ino: u64) -> Vec<u8> {
    key2(TAG_INODE, ino)
}

/// Key of the extent of `ino` starting at logical frame `file_frame`.
pub fn extent_key(ino: u64, file_frame: u64) -> Vec<u8> {
    inode_sub_key(ino, SUB_EXTENT, &file_frame.to_be_bytes())
}

/// Key of `ino`'s extended attribute `name`.
pub fn xattr_key(ino: u64, name: &[u8]) -> Vec<u8> {
    inode_sub_key(ino, SUB_XATTR, name)
}

/// Key of `name` in directory `dir`'s name index.
pub fn name_key(dir: u64, name: &[u8]) -> Vec<u8> {
    key3(TAG_NAME, dir, name)
}

/// Key of readdir cookie `cookie` in directory `dir`.
pub fn cookie_key(dir: u64, cookie: u64) -> Vec<u8> {
    key3(TAG_COOKIE, dir, &cookie.to_be_bytes())
}

/// Key of the free extent starting at `start`.
pub fn free_key(start: Pfn) -> Vec<u8> {
    key2(TAG_FREE, start.0)
}

/// Key of the bad-frame range starting at `start`.
pub fn bad_key(start: Pfn) -> Vec<u8> {
    key2(TAG_BAD, start.0)
}

/// Key of `ino`'s orphan entry.
pub fn orphan_key(ino: u64) -> Vec<u8> {
    key2(TAG_ORPHAN, ino)
}

/// A range of keys, `[start, end)` (`None`: to the end).
pub type KeyRange = (Vec<u8>, Option<Vec<u8>>);

/// The key range `[start, end)` of everything in table `tag` whose first integer is `a`
/// (an inode whole: record, extents, xattrs; one directory's names or cookies).
pub fn prefix_range(tag: u8, a: u64) -> KeyRange {
    let start = key2(tag, a);
    let end = match a.checked_add(1) {
        Some(b) => key2(tag, b),
        None => vec![tag + 1],
    };
    (start, Some(end))
}

/// The key range of inode `ino`'s entries of sub-table `sub` (its extents or xattrs).
pub fn inode_sub_range(ino: u64, sub: u8) -> KeyRange {
    (
        inode_sub_key(ino, sub, &[]),
        Some(inode_sub_key(ino, sub + 1, &[])),
    )
}

/// The key range of a whole table.
pub fn table_range(tag: u8) -> KeyRange {
    (vec![tag], Some(vec![tag + 1]))
}

/// What a key in the inode table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InodeKey<'a> {
    /// The inode's record.
    Record(u64),
    /// An extent at a file frame.
    Extent(u64, u64),
    /// An extended attribute.
    Xattr(u64, &'a [u8]),
}

/// Parses a key of the inode table.
pub fn inode_table_key(key: &[u8]) -> Result<InodeKey<'_>, SchemaError> {
    if key.first() != Some(&TAG_INODE) {
        return Err(bad("not an inode table key"));
    }
    let ino = key_id(key)?;
    match (key.len(), key.get(9)) {
        (9, _) => Ok(InodeKey::Record(ino)),
        (18, Some(&SUB_EXTENT)) => {
            let mut w = [0u8; 8];
            w.copy_from_slice(&key[10..18]);
            Ok(InodeKey::Extent(ino, u64::from_be_bytes(w)))
        }
        (n, Some(&SUB_XATTR)) if n > 10 => Ok(InodeKey::Xattr(ino, &key[10..])),
        _ => Err(bad(format!("malformed inode table key {key:02x?}"))),
    }
}

/// Why bytes read from the tree do not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

fn bad(what: impl Into<String>) -> SchemaError {
    SchemaError(what.into())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// The integer after the tag of a key (`ino`, `dir`, `start`).
pub fn key_id(key: &[u8]) -> Result<u64, SchemaError> {
    if key.len() < 9 {
        return Err(bad(format!("key of {} bytes is too short", key.len())));
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&key[1..9]);
    Ok(u64::from_be_bytes(w))
}

/// The second integer of a 17-byte key (an extent's file frame, a cookie).
pub fn key_second(key: &[u8]) -> Result<u64, SchemaError> {
    if key.len() != 17 {
        return Err(bad(format!("key of {} bytes, 17 expected", key.len())));
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&key[9..17]);
    Ok(u64::from_be_bytes(w))
}

/// The bytes after the integer of a key (a name).
pub fn key_tail(key: &[u8]) -> Result<&[u8], SchemaError> {
    key.get(9..)
        .ok_or_else(|| bad(format!("key of {} bytes is too short", key.len())))
}

/// The on-pool code of an inode kind (never reorder: the values are the format).
pub fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::File => 1,
        Kind::Dir => 2,
        Kind::Symlink => 3,
        Kind::Fifo => 4,
        Kind::CharDev => 5,
        Kind::BlockDev => 6,
        Kind::Socket => 7,
    }
}

/// The kind an on-pool code names.
pub fn kind_of(code: u8) -> Result<Kind, SchemaError> {
    Ok(match code {
        1 => Kind::File,
        2 => Kind::Dir,
        3 => Kind::Symlink,
        4 => Kind::Fifo,
        5 => Kind::CharDev,
        6 => Kind::BlockDev,
        7 => Kind::Socket,
        c => return Err(bad(format!("unknown inode kind {c}"))),
    })
}

/// Bytes of the fixed part of an inode record.
pub const INODE_FIXED_BYTES: usize = 88;
/// Bytes of a directory's inode record.
pub const INODE_DIR_BYTES: usize = 112;

/// Inode record `flags` bit 0: a regular file whose bytes follow the fixed part (inline
/// data) instead of living in frames named by the extent table.
pub const INODE_FLAG_INLINE: u32 = 1;

/// The most bytes a file keeps inline. A 100-byte file then takes a share of a tree leaf
/// (its record: 88 + 100 bytes) instead of a 4 KiB frame of its own; a record of 88 + 512
/// bytes is still well inside the 1024 bytes a leaf keeps inline (3.4), and a leaf holds
/// six of them. A write that would make the file longer moves its bytes into a frame.
pub const INLINE_DATA_MAX: usize = 512;

/// What an inode record holds besides the attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InodeTail {
    /// A regular file (its extents are in the extent table) or a special file.
    None,
    /// A regular file's bytes, 1..=[`INLINE_DATA_MAX`] of them (flag [`INODE_FLAG_INLINE`]).
    Inline(Vec<u8>),
    /// A directory: its parent, the next readdir cookie and its entry count.
    Dir {
        parent: u64,
        next_cookie: u64,
        entries: u64,
    },
    /// A symlink's target.
    Symlink(Vec<u8>),
}

/// An inode's record in the inode table.
///
/// ```text
/// 0   u32 mode        4  u32 uid         8  u32 gid        12 u32 nlink
/// 16  u64 size        24 i64 atime s     32 i64 mtime s    40 i64 ctime s
/// 48  i64 crtime s    56 u32 atime ns    60 u32 mtime ns   64 u32 ctime ns
/// 68  u32 crtime ns   72 u32 rdev        76 u32 flags      80 u64 generation
/// 88  directory: u64 parent, u64 next_cookie, u64 entries  (112 bytes in all)
///     symlink: the target (size bytes)
///     regular file with flag INODE_FLAG_INLINE: its bytes (size bytes); others: nothing
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InodeRecord {
    pub attr: Attr,
    pub tail: InodeTail,
}

impl InodeRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let a = &self.attr;
        let mut b = Vec::with_capacity(INODE_DIR_BYTES);
        for w in [a.mode, a.uid, a.gid, a.nlink] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&a.size.to_le_bytes());
        for t in [a.atime, a.mtime, a.ctime, a.crtime] {
            b.extend_from_slice(&t.secs.to_le_bytes());
        }
        for t in [a.atime, a.mtime, a.ctime, a.crtime] {
            b.extend_from_slice(&t.nsecs.to_le_bytes());
        }
        b.extend_from_slice(&a.rdev.to_le_bytes());
        let flags = match self.tail {
            InodeTail::Inline(_) => INODE_FLAG_INLINE,
            _ => 0,
        };
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&a.generation.to_le_bytes());
        match &self.tail {
            InodeTail::None => {}
            InodeTail::Dir {
                parent,
                next_cookie,
                entries,
            } => {
                for w in [*parent, *next_cookie, *entries] {
                    b.extend_from_slice(&w.to_le_bytes());
                }
            }
            InodeTail::Symlink(t) | InodeTail::Inline(t) => b.extend_from_slice(t),
        }
        b
    }

    /// Decodes a record, checking its length against its kind, the nanoseconds, the flags and
    /// the length of a symlink's target or a file's inline bytes against its size.
    pub fn decode(b: &[u8]) -> Result<InodeRecord, SchemaError> {
        if b.len() < INODE_FIXED_BYTES {
            return Err(bad(format!("inode record of {} bytes", b.len())));
        }
        let time = |s: usize, ns: usize| -> Result<Time, SchemaError> {
            let nsecs = u32_at(b, ns);
            if nsecs >= 1_000_000_000 {
                return Err(bad(format!("nanoseconds {nsecs} out of range")));
            }
            Ok(Time {
                secs: u64_at(b, s) as i64,
                nsecs,
            })
        };
        let attr = Attr {
            mode: u32_at(b, 0),
            uid: u32_at(b, 4),
            gid: u32_at(b, 8),
            nlink: u32_at(b, 12),
            size: u64_at(b, 16),
            atime: time(24, 56)?,
            mtime: time(32, 60)?,
            ctime: time(40, 64)?,
            crtime: time(48, 68)?,
            rdev: u32_at(b, 72),
            generation: u64_at(b, 80),
        };
        let flags = u32_at(b, 76);
        if flags & !INODE_FLAG_INLINE != 0 {
            return Err(bad(format!("unknown inode flags {flags:#x}")));
        }
        let kind = Kind::from_mode(attr.mode)
            .ok_or_else(|| bad(format!("mode {:o} has no file type", attr.mode)))?;
        let rest = &b[INODE_FIXED_BYTES..];
        if flags & INODE_FLAG_INLINE != 0 && kind != Kind::File {
            return Err(bad(format!("inline data on a {kind:?}")));
        }
        let tail = match kind {
            Kind::File if flags & INODE_FLAG_INLINE != 0 => {
                if rest.is_empty() || rest.len() > INLINE_DATA_MAX || rest.len() as u64 != attr.size
                {
                    return Err(bad(format!(
                        "inline data of {} bytes, size {} (1 to {INLINE_DATA_MAX} bytes)",
                        rest.len(),
                        attr.size
                    )));
                }
                InodeTail::Inline(rest.to_vec())
            }
            Kind::Dir => {
                if rest.len() != INODE_DIR_BYTES - INODE_FIXED_BYTES {
                    return Err(bad(format!("directory record of {} bytes", b.len())));
                }
                InodeTail::Dir {
                    parent: u64_at(rest, 0),
                    next_cookie: u64_at(rest, 8),
                    entries: u64_at(rest, 16),
                }
            }
            Kind::Symlink => {
                if rest.is_empty() || rest.len() as u64 != attr.size {
                    return Err(bad(format!(
                        "symlink target of {} bytes, size {}",
                        rest.len(),
                        attr.size
                    )));
                }
                InodeTail::Symlink(rest.to_vec())
            }
            _ => {
                if !rest.is_empty() {
                    return Err(bad(format!("inode record of {} bytes", b.len())));
                }
                InodeTail::None
            }
        };
        Ok(InodeRecord { attr, tail })
    }
}

/// Bytes of an extent value.
pub const EXTENT_BYTES: usize = 17;
/// Flag bit of an unwritten extent.
pub const EXTENT_UNWRITTEN: u8 = 1;

/// An extent's value: `u64 start pfn, u64 frames, u8 flags` (bit 0: unwritten).
pub fn encode_extent(e: &Extent) -> Vec<u8> {
    let mut b = Vec::with_capacity(EXTENT_BYTES);
    b.extend_from_slice(&e.pfns.start.0.to_le_bytes());
    b.extend_from_slice(&e.pfns.len.to_le_bytes());
    b.push(if e.unwritten { EXTENT_UNWRITTEN } else { 0 });
    b
}

/// The extent at `file_frame` from its value.
pub fn decode_extent(file_frame: u64, b: &[u8]) -> Result<Extent, SchemaError> {
    if b.len() != EXTENT_BYTES || b[16] & !EXTENT_UNWRITTEN != 0 {
        return Err(bad("malformed extent"));
    }
    let pfns = PfnRange::new(Pfn(u64_at(b, 0)), u64_at(b, 8))
        .filter(|r| r.len > 0)
        .ok_or_else(|| bad("extent empty or overflowing"))?;
    Ok(Extent {
        file_frame,
        pfns,
        unwritten: b[16] & EXTENT_UNWRITTEN != 0,
    })
}

/// A name's value in the name index: `u64 cookie, u64 ino, u8 kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameEntry {
    pub cookie: u64,
    pub ino: u64,
    pub kind: Kind,
}

impl NameEntry {
    /// The value's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(17);
        b.extend_from_slice(&self.cookie.to_le_bytes());
        b.extend_from_slice(&self.ino.to_le_bytes());
        b.push(kind_code(self.kind));
        b
    }

    /// Decodes a value.
    pub fn decode(b: &[u8]) -> Result<NameEntry, SchemaError> {
        if b.len() != 17 {
            return Err(bad("malformed name entry"));
        }
        Ok(NameEntry {
            cookie: u64_at(b, 0),
            ino: u64_at(b, 8),
            kind: kind_of(b[16])?,
        })
    }
}

/// A cookie's value in the readdir index: `u64 ino, u8 kind, name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieEntry {
    pub ino: u64,
    pub kind: Kind,
    pub name: Vec<u8>,
}

impl CookieEntry {
    /// The value's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(9 + self.name.len());
        b.extend_from_slice(&self.ino.to_le_bytes());
        b.push(kind_code(self.kind));
        b.extend_from_slice(&self.name);
        b
    }

    /// Decodes a value.
    pub fn decode(b: &[u8]) -> Result<CookieEntry, SchemaError> {
        if b.len() < 10 {
            return Err(bad("malformed readdir entry"));
        }
        Ok(CookieEntry {
            ino: u64_at(b, 0),
            kind: kind_of(b[8])?,
            name: b[9..].to_vec(),
        })
    }
}

/// A free extent's value: its length in frames.
pub fn encode_free(frames: u64) -> Vec<u8> {
    frames.to_le_bytes().to_vec()
}

/// The value of a bad-frame entry: its length in frames (the layout of a free extent's).
pub fn encode_bad(frames: u64) -> Vec<u8> {
    encode_free(frames)
}

/// The bad frames a bad-table entry describes.
pub fn decode_bad(key: &[u8], value: &[u8]) -> Result<PfnRange, SchemaError> {
    if key.first() != Some(&TAG_BAD) {
        return Err(bad("not a bad-frame key"));
    }
    decode_free(key, value).map_err(|_| bad("malformed bad-frame range"))
}

/// The free extent a free-table entry describes.
pub fn decode_free(key: &[u8], value: &[u8]) -> Result<PfnRange, SchemaError> {
    if key.len() != 9 || value.len() != 8 {
        return Err(bad("malformed free extent"));
    }
    PfnRange::new(Pfn(key_id(key)?), u64_at(value, 0))
        .filter(|r| r.len > 0)
        .ok_or_else(|| bad("free extent empty or overflowing"))
}
