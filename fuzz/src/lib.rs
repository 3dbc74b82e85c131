//! The fuzz targets' bodies, one module per parser that reads outside input. Each `check` takes
//! the raw bytes, runs the parser and asserts what is cheap to assert (every `check` must never
//! panic on any input; round trips where the parser has a writer).
//!
//! `fuzz_targets/*.rs` wrap these in libFuzzer's `fuzz_target!` (feature `libfuzzer`);
//! `tests/replay.rs` runs every file of `corpus/<target>/` through the same functions on stable,
//! without libFuzzer.

pub mod book_rows;
pub mod dsn_bounce;
pub mod ledger_note;
pub mod reply_classify;
pub mod smpp_receipt;
pub mod webhook_body;
pub mod wechat_event;

/// A target's body: never panics on any input.
pub type Check = fn(&[u8]);

/// Every target by its name (the name of its `fuzz_targets/` file and its `corpus/` folder).
pub const TARGETS: &[(&str, Check)] = &[
    ("smpp_receipt", smpp_receipt::check),
    ("dsn_bounce", dsn_bounce::check),
    ("book_rows", book_rows::check),
    ("reply_classify", reply_classify::check),
    ("ledger_note", ledger_note::check),
    ("webhook_body", webhook_body::check),
    ("wechat_event", wechat_event::check),
];
