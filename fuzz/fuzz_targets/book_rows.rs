#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reachline_fuzz::book_rows::check(data));
