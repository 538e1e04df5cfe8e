//! Fuzz target `free_set`: see `pfnfs_fuzz::free_set`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pfnfs_fuzz::free_set(data));
