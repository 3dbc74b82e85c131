//! SMS over SMPP 3.4: text encoding and concatenation, receipt parsing, the client adapter on
//! `rusmppc`, and an in-process sandbox SMSC for tests and the demo.

pub mod client;
mod driven;
pub mod encoding;
pub mod receipt;
pub mod sandbox;

pub use client::{SmppChannel, SmppConfig};
