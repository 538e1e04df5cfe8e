//! Fuzz target `btree`: see `pfnfs_fuzz::btree`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pfnfs_fuzz::btree(data));
