//! Fuzz target `upgrade`: see `pfnfs_fuzz::upgrade`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pfnfs_fuzz::upgrade(data));
