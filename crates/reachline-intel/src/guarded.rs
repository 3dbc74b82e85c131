//! `Guarded`: a cache and a per-number rate limit in front of any source.
//!
//! Carriers and their resellers block a caller that asks about the same number over and over,
//! and each lookup costs money, so an answer is kept for a while (`ttl_*`) and a number that was
//! asked about too recently is refused with `RateLimited` rather than asked again. The limit is
//! a `governor` keyed token bucket; the cache is a map with expiry (a handful of entries per
//! number checked, no need for an eviction policy beyond the TTL and a size cap).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::NaiveDate;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use reachline_domain::PhoneNumber;
use reachline_policy::intel::{ChangeSince, NumberStatus, RecycleAnswer};
use serde::{Deserialize, Serialize};

use crate::{IntelError, NumberIntel, Query, Result};

/// How long answers are kept and how often a number may be asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardedConfig {
    /// How long a status answer is kept (it changes: a number can be suspended tomorrow).
    pub status_ttl_secs: u64,
    /// How long recycled, SIM-swap and port answers are kept (registries update daily at best).
    pub history_ttl_secs: u64,
    /// At most one uncached lookup of each kind per number per this many seconds (0: no limit).
    pub min_interval_secs: u64,
    /// Cached answers kept at most; the oldest half is dropped when full.
    pub max_entries: usize,
}

impl Default for GuardedConfig {
    fn default() -> Self {
        Self {
            status_ttl_secs: 6 * 3600,
            history_ttl_secs: 24 * 3600,
            min_interval_secs: 60,
            max_entries: 100_000,
        }
    }
}

#[derive(Clone, Copy)]
enum Answer {
    Status(NumberStatus),
    Recycled(RecycleAnswer),
    Change(ChangeSince),
}

type Key = (Query, String, Option<NaiveDate>);

/// Caches and rate-limits the lookups of an inner source.
pub struct Guarded<I> {
    inner: I,
    cfg: GuardedConfig,
    cache: Mutex<HashMap<Key, (Instant, Answer)>>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    lookups: std::sync::atomic::AtomicU64,
}

impl<I: NumberIntel> Guarded<I> {
    pub fn new(inner: I, cfg: GuardedConfig) -> Self {
        let limiter = Quota::with_period(Duration::from_secs(cfg.min_interval_secs))
            .map(|q| RateLimiter::keyed(q.allow_burst(NonZeroU32::MIN)));
        Self {
            inner,
            cfg,
            cache: Mutex::new(HashMap::new()),
            limiter,
            lookups: Default::default(),
        }
    }

    /// How many lookups reached the inner source.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cached(&self, key: &Key) -> Option<Answer> {
        let ttl = Duration::from_secs(match key.0 {
            Query::Status => self.cfg.status_ttl_secs,
            _ => self.cfg.history_ttl_secs,
        });
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|(at, _)| at.elapsed() < ttl).map(|(_, a)| *a)
    }

    fn admit(&self, query: Query, number: &PhoneNumber) -> Result<()> {
        if let Some(l) = &self.limiter {
            if l.check_key(&format!("{}:{}", query.as_str(), number.e164())).is_err() {
                return Err(IntelError::RateLimited {
                    source_name: self.inner.name().to_string(),
                    min_interval_secs: self.cfg.min_interval_secs,
                });
            }
        }
        self.lookups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn keep(&self, key: Key, answer: Answer) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.cfg.max_entries.max(2) {
            let mut ages: Vec<Instant> = cache.values().map(|(at, _)| *at).collect();
            ages.sort();
            let cut = ages[ages.len() / 2];
            cache.retain(|_, (at, _)| *at > cut);
        }
        cache.insert(key, (Instant::now(), answer));
        if let Some(l) = &self.limiter {
            l.retain_recent();
        }
    }
}

#[async_trait]
impl<I: NumberIntel> NumberIntel for Guarded<I> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn status(&self, number: &PhoneNumber) -> Result<NumberStatus> {
        let key = (Query::Status, number.e164().to_string(), None);
        if let Some(Answer::Status(s)) = self.cached(&key) {
            return Ok(s);
        }
        self.admit(Query::Status, number)?;
        let s = self.inner.status(number).await?;
        self.keep(key, Answer::Status(s));
        Ok(s)
    }

    async fn recycled_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<RecycleAnswer> {
        let key = (Query::Recycled, number.e164().to_string(), Some(since));
        if let Some(Answer::Recycled(a)) = self.cached(&key) {
            return Ok(a);
        }
        self.admit(Query::Recycled, number)?;
        let a = self.inner.recycled_since(number, since).await?;
        self.keep(key, Answer::Recycled(a));
        Ok(a)
    }

    async fn sim_swap_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince> {
        let key = (Query::SimSwap, number.e164().to_string(), Some(since));
        if let Some(Answer::Change(c)) = self.cached(&key) {
            return Ok(c);
        }
        self.admit(Query::SimSwap, number)?;
        let c = self.inner.sim_swap_since(number, since).await?;
        self.keep(key, Answer::Change(c));
        Ok(c)
    }

    async fn ported_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince> {
        let key = (Query::Ported, number.e164().to_string(), Some(since));
        if let Some(Answer::Change(c)) = self.cached(&key) {
            return Ok(c);
        }
        self.admit(Query::Ported, number)?;
        let c = self.inner.ported_since(number, since).await?;
        self.keep(key, Answer::Change(c));
        Ok(c)
    }
}
