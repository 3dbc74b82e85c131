//! Integration tests of the channel adapters over real sockets on loopback: the conformance
//! suite (against the Rust sandbox SMSC and the Python `smpp34` SMSC) and the interop runs.

mod conformance;
mod helpers;
mod http;
mod interop;
mod smtp;
