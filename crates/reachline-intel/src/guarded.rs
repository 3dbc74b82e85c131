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

impl Answer {
    fn status(self) -> Option<NumberStatus> {
        match self {
            Answer::Status(s) => Some(s),
            _ => None,
        }
    }

    fn recycled(self) -> Option<RecycleAnswer> {
        match self {
            Answer::Recycled(a) => Some(a),
            _ => None,
        }
    }

    fn change(self) -> Option<ChangeSince> {
        match self {
            Answer::Change(c) => Some(c),
            _ => None,
        }
    }
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
            // The limiter's per-number state is pruned with the cache, not on every insert (it
            // walks every key).
            if let Some(l) = &self.limiter {
                l.retain_recent();
            }
        }
        cache.insert(key, (Instant::now(), answer));
    }

    /// The cached answer to `query` about `number`, or a lookup through `fetch` when the limit
    /// allows one; `wrap` and `unwrap` move the answer in and out of the cache's type.
    async fn guarded<T, Fut>(
        &self,
        query: Query,
        number: &PhoneNumber,
        since: Option<NaiveDate>,
        wrap: fn(T) -> Answer,
        unwrap: fn(Answer) -> Option<T>,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<T>
    where
        T: Copy,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let key = (query, number.e164().to_string(), since);
        if let Some(a) = self.cached(&key).and_then(unwrap) {
            return Ok(a);
        }
        self.admit(query, number)?;
        let a = fetch().await?;
        self.keep(key, wrap(a));
        Ok(a)
    }
}

#[async_trait]
impl<I: NumberIntel> NumberIntel for Guarded<I> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn status(&self, number: &PhoneNumber) -> Result<NumberStatus> {
        self.guarded(Query::Status, number, None, Answer::Status, Answer::status, || {
            self.inner.status(number)
        })
        .await
    }

    async fn recycled_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<RecycleAnswer> {
        self.guarded(
            Query::Recycled,
            number,
            Some(since),
            Answer::Recycled,
            Answer::recycled,
            || self.inner.recycled_since(number, since),
        )
        .await
    }

    async fn sim_swap_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince> {
        self.guarded(
            Query::SimSwap,
            number,
            Some(since),
            Answer::Change,
            Answer::change,
            || self.inner.sim_swap_since(number, since),
        )
        .await
    }

    async fn ported_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince> {
        self.guarded(
            Query::Ported,
            number,
            Some(since),
            Answer::Change,
            Answer::change,
            || self.inner.ported_since(number, since),
        )
        .await
    }
}
