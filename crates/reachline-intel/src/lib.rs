//! Number intelligence behind one trait: what a carrier or a registry can say about a number.
//!
//! The answers' types and the recycled-number semantics are pure and live in
//! `reachline_policy::intel`; this crate does the IO. Sources:
//!
//! - [`RegistryIntel`]: disconnection records loaded into the store from a file in the FCC
//!   Reassigned Numbers Database's data shape (`reachline intel load-disconnects`), answered
//!   locally with the FCC's yes / no / no-data rules.
//! - [`HttpIntel`]: a number-status vendor over HTTP, with a configurable base URL, paths and
//!   field mapping, so any vendor's JSON can be read without code.
//! - [`Layered`]: asks sources in order until one knows.
//! - [`Guarded`]: caches answers and limits how often one number may be asked about (carriers
//!   block rapid repeats), in front of any source.
//!
//! The original carrier comes from the numbering plan (`reachline_domain::original_carrier`)
//! and is never taken for the current carrier.

mod guarded;
mod http;
mod registry;

use async_trait::async_trait;
use chrono::NaiveDate;
use reachline_domain::PhoneNumber;
use reachline_policy::intel::{ChangeSince, NumberStatus, RecycleAnswer};
use serde::{Deserialize, Serialize};

pub use guarded::{Guarded, GuardedConfig};
pub use http::{HttpIntel, HttpIntelConfig, QuerySpec};
pub use registry::{parse_disconnects, DisconnectError, RegistryIntel};

/// Why a lookup gave no answer. Never carries the number.
#[derive(Debug, thiserror::Error)]
pub enum IntelError {
    #[error("{source_name} does not answer {query} queries")]
    Unsupported { source_name: String, query: &'static str },
    #[error("{source_name}: this number was asked about less than {min_interval_secs} s ago; try again later")]
    RateLimited {
        source_name: String,
        min_interval_secs: u64,
    },
    #[error("{source_name}: {message}")]
    Vendor { source_name: String, message: String },
    #[error("{source_name}: request failed: {message}")]
    Transport { source_name: String, message: String },
    #[error("store: {0}")]
    Store(#[from] reachline_store::StoreError),
}

pub type Result<T> = std::result::Result<T, IntelError>;

/// The kinds of question a source may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Query {
    Status,
    Recycled,
    SimSwap,
    Ported,
}

impl Query {
    pub fn as_str(self) -> &'static str {
        match self {
            Query::Status => "status",
            Query::Recycled => "recycled",
            Query::SimSwap => "sim_swap",
            Query::Ported => "ported",
        }
    }
}

/// A source of number intelligence.
#[async_trait]
pub trait NumberIntel: Send + Sync {
    /// The source's name, recorded with every answer as the evidence's source.
    fn name(&self) -> &str;

    /// The carrier's view of the number now.
    async fn status(&self, number: &PhoneNumber) -> Result<NumberStatus>;

    /// Was the number permanently disconnected on or after `since` (the day the lender last
    /// knew it was the borrower's)?
    async fn recycled_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<RecycleAnswer>;

    /// Was the SIM swapped since `since`?
    async fn sim_swap_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince>;

    /// Was the number ported to another carrier since `since`?
    async fn ported_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince>;
}

fn unsupported<T>(source: &str, query: Query) -> Result<T> {
    Err(IntelError::Unsupported {
        source_name: source.to_string(),
        query: query.as_str(),
    })
}

/// Several sources asked in order: the first that knows answers. A status of `unknown`, a
/// recycled answer of `no_data` and an unsupported query pass to the next source; the last
/// answer (or error) stands when none knows.
pub struct Layered {
    name: String,
    sources: Vec<Box<dyn NumberIntel>>,
}

impl Layered {
    pub fn new(sources: Vec<Box<dyn NumberIntel>>) -> Self {
        let name = sources.iter().map(|s| s.name()).collect::<Vec<_>>().join("+");
        Self { name, sources }
    }
}

#[async_trait]
impl NumberIntel for Layered {
    fn name(&self) -> &str {
        &self.name
    }

    async fn status(&self, number: &PhoneNumber) -> Result<NumberStatus> {
        let mut last = unsupported(&self.name, Query::Status);
        for s in &self.sources {
            last = s.status(number).await;
            if matches!(last, Ok(st) if st != NumberStatus::Unknown) {
                break;
            }
        }
        last
    }

    async fn recycled_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<RecycleAnswer> {
        let mut last = unsupported(&self.name, Query::Recycled);
        for s in &self.sources {
            last = s.recycled_since(number, since).await;
            if matches!(last, Ok(a) if a != RecycleAnswer::NoData) {
                break;
            }
        }
        last
    }

    async fn sim_swap_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince> {
        let mut last = unsupported(&self.name, Query::SimSwap);
        for s in &self.sources {
            last = s.sim_swap_since(number, since).await;
            if last.is_ok() {
                break;
            }
        }
        last
    }

    async fn ported_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince> {
        let mut last = unsupported(&self.name, Query::Ported);
        for s in &self.sources {
            last = s.ported_since(number, since).await;
            if last.is_ok() {
                break;
            }
        }
        last
    }
}

/// Configuration of the number-intelligence sources (`[intel]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntelConfig {
    /// The first day the loaded disconnection registry is complete for: a number it does not
    /// hold answers "no" for dates from this day on, and "no data" before (the FCC database is
    /// complete from 2021-01-27).
    pub registry_complete_since: NaiveDate,
    pub guard: GuardedConfig,
    /// A number-status vendor over HTTP, if the lender has one.
    pub http: Option<HttpIntelConfig>,
}

impl Default for IntelConfig {
    fn default() -> Self {
        Self {
            registry_complete_since: reachline_policy::intel::RND_COMPLETE_SINCE,
            guard: GuardedConfig::default(),
            http: None,
        }
    }
}

/// The configured sources, guarded: the local registry first, then the vendor if any.
pub fn from_config(cfg: &IntelConfig, store: std::sync::Arc<dyn reachline_store::Store>) -> Result<Guarded<Layered>> {
    let mut sources: Vec<Box<dyn NumberIntel>> = vec![Box::new(RegistryIntel::new(store, cfg.registry_complete_since))];
    if let Some(http) = &cfg.http {
        sources.push(Box::new(HttpIntel::new(http.clone())?));
    }
    Ok(Guarded::new(Layered::new(sources), cfg.guard.clone()))
}
