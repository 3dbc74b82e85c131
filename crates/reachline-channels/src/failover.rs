//! Several providers for one channel in priority order: a circuit breaker per provider takes a
//! failing or slow one out of rotation for a while, a token bucket per provider (`governor`)
//! keeps us under the account's rate, and a send falls over to the next provider only when the
//! failure is the provider's, never when the address itself was refused, and never when the
//! provider may have taken the message (no answer in time, or the connection dropped after the
//! message went out: [`crate::Permanence::InDoubt`]), since the next provider would send it twice.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::{Accepted, Channel, Outbound, ReceiptStream, Scope, SendError};

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// How long an open breaker refuses calls before one trial call is let through.
    pub open_for: Duration,
    /// A call slower than this counts as a failure even when it succeeds.
    pub slow: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 3,
            open_for: Duration::from_secs(30),
            slow: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out; its result closes or reopens the breaker.
    HalfOpen,
}

/// A circuit breaker; time is handed in.
#[derive(Debug, Clone)]
pub struct Breaker {
    pub config: BreakerConfig,
    pub state: BreakerState,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            state: BreakerState::Closed { failures: 0 },
        }
    }

    /// Whether a call may go now. An expired open breaker lets exactly one trial through.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// Records a call's result and how long it took.
    pub fn record(&mut self, ok: bool, took: Duration, now: Instant) {
        let ok = ok && took <= self.config.slow;
        self.state = match (self.state, ok) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) if failures + 1 < self.config.failures => {
                BreakerState::Closed { failures: failures + 1 }
            }
            (_, false) => BreakerState::Open {
                until: now + self.config.open_for,
            },
        };
    }
}

/// A provider in a failover group.
pub struct Provider {
    pub channel: Arc<dyn Channel>,
    breaker: Mutex<Breaker>,
    limiter: Option<DefaultDirectRateLimiter>,
    timeout: Duration,
}

impl Provider {
    /// `per_second`: the account's rate (burst of the same size); `None` for no limit.
    pub fn new(
        channel: Arc<dyn Channel>,
        breaker: BreakerConfig,
        per_second: Option<NonZeroU32>,
        timeout: Duration,
    ) -> Self {
        Provider {
            channel,
            breaker: Mutex::new(Breaker::new(breaker)),
            limiter: per_second.map(|r| RateLimiter::direct(Quota::per_second(r))),
            timeout,
        }
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.lock().expect("breaker lock poisoned").state
    }
}

/// Providers of one channel, tried in order.
pub struct Failover {
    name: String,
    kind: reachline_domain::Channel,
    providers: Vec<Provider>,
}

impl Failover {
    pub fn new(name: &str, kind: reachline_domain::Channel, providers: Vec<Provider>) -> Self {
        Failover {
            name: name.to_string(),
            kind,
            providers,
        }
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }
}

#[async_trait::async_trait]
impl Channel for Failover {
    fn kind(&self) -> reachline_domain::Channel {
        self.kind
    }

    fn provider(&self) -> &str {
        &self.name
    }

    async fn send(&self, msg: &Outbound) -> Result<Accepted, SendError> {
        let mut last = None;
        for p in &self.providers {
            if !p.breaker.lock().expect("breaker lock poisoned").allow(Instant::now()) {
                continue;
            }
            if let Some(l) = &p.limiter {
                l.until_ready().await;
            }
            let start = Instant::now();
            let result = match tokio::time::timeout(p.timeout, p.channel.send(msg)).await {
                Ok(r) => r,
                // The provider may have taken it while we waited: the next one must not send it
                // again.
                Err(_) => Err(SendError::in_doubt(
                    p.channel.provider(),
                    format!("no answer in {:?}", p.timeout),
                )),
            };
            let provider_fault = matches!(&result, Err(e) if e.scope == Scope::Provider);
            p.breaker
                .lock()
                .expect("breaker lock poisoned")
                .record(!provider_fault, start.elapsed(), Instant::now());
            match result {
                Err(e) if e.scope == Scope::Provider && !e.is_in_doubt() => {
                    tracing::warn!(provider = p.channel.provider(), error = %e, "provider failed; trying the next");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| SendError::unavailable(&self.name, "every provider's breaker is open")))
    }

    fn status(&self) -> Vec<crate::ProviderStatus> {
        self.providers
            .iter()
            .flat_map(|p| {
                let breaker = match p.breaker_state() {
                    BreakerState::Closed { .. } => None,
                    BreakerState::Open { until } if until <= Instant::now() => Some(crate::ProviderState::HalfOpen),
                    BreakerState::Open { .. } => Some(crate::ProviderState::Open),
                    BreakerState::HalfOpen => Some(crate::ProviderState::HalfOpen),
                };
                // The breaker's view wins; a closed breaker shows the provider's own.
                p.channel.status().into_iter().map(move |mut st| {
                    if let Some(b) = breaker {
                        st.state = b;
                    }
                    st
                })
            })
            .collect()
    }

    fn take_receipts(&self) -> Option<ReceiptStream> {
        let streams: Vec<ReceiptStream> = self
            .providers
            .iter()
            .filter_map(|p| p.channel.take_receipts())
            .collect();
        (!streams.is_empty()).then(|| Box::pin(futures::stream::select_all(streams)) as ReceiptStream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_consecutive_failures_and_half_opens_once() {
        let t = Instant::now();
        let cfg = BreakerConfig {
            failures: 2,
            open_for: Duration::from_secs(10),
            slow: Duration::from_secs(1),
        };
        let mut b = Breaker::new(cfg);
        let fast = Duration::from_millis(1);
        b.record(false, fast, t);
        assert!(b.allow(t));
        b.record(true, fast, t);
        b.record(false, fast, t);
        assert!(b.allow(t), "success reset the count");
        b.record(false, fast, t);
        assert!(!b.allow(t + Duration::from_secs(9)));
        assert!(b.allow(t + Duration::from_secs(10)), "one trial after open_for");
        assert!(!b.allow(t + Duration::from_secs(10)), "only one");
        b.record(false, fast, t + Duration::from_secs(10));
        assert!(!b.allow(t + Duration::from_secs(19)));
        assert!(b.allow(t + Duration::from_secs(20)));
        b.record(true, fast, t + Duration::from_secs(20));
        assert_eq!(b.state, BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn slow_successes_count_as_failures() {
        let t = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            failures: 1,
            open_for: Duration::from_secs(5),
            slow: Duration::from_millis(100),
        });
        b.record(true, Duration::from_millis(150), t);
        assert!(matches!(b.state, BreakerState::Open { .. }));
    }
}
