//! The simulator: borrowers who change numbers, numbers recycled to strangers, channels that
//! deliver or fail, borrowers who pay or not — and a lender who sees only receipts, replies,
//! clicks, lookups and payments. The `reachline` strategy runs the policy core the live engine
//! runs (`assess_borrower`, `decide`, the gates); `baseline` and `multichannel` are what lenders
//! do today. Deterministic for a seed. Figures from it are simulated and labelled so.
//!
//! The hidden truth (who holds which number) lives in [`Truth`]; a strategy only gets the
//! lender's view (`View`), and a test checks it never reads the truth.

mod model;
mod scenario;

pub use model::{run, run_on, Metrics, Period, RunReport, Strategy};
pub use scenario::Scenario;
