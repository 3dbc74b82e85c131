#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reachline_fuzz::webhook_body::check(data));
