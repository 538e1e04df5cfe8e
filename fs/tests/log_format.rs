//! The on-pool encoding of metadata log records, pinned byte for byte.
//!
//! A log record is a 32-byte header followed by the postcard encoding of a
//! [`pfnfs_fs::journal::Op`] (docs/DESIGN.md, section 3.3). Records written by one build are
//! replayed by the next (after a crash, or by `pfnfs fsck`), so the encoding is a format
//! promise, not an implementation detail: postcard writes an enum variant as its *index* in
//! the enum and a struct as its fields *in declaration order*, with no names and no tags. A
//! variant inserted anywhere but at the end of `Op`, a reordered field, or a field whose type
//! changes (an unsigned integer made signed is zigzagged, so 1 becomes `02`; a `bool` made an
//! integer takes any byte) would make old records decode as something else or not at all,
//! silently. Hence: variants of `Op` are only ever added at the end, and this file pins the
//! bytes of one example of every variant, the variant indexes, and the record header around
//! the payload.
//!
//! If a test here fails, the format changed. Do not "fix" the golden bytes: put the enum back
//! the way it was (or, for a deliberate change, bump the pool format and keep a decoder for
//! the old one, as `pfnfs upgrade` does for format 1).
//!
//! Postcard's wire format, as used below (postcard 1.x, "stable wire format"):
//! - an enum variant: its index (0-based position in the enum) as a varint, then its fields;
//! - a struct, a tuple or a struct variant: its fields in order, nothing else; a newtype
//!   struct (`Pfn(u64)`) is its field;
//! - `u32`, `u64`: unsigned LEB128 varint (7 bits a byte, low bits first, high bit set on
//!   every byte but the last);
//! - `i64`: zigzag (`(n << 1) ^ (n >> 63)`: 0, -1, 1, -2, 2 become 0, 1, 2, 3, 4), then varint;
//! - `bool`: one byte, 0 or 1;
//! - `Vec<T>` (including `Vec<u8>`): the length as a varint, then the elements;
//! - `Option<T>`: 0 for `None`, 1 then the value for `Some`.
//!
//! The golden hex strings are written one field per space-separated group (a length prefix
//! is written together with the bytes it counts, so `026162` is the two-byte name `ab`);
//! whitespace is ignored when they are compared.

use pfnfs_alloc::{MemBackend, Pfn, PfnRange, Pool};
use pfnfs_extent::Extent;
use pfnfs_fs::inode::{Attr, Time};
use pfnfs_fs::journal::{
    DataTimes, Journal, LogId, NewBody, Op, RECORD_HEADER_BYTES, RECORD_MAGIC, RECORD_MAGIC_V1,
    RECORD_PAYLOAD_MAX, read_log,
};

/// The variants of `Op` in declaration order: a variant's postcard index is its position
/// here. New variants go at the end, here and in the enum.
const VARIANTS: [&str; 17] = [
    "Create",           // 0
    "Link",             // 1
    "Unlink",           // 2
    "Rename",           // 3
    "SetAttr",          // 4
    "Truncate",         // 5
    "Write",            // 6
    "Allocate",         // 7
    "Punch",            // 8
    "ZeroRange",        // 9
    "SetXattr",         // 10
    "RemoveXattr",      // 11
    "Reclaim",          // 12
    "CreateWithXattrs", // 13
    "SetAttrXattrs",    // 14
    "WriteInline",      // 15
    "Spill",            // 16
];

/// The name of `op`'s variant. The match has no wildcard arm on purpose: a new variant does
/// not compile until it is named here, added to [`VARIANTS`] and given a golden example.
fn variant_name(op: &Op) -> &'static str {
    match op {
        Op::Create { .. } => "Create",
        Op::Link { .. } => "Link",
        Op::Unlink { .. } => "Unlink",
        Op::Rename { .. } => "Rename",
        Op::SetAttr { .. } => "SetAttr",
        Op::Truncate { .. } => "Truncate",
        Op::Write { .. } => "Write",
        Op::Allocate { .. } => "Allocate",
        Op::Punch { .. } => "Punch",
        Op::ZeroRange { .. } => "ZeroRange",
        Op::SetXattr { .. } => "SetXattr",
        Op::RemoveXattr { .. } => "RemoveXattr",
        Op::Reclaim { .. } => "Reclaim",
        Op::CreateWithXattrs { .. } => "CreateWithXattrs",
        Op::SetAttrXattrs { .. } => "SetAttrXattrs",
        Op::WriteInline { .. } => "WriteInline",
        Op::Spill { .. } => "Spill",
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes a golden hex string spells (whitespace ignored).
fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(
        digits.len().is_multiple_of(2),
        "odd number of hex digits in {s:?}"
    );
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).unwrap();
            u8::from_str_radix(pair, 16).unwrap_or_else(|e| panic!("{pair:?} in {s:?}: {e}"))
        })
        .collect()
}

fn time(secs: i64, nsecs: u32) -> Time {
    Time { secs, nsecs }
}

fn times(mtime: Time, ctime: Time) -> DataTimes {
    DataTimes { mtime, ctime }
}

fn extent(file_frame: u64, start: u64, len: u64, unwritten: bool) -> Extent {
    Extent {
        file_frame,
        pfns: PfnRange::new(Pfn(start), len).unwrap(),
        unwritten,
    }
}

/// S_IFREG | 0644, the mode most examples carry: 33188 = 0x81a4, varint `a4 83 02`
/// (0x24 | 0x80, 0x03 | 0x80, 0x02).
const FILE_MODE: u32 = libc::S_IFREG | 0o644;

/// The attributes of the `Create` examples: every field a different value, so a swap of two
/// fields changes the bytes.
fn attr() -> Attr {
    Attr {
        mode: FILE_MODE,
        uid: 11,
        gid: 12,
        nlink: 1,
        size: 4096,
        atime: time(1, 2),
        mtime: time(2, 3),
        ctime: time(3, 4),
        crtime: time(-1, 5),
        rdev: 6,
        generation: 1,
    }
}

/// [`attr`] encoded: mode `a48302`, uid 11 `0b`, gid 12 `0c`, nlink 1 `01`, size 4096 =
/// 0x1000 `8020` (0x00 | 0x80, 0x20), atime (secs 1 zigzag 2, nsecs 2) `02 02`, mtime `04 03`,
/// ctime `06 04`, crtime (secs -1 zigzag 1, nsecs 5) `01 05`, rdev 6 `06`, generation 1 `01`.
macro_rules! attr_hex {
    () => {
        "a48302 0b 0c 01 8020 02 02 04 03 06 04 01 05 06 01"
    };
}

/// One example of every variant, in enum order, with its golden encoding.
fn examples() -> Vec<(Op, &'static str)> {
    vec![
        // 0 Create: index 00, parent 1 `01`, name "ab" (length 2, 0x61 0x62) `026162`, ino 2
        // `02`, the attr, body File (NewBody index 0) `00`.
        (
            Op::Create {
                parent: 1,
                name: b"ab".to_vec(),
                ino: 2,
                attr: attr(),
                body: NewBody::File,
            },
            concat!("00 01 026162 02 ", attr_hex!(), " 00"),
        ),
        // 1 Link: index 01, parent 3, name "c" `0163`, ino 4, time (secs 6 zigzag 12 = 0x0c,
        // nsecs 7).
        (
            Op::Link {
                parent: 3,
                name: b"c".to_vec(),
                ino: 4,
                time: time(6, 7),
            },
            "01 03 0163 04 0c 07",
        ),
        // 2 Unlink: index 02, parent 5, name "de" `026465`, time (secs -2 zigzag 3, nsecs 8).
        (
            Op::Unlink {
                parent: 5,
                name: b"de".to_vec(),
                time: time(-2, 8),
            },
            "02 05 026465 03 08",
        ),
        // 3 Rename: index 03, parent 6, name "f" `0166`, new_parent 7, new_name "gh"
        // `026768`, exchange true `01`, time (secs 9 zigzag 18 = 0x12, nsecs 10 = 0x0a).
        (
            Op::Rename {
                parent: 6,
                name: b"f".to_vec(),
                new_parent: 7,
                new_name: b"gh".to_vec(),
                exchange: true,
                time: time(9, 10),
            },
            "03 06 0166 07 026768 01 12 0a",
        ),
        // 4 SetAttr: index 04, ino 8, mode 0o755 = 493 = 0x1ed `ed03` (0x6d | 0x80, 0x03),
        // uid 13 `0d`, gid 14 `0e`, atime (1 -> 2, 1) `02 01`, mtime (2 -> 4, 2) `04 02`, and a
        // realistic ctime: secs 1_700_000_000 zigzag 3_400_000_000 = 0xcaa7e200, varint
        // `80c49fd50c` (7-bit groups from the low end: 0x00 0x44 0x1f 0x55 0x0c), nsecs
        // 999_999_999 = 0x3b9ac9ff, varint `ff93ebdc03` (0x7f 0x13 0x6b 0x5c 0x03).
        (
            Op::SetAttr {
                ino: 8,
                mode: 0o755,
                uid: 13,
                gid: 14,
                atime: time(1, 1),
                mtime: time(2, 2),
                ctime: time(1_700_000_000, 999_999_999),
            },
            "04 08 ed03 0d 0e 02 01 04 02 80c49fd50c ff93ebdc03",
        ),
        // 5 Truncate: index 05, ino 9, size 4097 = 0x1001 `8120`, time (4 -> 8, 5) `08 05`,
        // mode S_IFREG | 0600 = 33152 = 0x8180 `808302`, cow: one extent `01`, which is
        // file_frame 1 `01`, pfns (start Pfn(600) = 0x258 `d804`, len 1 `01`), unwritten
        // false `00`.
        (
            Op::Truncate {
                ino: 9,
                size: 4097,
                time: time(4, 5),
                mode: libc::S_IFREG | 0o600,
                cow: vec![extent(1, 600, 1, false)],
            },
            "05 09 8120 08 05 808302 01 01 d804 01 00",
        ),
        // 6 Write: index 06, ino 10 `0a`, allocated: 2 extents `02` (file_frame 2, start 30 =
        // 0x1e, len 2, written `02 1e 02 00`; file_frame 4, start 40 = 0x28, len 1, unwritten
        // `04 28 01 01`), converted: 1 extent `01` (5, 50 = 0x32, 3, written `05 32 03 00`),
        // size 24576 = 0x6000 `80c001` (0x00 | 0x80, 0x40 | 0x80, 0x01), times (mtime 7 -> 14
        // = 0x0e, 8; ctime 9 -> 0x12, 10) `0e 08 12 0a`, mode `a48302`.
        (
            Op::Write {
                ino: 10,
                allocated: vec![extent(2, 30, 2, false), extent(4, 40, 1, true)],
                converted: vec![extent(5, 50, 3, false)],
                size: 24576,
                times: times(time(7, 8), time(9, 10)),
                mode: FILE_MODE,
            },
            "06 0a 02 02 1e 02 00 04 28 01 01 01 05 32 03 00 80c001 0e 08 12 0a a48302",
        ),
        // 7 Allocate: index 07, ino 11 `0b`, extents: 1 `01` (file_frame 0, start 60 = 0x3c,
        // len 4, unwritten `00 3c 04 01`), size 100 = 0x64 `64`, times (1 -> 2, 0; 2 -> 4, 0)
        // `02 00 04 00`, mode `a48302`.
        (
            Op::Allocate {
                ino: 11,
                extents: vec![extent(0, 60, 4, true)],
                size: 100,
                times: times(time(1, 0), time(2, 0)),
                mode: FILE_MODE,
            },
            "07 0b 01 00 3c 04 01 64 02 00 04 00 a48302",
        ),
        // 8 Punch: index 08, ino 12 `0c`, offset 5, len 6, times (3 -> 6, 1; 4 -> 8, 1)
        // `06 01 08 01`, mode S_IFREG | 0640 = 33184 = 0x81a0 `a08302`, cow: 1 `01` (file_frame
        // 0, start 70 = 0x46, len 1, written `00 46 01 00`).
        (
            Op::Punch {
                ino: 12,
                offset: 5,
                len: 6,
                times: times(time(3, 1), time(4, 1)),
                mode: libc::S_IFREG | 0o640,
                cow: vec![extent(0, 70, 1, false)],
            },
            "08 0c 05 06 06 01 08 01 a08302 01 00 46 01 00",
        ),
        // 9 ZeroRange: index 09, ino 13 `0d`, offset 7, len 8, size 9, times (5 -> 10 = 0x0a,
        // 2; 6 -> 12 = 0x0c, 2) `0a 02 0c 02`, mode `a48302`, cow: empty `00`, extents: 1
        // `01` (file_frame 1, start 80 = 0x50, len 2, unwritten `01 50 02 01`).
        (
            Op::ZeroRange {
                ino: 13,
                offset: 7,
                len: 8,
                size: 9,
                times: times(time(5, 2), time(6, 2)),
                mode: FILE_MODE,
                cow: vec![],
                extents: vec![extent(1, 80, 2, true)],
            },
            "09 0d 07 08 09 0a 02 0c 02 a48302 00 01 01 50 02 01",
        ),
        // 10 SetXattr: index 0a, ino 14 `0e`, name "user.a" (6 bytes) `06757365722e61`,
        // value "xy" `027879`, time (7 -> 14 = 0x0e, 3) `0e 03`.
        (
            Op::SetXattr {
                ino: 14,
                name: b"user.a".to_vec(),
                value: b"xy".to_vec(),
                time: time(7, 3),
            },
            "0a 0e 06757365722e61 027879 0e 03",
        ),
        // 11 RemoveXattr: index 0b, ino 15 `0f`, name "user.b" `06757365722e62`, time (8 -> 16
        // = 0x10, 4) `10 04`.
        (
            Op::RemoveXattr {
                ino: 15,
                name: b"user.b".to_vec(),
                time: time(8, 4),
            },
            "0b 0f 06757365722e62 10 04",
        ),
        // 12 Reclaim: index 0c, ino 16 `10`.
        (Op::Reclaim { ino: 16 }, "0c 10"),
        // 13 CreateWithXattrs: index 0d, parent 1, name "d" `0164`, ino 17 `11`, the attr,
        // body Dir (NewBody index 1) `01`, xattrs: 2 pairs `02`, ("k1", "v") `026b31 0176`,
        // ("k2", "") `026b32 00`.
        (
            Op::CreateWithXattrs {
                parent: 1,
                name: b"d".to_vec(),
                ino: 17,
                attr: attr(),
                body: NewBody::Dir,
                xattrs: vec![(b"k1".to_vec(), b"v".to_vec()), (b"k2".to_vec(), vec![])],
            },
            concat!(
                "0d 01 0164 11 ",
                attr_hex!(),
                " 01 02 026b31 0176 026b32 00"
            ),
        ),
        // 14 SetAttrXattrs: index 0e, ino 18 `12`, mode `a48302`, uid 19 `13`, gid 20 `14`,
        // atime (1 -> 2, 0) `02 00`, mtime (2 -> 4, 0) `04 00`, ctime (3 -> 6, 1) `06 01`,
        // xattrs: 2 `02`, ("a", Some("b")) `0161 01 0162`, ("c", None) `0163 00`.
        (
            Op::SetAttrXattrs {
                ino: 18,
                mode: FILE_MODE,
                uid: 19,
                gid: 20,
                atime: time(1, 0),
                mtime: time(2, 0),
                ctime: time(3, 1),
                xattrs: vec![(b"a".to_vec(), Some(b"b".to_vec())), (b"c".to_vec(), None)],
            },
            "0e 12 a48302 13 14 02 00 04 00 06 01 02 0161 01 0162 0163 00",
        ),
        // 15 WriteInline: index 0f, ino 21 `15`, offset 2, data "hi" `026869`, size 4, times
        // (9 -> 0x12, 9; 10 -> 20 = 0x14, 10) `12 09 14 0a`, mode `a48302`.
        (
            Op::WriteInline {
                ino: 21,
                offset: 2,
                data: b"hi".to_vec(),
                size: 4,
                times: times(time(9, 9), time(10, 10)),
                mode: FILE_MODE,
            },
            "0f 15 02 026869 04 12 09 14 0a a48302",
        ),
        // 16 Spill: index 10, ino 22 `16`, extent (file_frame 0, start 90 = 0x5a, len 1,
        // written) `00 5a 01 00`.
        (
            Op::Spill {
                ino: 22,
                extent: extent(0, 90, 1, false),
            },
            "10 16 00 5a 01 00",
        ),
    ]
}

/// Every variant encodes to its golden bytes, and the golden bytes decode to the same op
/// (with nothing left over).
#[test]
fn every_variant_encodes_to_its_golden_bytes() {
    let examples = examples();
    assert_eq!(
        examples.len(),
        VARIANTS.len(),
        "one golden example per variant of Op"
    );
    for (op, golden) in &examples {
        let name = variant_name(op);
        let want = unhex(golden);
        let got = postcard::to_allocvec(op).unwrap();
        assert_eq!(
            hex(&got),
            hex(&want),
            "Op::{name} no longer encodes to its golden bytes: the log record format changed \
             (docs/DESIGN.md 3.3)"
        );
        let (decoded, rest) = postcard::take_from_bytes::<Op>(&want)
            .unwrap_or_else(|e| panic!("golden Op::{name} does not decode: {e}"));
        assert_eq!(&decoded, op, "golden Op::{name} decodes to something else");
        assert!(
            rest.is_empty(),
            "golden Op::{name} leaves {rest:?} undecoded"
        );
        // The examples are records an operation could write, not forgeries replay refuses.
        assert_eq!(op.invalid(), None, "Op::{name} example");
    }
}

/// A variant's index (the first byte of its encoding; all indexes are below 128, one varint
/// byte) is its position in `Op`. Inserting or moving a variant anywhere but at the end
/// fails here, naming the variant.
#[test]
fn variant_indexes_are_positions_in_the_enum() {
    let examples = examples();
    let names: Vec<&str> = examples.iter().map(|(op, _)| variant_name(op)).collect();
    assert_eq!(
        names, VARIANTS,
        "the golden examples are one per variant, in enum order"
    );
    for (op, _) in &examples {
        let name = variant_name(op);
        let want = VARIANTS.iter().position(|v| *v == name).unwrap();
        let got = postcard::to_allocvec(op).unwrap()[0];
        assert_eq!(
            usize::from(got),
            want,
            "Op::{name} encodes with variant index {got}, but log records written so far \
             give it index {want}: variants of Op are only ever added at the end \
             (docs/DESIGN.md 3.3)"
        );
    }
    // Nothing past the last variant: a new one must be added to VARIANTS (and given an
    // example) in the same change.
    let past = u8::try_from(VARIANTS.len()).unwrap();
    assert!(
        postcard::from_bytes::<Op>(&[past, 0, 0, 0, 0, 0, 0, 0]).is_err(),
        "variant index {past} decodes: Op has a variant this file does not pin"
    );
}

/// The types nested in `Op`, on their own: `NewBody`'s variant indexes, the zigzag of `Time`,
/// the field order of `Extent`, `DataTimes` and `Attr`.
#[test]
fn nested_types_encode_as_documented() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (postcard::to_allocvec(&NewBody::File).unwrap(), "00"),
        (postcard::to_allocvec(&NewBody::Dir).unwrap(), "01"),
        // Symlink(target): index 2, then the target "to" `02746f`.
        (
            postcard::to_allocvec(&NewBody::Symlink(b"to".to_vec())).unwrap(),
            "02 02746f",
        ),
        (postcard::to_allocvec(&NewBody::Special).unwrap(), "03"),
        (postcard::to_allocvec(&time(0, 0)).unwrap(), "00 00"),
        // i64::MIN zigzags to u64::MAX: nine bytes of 7 set bits, then the top bit `01`.
        (
            postcard::to_allocvec(&time(i64::MIN, 0)).unwrap(),
            "ffffffffffffffffff01 00",
        ),
        // i64::MAX zigzags to u64::MAX - 1.
        (
            postcard::to_allocvec(&time(i64::MAX, 1)).unwrap(),
            "feffffffffffffffff01 01",
        ),
        // Extent: file_frame 3, pfns (start 0x80 = 128 `8001`, len 2), unwritten.
        (
            postcard::to_allocvec(&extent(3, 128, 2, true)).unwrap(),
            "03 8001 02 01",
        ),
        // DataTimes: mtime before ctime.
        (
            postcard::to_allocvec(&times(time(1, 2), time(3, 4))).unwrap(),
            "02 02 06 04",
        ),
        (postcard::to_allocvec(&attr()).unwrap(), attr_hex!()),
    ];
    for (got, want) in cases {
        assert_eq!(hex(&got), hex(&unhex(want)));
    }
    let body: NewBody = postcard::from_bytes(&unhex("02 02746f")).unwrap();
    assert_eq!(body, NewBody::Symlink(b"to".to_vec()));
}

/// The record around the payload (docs/DESIGN.md 3.3), written by the journal itself on an
/// in-RAM pool and read back raw:
///
/// ```text
/// 0   u32  magic "PLG2"
/// 4   u32  payload_len
/// 8   u64  generation
/// 16  u64  seq
/// 24  u32  crc: CRC32C of the nonce (u64 LE), then bytes 0..24, then the payload
/// 28  u32  nonce_lo: the low half of the nonce
/// 32  ...  payload (postcard `Op`), the record padded with zeros to a multiple of 8
/// ```
#[test]
fn record_framing_is_pinned() {
    assert_eq!(RECORD_MAGIC.to_le_bytes(), *b"PLG2");
    assert_eq!(RECORD_MAGIC_V1.to_le_bytes(), *b"PLOG");
    assert_eq!(RECORD_HEADER_BYTES, 32);
    assert_eq!(RECORD_PAYLOAD_MAX, 1 << 20);

    let generation = 5;
    let nonce = 0x1122_3344_5566_7788_u64;
    let log = LogId::new(generation, nonce);
    let pool = Pool::format_backend("log_format", Box::new(MemBackend::new(16 << 20))).unwrap();
    let journal = Journal::new(&pool, log, 0, 0);
    let first = Op::Reclaim { ino: 16 };
    let second = Op::Spill {
        ino: 22,
        extent: extent(0, 90, 1, false),
    };
    journal.append(&pool, &first).unwrap();
    journal.append(&pool, &second).unwrap();
    assert_eq!(journal.used_bytes(), 80);

    let (log_offset, _) = pool.log_region();
    let bytes = pool.read_vec(log_offset, 88).unwrap();
    // Record 0 at log byte 0: 32-byte header, 2-byte payload, 6 bytes of padding (40).
    // Record 1 at log byte 40: 32-byte header, 6-byte payload, 2 bytes of padding (40).
    // The CRCs were computed by hand (bitwise CRC32C, polynomial 0x82f63b78, over the nonce,
    // the first 24 header bytes and the payload) and are checked again below.
    let golden = concat!(
        // magic    payload_len generation        seq               crc      nonce_lo
        "504c4732 02000000 0500000000000000 0000000000000000 3786ef8f 88776655 ",
        // payload: Reclaim { ino: 16 }, padding
        "0c10 000000000000 ",
        "504c4732 06000000 0500000000000000 0100000000000000 99370dc6 88776655 ",
        // payload: Spill { ino: 22, extent: (0, 90, 1, written) }, padding
        "10 16 00 5a 01 00 0000 ",
        // after the last record: still zeros
        "0000000000000000",
    );
    assert_eq!(
        hex(&bytes),
        hex(&unhex(golden)),
        "the bytes of two log records changed (docs/DESIGN.md 3.3)"
    );

    // Field by field, at the documented offsets.
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    for (start, seq, op) in [(0usize, 0u64, &first), (40, 1, &second)] {
        let rec = &bytes[start..start + 40];
        let payload = postcard::to_allocvec(op).unwrap();
        assert_eq!(&rec[0..4], b"PLG2", "magic at 0");
        assert_eq!(u32_at(rec, 4) as usize, payload.len(), "payload_len at 4");
        assert_eq!(u64_at(rec, 8), generation, "generation at 8");
        assert_eq!(u64_at(rec, 16), seq, "seq at 16");
        assert_eq!(u32_at(rec, 28), nonce as u32, "nonce_lo at 28");
        assert_eq!(&rec[32..32 + payload.len()], &payload[..], "payload at 32");
        assert!(rec[32 + payload.len()..].iter().all(|b| *b == 0), "padding");
        let mut covered = nonce.to_le_bytes().to_vec();
        covered.extend_from_slice(&rec[..24]);
        covered.extend_from_slice(&payload);
        assert_eq!(u32_at(rec, 24), crc32c::crc32c(&covered), "crc at 24");
    }

    // And the journal reads them back.
    let (ops, end, next_seq) = read_log(&pool, log).unwrap();
    assert_eq!(ops, vec![first, second]);
    assert_eq!((end, next_seq), (80, 2));
}

/// docs/DESIGN.md 3.3 lists the ops in enum order, and names this file as their pin.
#[test]
fn design_doc_lists_the_ops_in_enum_order() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/DESIGN.md")).unwrap();
    let start = doc.find("### 3.3 ").expect("section 3.3");
    let section = &doc[start..];
    let section = &section[..section.find("\n### ").unwrap_or(section.len())];
    let ops = &section[section.find("**Ops**").expect("the Ops paragraph of 3.3")..];
    let ops = &ops[..ops.find("\n\n").unwrap_or(ops.len())];
    assert!(ops.contains("fs/tests/log_format.rs"), "{ops}");
    let mut from = 0;
    for name in VARIANTS {
        // "`Name" followed by something that cannot continue a name (`Write` is not
        // `WriteInline`).
        let needle = format!("`{name}");
        let at = ops[from..]
            .match_indices(&needle)
            .map(|(i, _)| from + i)
            .find(|&i| {
                ops[i + needle.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_ascii_alphanumeric())
            })
            .unwrap_or_else(|| {
                panic!("docs/DESIGN.md 3.3 does not list `{name}` after the ops before it")
            });
        from = at + needle.len();
    }
}
