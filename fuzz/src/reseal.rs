//! Resealing: recomputing the checksums of a damaged image so that what the damage did to
//! the fields, not the checksum that catches it, is what the code under test sees. Without it
//! nearly every mutation of a pool dies at a CRC check; with it the fuzzer forges metadata
//! that is wrong but carries valid checksums (what a bug would write), which must be refused
//! by the field checks or found by fsck, never panic.
//!
//! Resealed: both superblock slots (either format), every node frame (magic `PBTNODE2`) in
//! the compact image's part of the data region, and the records of the current superblock's
//! log generation at the start of the log (format 2 ones with its nonce, format 1 ones as
//! format 1 wrote them). Overflow runs are not resealed (their CRC is also in the referencing
//! leaf): damage there still meets its CRC.

use pfnfs_alloc::layout::LOG_START_PFN;
use pfnfs_alloc::{FRAME_SIZE, MemBackend, PoolBackend};
use pfnfs_btree::format::{NODE_MAGIC, node_crc};
use pfnfs_fs::journal::{RECORD_HEADER_BYTES, RECORD_MAGIC, RECORD_MAGIC_V1, RECORD_PAYLOAD_MAX};

use crate::{DATA_MAX, LOG_PART, data_offset};

const SB_MAGIC: &[u8; 8] = b"PFNFSPOL";
const SB_BYTES: usize = 256;
const SB_CRC: usize = 252;
const SB_SEQ: usize = 40;
const SB_GENERATION: usize = 104;
const SB_NONCE: usize = 120;

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reseals the superblock slots, node frames and log records of a [`crate::POOL_BYTES`] pool
/// within the parts a compact image covers.
pub fn reseal_pool(mem: &MemBackend) {
    // (seq, log generation, nonce) of the newest slot.
    let mut current: Option<(u64, u64, u64)> = None;
    for slot in [0, FRAME_SIZE] {
        let mut sb = mem.read_vec(slot, SB_BYTES).expect("RAM does not fault");
        if sb[..8] != SB_MAGIC[..] {
            continue;
        }
        let crc = crc32c::crc32c(&sb[..SB_CRC]);
        sb[SB_CRC..].copy_from_slice(&crc.to_le_bytes());
        mem.write(slot, &sb).expect("RAM does not fault");
        let seq = u64_at(&sb, SB_SEQ);
        if current.is_none_or(|(s, _, _)| seq > s) {
            current = Some((seq, u64_at(&sb, SB_GENERATION), u64_at(&sb, SB_NONCE)));
        }
    }
    let at = data_offset();
    for i in 0..(DATA_MAX as u64 / FRAME_SIZE) {
        let mut frame = mem
            .read_vec(at + i * FRAME_SIZE, FRAME_SIZE as usize)
            .expect("RAM does not fault");
        if frame[..8] == NODE_MAGIC {
            let crc = node_crc(&frame);
            frame[24..28].copy_from_slice(&crc.to_le_bytes());
            mem.write(at + i * FRAME_SIZE, &frame)
                .expect("RAM does not fault");
        }
    }
    let log_at = LOG_START_PFN * FRAME_SIZE;
    let mut log = mem.read_vec(log_at, LOG_PART).expect("RAM does not fault");
    if let Some((_, generation, nonce)) = current {
        reseal_log(&mut log, generation, Some(nonce));
        mem.write(log_at, &log).expect("RAM does not fault");
    }
}

/// Reseals the records at the start of `log` while their headers read as records of
/// `generation` (magic, generation, a payload that fits): format 2 records (`PLG2`) with
/// `nonce` (left alone without one), format 1 records (`PLOG`) without. Records of other
/// generations (a log holds older ones past the current records) keep their checksums.
pub fn reseal_log(log: &mut [u8], generation: u64, nonce: Option<u64>) {
    let mut offset = 0usize;
    while offset + RECORD_HEADER_BYTES as usize <= log.len() {
        let h = &log[offset..];
        let magic = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
        let len = u64::from(u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")));
        if u64_at(h, 8) != generation {
            return;
        }
        let seed = match (magic, nonce) {
            (RECORD_MAGIC, Some(n)) => crc32c::crc32c(&n.to_le_bytes()),
            (RECORD_MAGIC_V1, _) => 0,
            _ => return,
        };
        let end = offset + (RECORD_HEADER_BYTES + len) as usize;
        if len > RECORD_PAYLOAD_MAX || end > log.len() {
            return;
        }
        let crc = crc32c::crc32c_append(
            crc32c::crc32c_append(seed, &log[offset..offset + 24]),
            &log[offset + RECORD_HEADER_BYTES as usize..end],
        );
        log[offset + 24..offset + 28].copy_from_slice(&crc.to_le_bytes());
        offset = end.next_multiple_of(8);
    }
}
