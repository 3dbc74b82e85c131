//! `/metrics` in the Prometheus text format (`prometheus-client`): requests by route and
//! status with their latency, webhook receipts by class and how many were refused, and the
//! engine's own figures (sends, receipts, queue depth by state) read at scrape time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    provider: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhyLabels {
    provider: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabels {
    channel: String,
    provider: String,
    /// `accepted`, or the class of the refusal.
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    channel: String,
    provider: String,
    /// `up`, `open` (breaker), `half_open`, `down` (not connected).
    state: String,
}

/// The server's metrics; cheap to clone (shared inside).
#[derive(Clone)]
pub struct Metrics {
    gateway: Family<GatewayLabels, Counter>,
    gateway_latency: Family<ChannelLabels, Histogram>,
    registry: Arc<Mutex<Registry>>,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteOnly, Histogram>,
    webhook_receipts: Family<ClassLabels, Counter>,
    webhook_refused: Family<WhyLabels, Counter>,
    outbox: Family<StateLabels, Gauge>,
    providers: Family<ProviderLabels, Gauge>,
    sends: Counter,
    receipts: Counter,
    receipts_unmatched: Counter,
    lookups: Counter,
    lookups_failed: Counter,
    ledger_size: Gauge,
    ledger_sequencer: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("reachline");
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        let webhook_receipts = Family::<ClassLabels, Counter>::default();
        let webhook_refused = Family::<WhyLabels, Counter>::default();
        let outbox = Family::<StateLabels, Gauge>::default();
        let providers = Family::<ProviderLabels, Gauge>::default();
        let (sends, receipts, receipts_unmatched) = (Counter::default(), Counter::default(), Counter::default());
        let (lookups, lookups_failed) = (Counter::default(), Counter::default());
        let ledger_size = Gauge::default();
        let ledger_sequencer = Gauge::default();
        let gateway = Family::<GatewayLabels, Counter>::default();
        let gateway_latency = Family::<ChannelLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        r.register(
            "gateway_handovers",
            "Messages handed to a provider by channel, provider and result (accepted, or the refusal's class)",
            gateway.clone(),
        );
        r.register(
            "gateway_handover_seconds",
            "How long providers took to accept or refuse a message (dispatch latency), by channel",
            gateway_latency.clone(),
        );
        r.register(
            "http_requests",
            "HTTP requests by route template and status",
            requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            latency.clone(),
        );
        r.register(
            "webhook_receipts",
            "Receipts taken by webhook, by provider and delivery class",
            webhook_receipts.clone(),
        );
        r.register(
            "webhook_refused",
            "Webhooks refused, by provider and reason",
            webhook_refused.clone(),
        );
        r.register(
            "outbox_rows",
            "Outbox rows by state (queue depth is `queued`)",
            outbox.clone(),
        );
        r.register(
            "gateway_provider_state",
            "1 for each provider's current state (up, open breaker, half open, down), by channel",
            providers.clone(),
        );
        r.register(
            "engine_sends",
            "Sends the providers accepted, since start",
            sends.clone(),
        );
        r.register("engine_receipts", "Receipts recorded, since start", receipts.clone());
        r.register(
            "engine_receipts_unmatched",
            "Receipts that matched no send on arrival (kept; matched late when their send's record follows), since start",
            receipts_unmatched.clone(),
        );
        r.register(
            "engine_lookups",
            "Carrier and recycled-number lookups asked, since start",
            lookups.clone(),
        );
        r.register(
            "engine_lookups_failed",
            "Lookups that gave no answer (an error, or none within [engine] lookup_timeout_ms), since start",
            lookups_failed.clone(),
        );
        r.register(
            "ledger_leaves",
            "Leaves under the latest signed checkpoint",
            ledger_size.clone(),
        );
        r.register(
            "ledger_sequencer",
            "1 on the node that sequences the ledger, 0 on a node that queues its leaves for it (one node of a cluster shows 1)",
            ledger_sequencer.clone(),
        );
        Metrics {
            gateway,
            gateway_latency,
            registry: Arc::new(Mutex::new(r)),
            requests,
            latency,
            webhook_receipts,
            webhook_refused,
            outbox,
            providers,
            sends,
            receipts,
            receipts_unmatched,
            lookups,
            lookups_failed,
            ledger_size,
            ledger_sequencer,
        }
    }
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RouteLabels {
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteOnly {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn webhook_receipt(&self, provider: &str, class: &str) {
        self.webhook_receipts
            .get_or_create(&ClassLabels {
                provider: provider.to_string(),
                class: class.to_string(),
            })
            .inc();
    }

    pub fn webhook_refused(&self, provider: &str, reason: &str) {
        self.webhook_refused
            .get_or_create(&WhyLabels {
                provider: provider.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl reachline_engine::SendObserver for Metrics {
    fn handed_over(
        &self,
        channel: reachline_domain::Channel,
        provider: &str,
        took: Duration,
        refused: Option<reachline_domain::DeliveryClass>,
    ) {
        self.gateway
            .get_or_create(&GatewayLabels {
                channel: channel.as_str().into(),
                provider: provider.into(),
                result: refused.map_or("accepted", |c| c.as_str()).into(),
            })
            .inc();
        self.gateway_latency
            .get_or_create(&ChannelLabels {
                channel: channel.as_str().into(),
            })
            .observe(took.as_secs_f64());
    }
}

/// Counters that only grow are set by the difference from what they show.
fn catch_up(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// `GET /metrics`.
pub async fn render(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(expected) = s.config.metrics_token.as_deref() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), given.as_bytes())) {
            return crate::error::ApiError::unauthorized("/metrics needs the metrics token (Authorization: Bearer …)")
                .into_response();
        }
    }
    let m = &s.metrics;
    let counters = &s.engine.counters;
    use std::sync::atomic::Ordering::Relaxed;
    catch_up(&m.sends, counters.sent.load(Relaxed));
    catch_up(&m.receipts, counters.receipts.load(Relaxed));
    catch_up(&m.receipts_unmatched, counters.receipts_unmatched.load(Relaxed));
    catch_up(&m.lookups, counters.lookups.load(Relaxed));
    catch_up(&m.lookups_failed, counters.lookups_failed.load(Relaxed));
    if let Ok(rows) = s.stores.engine.queue_depth().await {
        m.outbox.clear();
        for (state, n) in rows {
            m.outbox.get_or_create(&StateLabels { state }).set(n as i64);
        }
    }
    m.providers.clear();
    for (channel, st) in s.engine.provider_status() {
        m.providers
            .get_or_create(&ProviderLabels {
                channel: channel.as_str().to_string(),
                provider: st.provider,
                state: st.state.as_str().to_string(),
            })
            .set(1);
    }
    if let Some(seq) = s.engine.sequencer() {
        m.ledger_sequencer.set(i64::from(seq.is_leader()));
    }
    if let Some(l) = &s.ledger {
        if let Ok(Some(c)) = l.latest_checkpoint().await {
            m.ledger_size.set(c.size.0 as i64);
        }
    }
    let mut out = String::new();
    let registry = m.registry.lock().unwrap_or_else(|p| p.into_inner());
    match prometheus_client::encoding::text::encode(&mut out, &registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reachline_engine::SendObserver;

    #[test]
    fn hand_overs_are_counted_by_result_and_timed_by_channel() {
        let m = Metrics::default();
        let sms = reachline_domain::Channel::Sms;
        m.handed_over(sms, "smsc", Duration::from_millis(3), None);
        m.handed_over(sms, "smsc", Duration::from_millis(5), None);
        m.handed_over(
            sms,
            "smsc",
            Duration::from_millis(40),
            Some(reachline_domain::DeliveryClass::Dead),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry.lock().unwrap()).unwrap();
        assert!(
            out.contains(r#"reachline_gateway_handovers_total{channel="sms",provider="smsc",result="accepted"} 2"#),
            "{out}"
        );
        assert!(out.contains(r#"reachline_gateway_handovers_total{channel="sms",provider="smsc",result="dead"} 1"#));
        assert!(out.contains(r#"reachline_gateway_handover_seconds_count{channel="sms"} 3"#));
    }
}
