//! Fuzz target `schema`: see `pfnfs_fuzz::schema`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pfnfs_fuzz::schema(data));
