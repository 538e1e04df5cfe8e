//! The free-set image: exact round trips, rejection of every kind of corruption (each byte
//! flipped, each truncation, hand-made images with valid checksums but bad extents), no panic
//! on arbitrary input, and docs/DESIGN.md agreeing with the layout constants.

use std::path::Path;

use pfnfs_alloc::allocator::image::{self, ENTRY_BYTES, FIELDS, HEADER_BYTES, MAGIC};
use pfnfs_alloc::{AllocError, ExtentAllocator, Frames, Pfn, PfnRange};
use proptest::prelude::*;

fn r(start: u64, len: u64) -> PfnRange {
    PfnRange::new(Pfn(start), len).expect("valid range")
}

const REGION: PfnRange = PfnRange {
    start: Pfn(1536),
    len: 10_000,
};

/// A fragmented allocator: files allocated and partly freed, spread over several groups.
fn fragmented() -> ExtentAllocator {
    let a = ExtentAllocator::new_empty_with_group_frames(REGION, 1024);
    let mut held = Vec::new();
    for i in 0..60u64 {
        held.extend(
            a.allocate(1 + (i * 37) % 200, None)
                .map(Frames::into_ranges)
                .unwrap(),
        );
    }
    for (i, x) in held.into_iter().enumerate() {
        if i % 3 != 1 {
            a.free(x).unwrap();
        }
    }
    a.check_consistency().unwrap();
    assert!(a.free_extents().len() > 10);
    a
}

/// Builds an image by hand, independently of the encoder: header, pairs, crc32c over bytes
/// [0, 32) then [40, end).
fn craft(region: PfnRange, count: u64, pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut img = Vec::new();
    img.extend_from_slice(b"PFNFREE1");
    img.extend_from_slice(&region.start.0.to_le_bytes());
    img.extend_from_slice(&region.len.to_le_bytes());
    img.extend_from_slice(&count.to_le_bytes());
    img.extend_from_slice(&[0; 8]);
    for &(s, l) in pairs {
        img.extend_from_slice(&s.to_le_bytes());
        img.extend_from_slice(&l.to_le_bytes());
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&img[..32]), &img[40..]);
    img[32..36].copy_from_slice(&crc.to_le_bytes());
    img
}

fn corrupt_msg(res: Result<ExtentAllocator, AllocError>) -> String {
    match res {
        Err(AllocError::Corrupt(msg)) => msg,
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(a) => panic!("corrupt image accepted: {:?}", a.free_extents()),
    }
}

#[test]
fn round_trip_gives_the_same_free_set() {
    let a = fragmented();
    let img = a.encode_free_set();
    assert_eq!(
        img.len(),
        HEADER_BYTES + ENTRY_BYTES * a.free_extents().len()
    );
    let b = ExtentAllocator::decode_free_set(REGION, &img).unwrap();
    b.check_consistency().unwrap();
    assert_eq!(b.free_extents(), a.free_extents());
    assert_eq!(b.free_frames(), a.free_frames());
    assert_eq!(b.encode_free_set(), img);
    // The same set regrouped as the original: identical stats too.
    let c = ExtentAllocator::from_free_extents_with_group_frames(REGION, 1024, b.free_extents())
        .unwrap();
    assert_eq!(c.stats(), a.stats());
    // And the decoder by itself returns exactly the extents.
    assert_eq!(image::decode(REGION, &img).unwrap(), a.free_extents());
}

#[test]
fn round_trip_of_empty_and_full_free_sets() {
    let full = ExtentAllocator::new_empty(REGION);
    let img = full.encode_free_set();
    assert_eq!(img.len(), HEADER_BYTES + ENTRY_BYTES);
    assert_eq!(&img[..8], &MAGIC);
    let b = ExtentAllocator::decode_free_set(REGION, &img).unwrap();
    assert_eq!(b.free_extents(), vec![REGION]);

    let none = ExtentAllocator::from_free_extents(REGION, []).unwrap();
    let img = none.encode_free_set();
    assert_eq!(img.len(), HEADER_BYTES);
    let b = ExtentAllocator::decode_free_set(REGION, &img).unwrap();
    assert_eq!(b.free_extents(), vec![]);
    assert_eq!(b.free_frames(), 0);
}

#[test]
fn every_flipped_byte_is_rejected() {
    let img = fragmented().encode_free_set();
    for i in 0..img.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = img.clone();
            bad[i] ^= mask;
            corrupt_msg(ExtentAllocator::decode_free_set(REGION, &bad));
        }
    }
}

#[test]
fn every_truncation_and_extension_is_rejected() {
    let img = fragmented().encode_free_set();
    for len in 0..img.len() {
        corrupt_msg(ExtentAllocator::decode_free_set(REGION, &img[..len]));
    }
    for extra in [1usize, 8, 16, 32] {
        let mut long = img.clone();
        long.extend(std::iter::repeat_n(0u8, extra));
        corrupt_msg(ExtentAllocator::decode_free_set(REGION, &long));
    }
}

#[test]
fn wrong_magic_and_wrong_region_are_rejected() {
    let good = craft(REGION, 1, &[(2000, 10)]);
    assert_eq!(image::decode(REGION, &good).unwrap(), vec![r(2000, 10)]);

    let mut bad = good.clone();
    bad[..8].copy_from_slice(b"PFNFREE2");
    assert!(corrupt_msg(ExtentAllocator::decode_free_set(REGION, &bad)).contains("magic"));

    // Valid image, other region.
    let other = r(REGION.start.0, REGION.len + 512);
    let msg = corrupt_msg(ExtentAllocator::decode_free_set(other, &good));
    assert!(msg.contains("region"), "{msg}");
}

#[test]
fn bad_extents_with_valid_checksums_are_rejected() {
    let s = REGION.start.0;
    let e = REGION.end().0;
    let cases: &[(&str, Vec<(u64, u64)>)] = &[
        ("overlapping", vec![(s, 100), (s + 50, 100)]),
        ("unsorted", vec![(s + 500, 10), (s, 10)]),
        ("duplicate", vec![(s + 5, 10), (s + 5, 10)]),
        ("adjacent (not coalesced)", vec![(s, 10), (s + 10, 10)]),
        ("empty", vec![(s, 0)]),
        ("before the region", vec![(s - 1, 10)]),
        ("past the region", vec![(e - 5, 10)]),
        ("overflowing", vec![(u64::MAX - 3, 10)]),
        ("wholly outside", vec![(e + 100, 1)]),
    ];
    for (what, pairs) in cases {
        let img = craft(REGION, pairs.len() as u64, pairs);
        let res = ExtentAllocator::decode_free_set(REGION, &img);
        assert!(
            matches!(res, Err(AllocError::Corrupt(_))),
            "{what}: {:?}",
            res.map(|a| a.free_extents())
        );
    }
    // Count field disagreeing with the body, including absurd counts that must not be used
    // to size an allocation.
    for count in [0u64, 2, 3, u64::MAX, u64::MAX / 16, 1 << 40] {
        let img = craft(REGION, count, &[(s, 10)]);
        let msg = corrupt_msg(ExtentAllocator::decode_free_set(REGION, &img));
        assert!(msg.contains("extents"), "{msg}");
    }
    // Nonzero reserved word with a valid crc.
    let mut img = craft(REGION, 1, &[(s, 10)]);
    img[36] = 1;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&img[..32]), &img[40..]);
    img[32..36].copy_from_slice(&crc.to_le_bytes());
    assert!(corrupt_msg(ExtentAllocator::decode_free_set(REGION, &img)).contains("reserved"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes, with or without a valid-looking header: an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..300),
                                   with_header in any::<bool>()) {
        let bytes = if with_header {
            let mut v = craft(REGION, (body.len() / 16) as u64, &[]);
            v.extend_from_slice(&body);
            v
        } else {
            body
        };
        let _ = ExtentAllocator::decode_free_set(REGION, &bytes);
    }

    /// Random edits of a valid image decode to the original set or fail; never panic.
    #[test]
    fn mutated_images_fail_cleanly(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                                   cut in any::<prop::sample::Index>(), do_cut in any::<bool>()) {
        let a = fragmented();
        let img = a.encode_free_set();
        let mut bad = img.clone();
        for (at, v) in edits {
            let i = at.index(bad.len());
            bad[i] = v;
        }
        if do_cut {
            bad.truncate(cut.index(bad.len()));
        }
        match ExtentAllocator::decode_free_set(REGION, &bad) {
            Ok(b) => {
                prop_assert_eq!(&bad, &img, "a changed image was accepted");
                prop_assert_eq!(b.free_extents(), a.free_extents());
            }
            Err(AllocError::Corrupt(_)) => prop_assert_ne!(&bad, &img),
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Code and design document agree

fn allocator_section() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/DESIGN.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let marker = "<!-- section: allocator ";
    let start = text
        .find(marker)
        .expect("DESIGN.md has an allocator section");
    let rest = &text[start + marker.len()..];
    let end = rest.find("<!-- section: ").unwrap_or(rest.len());
    rest[..end].to_string()
}

#[test]
fn design_doc_image_table_matches_code() {
    let section = allocator_section();
    let rows: Vec<Vec<String>> = section
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect()
        })
        .collect();
    // Header rows: numeric offset and size.
    let header: Vec<(usize, usize, String)> = rows
        .iter()
        .filter_map(|c| {
            Some((
                c.first()?.parse().ok()?,
                c.get(1)?.parse().ok()?,
                c.get(2)?.clone(),
            ))
        })
        .collect();
    let code: Vec<(usize, usize, String)> = FIELDS
        .iter()
        .map(|f| (f.offset, f.size, f.name.to_string()))
        .collect();
    assert_eq!(
        header, code,
        "docs/DESIGN.md free-set image table vs image::FIELDS"
    );
    // The fields tile the header.
    let last = FIELDS.last().unwrap();
    assert_eq!(last.offset + last.size, HEADER_BYTES);
    for w in FIELDS.windows(2) {
        assert_eq!(w[0].offset + w[0].size, w[1].offset);
    }
    // Entry rows: "<HEADER_BYTES> + <ENTRY_BYTES> i" and "+ 8" for the length.
    let start_row = format!("{HEADER_BYTES} + {ENTRY_BYTES} i");
    let len_row = format!("{} + {ENTRY_BYTES} i", HEADER_BYTES + 8);
    for (want, field) in [(&start_row, "extent[i].start"), (&len_row, "extent[i].len")] {
        let row = rows
            .iter()
            .find(|c| c.first() == Some(want))
            .unwrap_or_else(|| panic!("DESIGN.md image table lacks a row `{want}`"));
        assert_eq!(row.get(1).map(String::as_str), Some("8"));
        assert_eq!(row.get(2).map(String::as_str), Some(field));
    }
    assert!(section.contains(&format!("`{}`", std::str::from_utf8(&MAGIC).unwrap())));
}
