#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reachline_fuzz::wechat_event::check(data));
