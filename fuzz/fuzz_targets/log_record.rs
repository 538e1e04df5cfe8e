//! Fuzz target `log_record`: see `pfnfs_fuzz::log_record`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pfnfs_fuzz::log_record(data));
