//! End-to-end tests of the `reachline` binary, run as a user runs it, plus the tidy checks of
//! the workspace's written rules.

mod cli;
mod crash;
mod drill;
mod helpers;
mod import;
mod intel;
mod ledger;
mod nodes;
mod privacy;
mod simulate;
mod tidy;
