#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reachline_fuzz::reply_classify::check(data));
