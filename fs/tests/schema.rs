//! The metadata tree's key and value layouts (format 2): pinned byte for byte, checked
//! against docs/DESIGN.md section 3.5, and every decoder refuses what it must.

use pfnfs_alloc::{Pfn, PfnRange};
use pfnfs_extent::Extent;
use pfnfs_fs::inode::{Attr, Kind, Time};
use pfnfs_fs::schema::{self, CookieEntry, InodeRecord, InodeTail, NameEntry};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(mode: u32, size: u64) -> Attr {
    Attr {
        mode,
        uid: 1000,
        gid: 100,
        nlink: 2,
        size,
        atime: Time { secs: 1, nsecs: 2 },
        mtime: Time {
            secs: -1,
            nsecs: 999_999_999,
        },
        ctime: Time {
            secs: 0x0102_0304,
            nsecs: 5,
        },
        crtime: Time { secs: 7, nsecs: 0 },
        rdev: 0x0809,
        generation: 3,
    }
}

#[test]
fn design_doc_lists_every_table_with_its_tag() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/DESIGN.md")).unwrap();
    let start = doc.find("### 3.5 Metadata tables").expect("section 3.5");
    let section = &doc[start..];
    let mut found = Vec::new();
    for line in section
        .lines()
        .take_while(|l| !l.starts_with("**Inode record**"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() > 3 && cells[1].starts_with("`0x") {
            found.push((
                cells[1].trim_matches('`').to_string(),
                cells[2].trim_matches('`').to_string(),
            ));
        }
    }
    let want: Vec<(String, String)> = schema::TABLES
        .iter()
        .map(|t| {
            let code = match t.sub {
                None => format!("0x{:02x}", t.tag),
                Some(sub) => format!("0x{:02x}/0x{:02x}", t.tag, sub),
            };
            (code, t.name.to_string())
        })
        .collect();
    assert_eq!(found, want, "DESIGN.md 3.5 and schema::TABLES disagree");
}

#[test]
fn keys_are_tag_then_big_endian_integers() {
    assert_eq!(hex(&schema::inode_key(0x0102)), "100000000000000102");
    assert_eq!(
        hex(&schema::extent_key(1, 0x10)),
        "100000000000000001200000000000000010"
    );
    assert_eq!(
        hex(&schema::xattr_key(2, b"user.a")),
        "10000000000000000230757365722e61"
    );
    assert_eq!(hex(&schema::name_key(1, b"f")), "40000000000000000166");
    assert_eq!(
        hex(&schema::cookie_key(1, 3)),
        "4100000000000000010000000000000003"
    );
    assert_eq!(hex(&schema::free_key(Pfn(0x600))), "500000000000000600");
    assert_eq!(hex(&schema::orphan_key(9)), "600000000000000009");
    assert_eq!(hex(&schema::bad_key(Pfn(0x601))), "700000000000000601");
    assert_eq!(hex(&schema::encode_bad(3)), "0300000000000000");
    assert_eq!(
        schema::decode_bad(&schema::bad_key(Pfn(0x601)), &schema::encode_bad(3)),
        Ok(PfnRange::new(Pfn(0x601), 3).unwrap())
    );
    assert!(schema::decode_bad(&schema::free_key(Pfn(1)), &schema::encode_bad(1)).is_err());
    assert!(schema::decode_bad(&schema::bad_key(Pfn(1)), &schema::encode_bad(0)).is_err());
    // One inode's entries sort together and in numeric order.
    assert!(schema::extent_key(1, 255) < schema::extent_key(1, 256));
    assert!(schema::extent_key(1, u64::MAX) < schema::extent_key(2, 0));
    // An inode's record, extents and xattrs are one prefix, in that order.
    assert!(schema::inode_key(1) < schema::extent_key(1, 0));
    assert!(schema::extent_key(1, u64::MAX) < schema::xattr_key(1, b"a"));
    assert!(schema::xattr_key(1, &[0xff; 255]) < schema::inode_key(2));
    let (start, end) = schema::prefix_range(schema::TAG_INODE, u64::MAX);
    assert_eq!(end, Some(vec![schema::TAG_INODE + 1]));
    assert!(schema::extent_key(u64::MAX, 5) >= start);
    assert_eq!(
        schema::inode_table_key(&schema::extent_key(7, 9)),
        Ok(schema::InodeKey::Extent(7, 9))
    );
    assert_eq!(
        schema::inode_table_key(&schema::xattr_key(7, b"n")),
        Ok(schema::InodeKey::Xattr(7, b"n"))
    );
    assert_eq!(
        schema::inode_table_key(&schema::inode_key(7)),
        Ok(schema::InodeKey::Record(7))
    );
    assert!(schema::inode_table_key(&schema::extent_key(7, 9)[..17]).is_err());
    assert!(schema::inode_table_key(&schema::xattr_key(7, b"")).is_err());
}

#[test]
fn inode_records_have_the_documented_bytes() {
    let file = InodeRecord {
        attr: attr(libc::S_IFREG | 0o4755, 0x1122),
        tail: InodeTail::None,
    };
    let bytes = file.encode();
    assert_eq!(bytes.len(), schema::INODE_FIXED_BYTES);
    assert_eq!(
        hex(&bytes),
        concat!(
            "ed890000",
            "e8030000",
            "64000000",
            "02000000",         // mode uid gid nlink
            "2211000000000000", // size
            "0100000000000000",
            "ffffffffffffffff", // atime, mtime seconds
            "0403020100000000",
            "0700000000000000", // ctime, crtime seconds
            "02000000",
            "ffc99a3b",
            "05000000",
            "00000000", // nanoseconds
            "09080000",
            "00000000",         // rdev, flags
            "0300000000000000", // generation
        )
    );
    assert_eq!(InodeRecord::decode(&bytes).unwrap(), file);

    let dir = InodeRecord {
        attr: attr(libc::S_IFDIR | 0o755, 0),
        tail: InodeTail::Dir {
            parent: 1,
            next_cookie: 9,
            entries: 6,
        },
    };
    let bytes = dir.encode();
    assert_eq!(bytes.len(), schema::INODE_DIR_BYTES);
    assert_eq!(
        hex(&bytes[88..]),
        "010000000000000009000000000000000600000000000000"
    );
    assert_eq!(InodeRecord::decode(&bytes).unwrap(), dir);

    let link = InodeRecord {
        attr: attr(libc::S_IFLNK | 0o777, 3),
        tail: InodeTail::Symlink(b"abc".to_vec()),
    };
    let bytes = link.encode();
    assert_eq!(&bytes[88..], b"abc");
    assert_eq!(InodeRecord::decode(&bytes).unwrap(), link);

    // Inline data: flag bit 0 at byte 76, the bytes after the fixed part; the rest is the
    // file record above, byte for byte.
    let inline = InodeRecord {
        attr: attr(libc::S_IFREG | 0o4755, 5),
        tail: InodeTail::Inline(b"hello".to_vec()),
    };
    let bytes = inline.encode();
    assert_eq!(bytes.len(), schema::INODE_FIXED_BYTES + 5);
    assert_eq!(hex(&bytes[72..80]), "0908000001000000", "rdev, flags");
    assert_eq!(&bytes[88..], b"hello");
    let plain = InodeRecord {
        attr: attr(libc::S_IFREG | 0o4755, 5),
        tail: InodeTail::None,
    }
    .encode();
    assert_eq!(&bytes[..76], &plain[..76]);
    assert_eq!(&bytes[80..88], &plain[80..88]);
    assert_eq!(InodeRecord::decode(&bytes).unwrap(), inline);
    assert_eq!(schema::INODE_FLAG_INLINE, 1);
    assert_eq!(schema::INLINE_DATA_MAX, 512);
}

#[test]
fn inline_records_that_break_the_rules_are_refused() {
    let record = |mode: u32, size: u64, bytes: &[u8]| {
        InodeRecord {
            attr: attr(mode, size),
            tail: InodeTail::Inline(bytes.to_vec()),
        }
        .encode()
    };
    let reg = libc::S_IFREG | 0o644;
    let max = schema::INLINE_DATA_MAX;
    // At the limit it decodes; one byte over, empty, or not matching the size, it does not.
    assert!(InodeRecord::decode(&record(reg, max as u64, &vec![7; max])).is_ok());
    assert!(InodeRecord::decode(&record(reg, max as u64 + 1, &vec![7; max + 1])).is_err());
    assert!(InodeRecord::decode(&record(reg, 0, b"")).is_err());
    assert!(InodeRecord::decode(&record(reg, 4, b"abc")).is_err());
    assert!(InodeRecord::decode(&record(reg, 2, b"abc")).is_err());
    // Only regular files have inline data.
    for kind in [libc::S_IFLNK, libc::S_IFIFO, libc::S_IFCHR] {
        assert!(InodeRecord::decode(&record(kind | 0o644, 3, b"abc")).is_err());
    }
    // Unknown flag bits next to it.
    let mut bad = record(reg, 3, b"abc");
    bad[76] = 3;
    assert!(InodeRecord::decode(&bad).is_err());
}

#[test]
fn inode_records_that_do_not_fit_their_kind_are_refused() {
    let dir = InodeRecord {
        attr: attr(libc::S_IFDIR | 0o755, 0),
        tail: InodeTail::Dir {
            parent: 1,
            next_cookie: 3,
            entries: 0,
        },
    }
    .encode();
    // Too short, a directory without its tail, a file with one.
    assert!(InodeRecord::decode(&dir[..87]).is_err());
    assert!(InodeRecord::decode(&dir[..88]).is_err());
    let mut file = dir.clone();
    file[0..4].copy_from_slice(&(libc::S_IFREG | 0o644).to_le_bytes());
    assert!(InodeRecord::decode(&file).is_err());
    // No file type, unknown flags, nanoseconds out of range.
    let mut bad = dir.clone();
    bad[0..4].copy_from_slice(&0o755u32.to_le_bytes());
    assert!(InodeRecord::decode(&bad).is_err());
    let mut bad = dir.clone();
    bad[76] = 1;
    assert!(InodeRecord::decode(&bad).is_err());
    let mut bad = dir.clone();
    bad[56..60].copy_from_slice(&1_000_000_000u32.to_le_bytes());
    assert!(InodeRecord::decode(&bad).is_err());
    // A symlink whose target does not match its size, or is empty.
    let link = InodeRecord {
        attr: attr(libc::S_IFLNK | 0o777, 4),
        tail: InodeTail::Symlink(b"abcd".to_vec()),
    }
    .encode();
    assert!(InodeRecord::decode(&link[..91]).is_err());
    assert!(InodeRecord::decode(&link[..88]).is_err());
}

#[test]
fn small_values_have_the_documented_bytes() {
    let e = Extent {
        file_frame: 7,
        pfns: PfnRange::new(Pfn(0x600), 0x200).unwrap(),
        unwritten: true,
    };
    let v = schema::encode_extent(&e);
    assert_eq!(hex(&v), "0006000000000000000200000000000001");
    assert_eq!(schema::decode_extent(7, &v).unwrap(), e);
    let n = NameEntry {
        cookie: 3,
        ino: 0x42,
        kind: Kind::Symlink,
    };
    assert_eq!(hex(&n.encode()), "0300000000000000420000000000000003");
    assert_eq!(NameEntry::decode(&n.encode()).unwrap(), n);
    let c = CookieEntry {
        ino: 0x42,
        kind: Kind::Dir,
        name: b"xy".to_vec(),
    };
    assert_eq!(hex(&c.encode()), "4200000000000000027879");
    assert_eq!(CookieEntry::decode(&c.encode()).unwrap(), c);
    assert_eq!(hex(&schema::encode_free(0x10)), "1000000000000000");
    assert_eq!(
        schema::decode_free(&schema::free_key(Pfn(0x600)), &schema::encode_free(0x10)).unwrap(),
        PfnRange::new(Pfn(0x600), 0x10).unwrap()
    );
    // The kind codes are the format: never renumbered.
    let codes: Vec<u8> = [
        Kind::File,
        Kind::Dir,
        Kind::Symlink,
        Kind::Fifo,
        Kind::CharDev,
        Kind::BlockDev,
        Kind::Socket,
    ]
    .into_iter()
    .map(schema::kind_code)
    .collect();
    assert_eq!(codes, vec![1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn malformed_values_are_refused() {
    let ok = schema::encode_extent(&Extent {
        file_frame: 0,
        pfns: PfnRange::new(Pfn(1), 1).unwrap(),
        unwritten: false,
    });
    assert!(schema::decode_extent(0, &ok[..16]).is_err());
    let mut flags = ok.clone();
    flags[16] = 2;
    assert!(schema::decode_extent(0, &flags).is_err());
    let mut empty = ok.clone();
    empty[8..16].fill(0);
    assert!(schema::decode_extent(0, &empty).is_err());
    let mut overflow = ok.clone();
    overflow[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(schema::decode_extent(0, &overflow).is_err());
    let mut n = NameEntry {
        cookie: 3,
        ino: 2,
        kind: Kind::File,
    }
    .encode();
    n[16] = 0;
    assert!(NameEntry::decode(&n).is_err());
    assert!(NameEntry::decode(&n[..16]).is_err());
    assert!(CookieEntry::decode(&[0; 9]).is_err());
    assert!(schema::decode_free(&schema::free_key(Pfn(1)), &[0; 8]).is_err());
    assert!(schema::decode_free(&[0x50, 0], &[1, 0, 0, 0, 0, 0, 0, 0]).is_err());
    assert!(schema::key_id(&[0x10, 1]).is_err());
    assert!(schema::key_second(&schema::inode_key(1)).is_err());
    // Arbitrary bytes never panic a decoder.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for len in 0..300usize {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let _ = InodeRecord::decode(&bytes);
        let _ = schema::decode_extent(0, &bytes);
        let _ = NameEntry::decode(&bytes);
        let _ = CookieEntry::decode(&bytes);
        let _ = schema::decode_free(&bytes, &bytes);
        let _ = schema::key_id(&bytes);
        let _ = schema::key_second(&bytes);
        let _ = schema::key_tail(&bytes);
        let _ = schema::inode_table_key(&bytes);
    }
}
