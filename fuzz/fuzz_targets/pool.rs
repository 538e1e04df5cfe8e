//! Fuzz target `pool`: see `pfnfs_fuzz::pool`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pfnfs_fuzz::pool(data));
