//! Pure classification tables: every protocol's outcome codes turned into a `DeliveryClass`.
//!
//! No IO here; each table is a function a test can call with the code as the provider sends it.

pub mod email;
pub mod http;
pub mod smpp;
