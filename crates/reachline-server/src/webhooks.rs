//! Provider webhooks: `POST /v1/webhooks/{provider}` with `X-Timestamp` and `X-Signature`
//! (`HMAC-SHA256(secret, timestamp + "." + body)`, hex), each provider with its own secret.
//! Replay protection is two-fold: the timestamp must be inside the provider's window, and a
//! signature is accepted once (its digest is kept, in the database so every node sees it, for
//! twice the window; a signature whose receipt could not be recorded is forgotten, so the
//! provider's retry is taken).
//!
//! A receipt is answered `200` only once it is durably recorded: requests hand their receipts
//! to one batcher that records whatever has arrived in one engine intake (one transaction per
//! class), so concurrent webhooks share a commit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use chrono::Duration;
use reachline_channels::http::{parse_webhook, HttpApi};
use reachline_channels::webhook::{verify, WebhookError};
use reachline_channels::Receipt;
use reachline_engine::Engine;
use reachline_store::server::{ServerStore, Sighting};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, Json, Path};
use crate::{AppState, Clock};

/// What a provider's webhooks carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// SMS delivery receipts in the aggregator's JSON (`out_id`, `message_id`, `status`).
    SmsReceipt,
    /// Voice and IVR call outcomes (`ref`, `call_id`, `sip_status`, `hangup_cause`, `keys`,
    /// `transcript`).
    VoiceOutcome,
    /// Inbound SMS replies (`from`, `text`): classified, and evidence about every current
    /// contact point with that number.
    SmsReply,
    /// Push outcomes from the lender's app backend (`ref`, `message_id`, `event`: delivered,
    /// opened, unregistered…): FCM and APNs send no delivery receipts of their own.
    PushOutcome,
}

/// `[[server.webhooks]]`: one provider's webhook.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The `{provider}` of the path, and the provider's name on its receipts.
    pub name: String,
    pub kind: WebhookKind,
    /// The shared secret the provider signs with.
    pub secret: String,
    /// How far the timestamp may be from now, in seconds.
    #[serde(default = "default_window")]
    pub window_seconds: i64,
}

fn default_window() -> i64 {
    reachline_channels::webhook::DEFAULT_WINDOW_SECS
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("secret", &"[redacted]")
            .field("window_seconds", &self.window_seconds)
            .finish()
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/webhooks/{provider}", post(webhook))
}

/// What a webhook's answer says.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookAnswer {
    pub accepted: u32,
    /// The class a receipt or reply was read as.
    pub class: String,
}

#[derive(Deserialize)]
struct ReplyBody {
    from: String,
    text: String,
}

async fn webhook(
    State(s): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<WebhookAnswer>, ApiError> {
    let body = body?;
    let Some(cfg) = s.config.webhooks.iter().find(|w| w.name == provider) else {
        return Err(ApiError::not_found("webhook provider"));
    };
    let now = s.now();
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let refused = |reason: &str, e: ApiError| {
        s.metrics.webhook_refused(&cfg.name, reason);
        e
    };
    if let Err(e) = verify(
        cfg.secret.as_bytes(),
        h("x-timestamp"),
        h("x-signature"),
        &body,
        now.timestamp(),
        cfg.window_seconds,
    ) {
        let reason = match e {
            WebhookError::Stale(..) => "stale",
            WebhookError::Mismatch => "signature",
            _ => "malformed",
        };
        return Err(refused(reason, ApiError::unauthorized(e.to_string())));
    }
    let signature = h("x-signature").unwrap_or_default().trim().to_ascii_lowercase();
    let sighting = Sighting {
        provider: cfg.name.clone(),
        digest: Sha256::digest(signature.trim_start_matches("sha256=").as_bytes()).into(),
        expires: now + Duration::seconds(cfg.window_seconds.saturating_mul(2)),
    };
    let replayed = || {
        refused(
            "replayed",
            ApiError::new(StatusCode::CONFLICT, "replayed", "this signature was already accepted"),
        )
    };
    let api = match cfg.kind {
        WebhookKind::SmsReceipt => Some(HttpApi::SmsAggregator),
        WebhookKind::VoiceOutcome => Some(HttpApi::Voice),
        WebhookKind::PushOutcome => None,
        WebhookKind::SmsReply => {
            if s.receipts.record(sighting.clone(), None).await? == Recorded::Replayed {
                return Err(replayed());
            }
            return match reply(&s, cfg, &body, now).await {
                Ok(a) => Ok(Json(a)),
                Err(e) => {
                    if e.status.is_server_error() {
                        // Not taken: the provider's retry must pass.
                        s.stores.server.forget_sighting(&cfg.name, sighting.digest).await.ok();
                    }
                    Err(e)
                }
            };
        }
    };
    let parsed = match api {
        Some(api) => parse_webhook(api, &cfg.name, &body),
        None => reachline_channels::http::parse_push_outcome(&cfg.name, &body),
    };
    let (receipt, malformed) = match parsed {
        Ok(r) => (r, false),
        // Malformed: kept and flagged like any receipt that matched nothing, and refused.
        Err(_) => (
            Receipt {
                provider: cfg.name.clone(),
                reference: None,
                provider_id: String::new(),
                part: None,
                class: reachline_domain::DeliveryClass::Unknown,
                code: "malformed".into(),
                is_final: false,
                raw: body.to_vec(),
            },
            true,
        ),
    };
    let class = receipt.class.as_str().to_string();
    if s.receipts.record(sighting, Some(receipt)).await? == Recorded::Replayed {
        return Err(replayed());
    }
    if malformed {
        s.metrics.webhook_refused(&cfg.name, "malformed");
        return Err(ApiError::invalid(
            "body",
            "the body is not the JSON this provider sends; it was kept and flagged",
        ));
    }
    s.metrics.webhook_receipt(&cfg.name, &class);
    Ok(Json(WebhookAnswer { accepted: 1, class }))
}

/// An inbound SMS: classified, and evidence about every current contact point with that number
/// (a recycled number can be current for nobody; then it is only counted).
async fn reply(
    s: &crate::Server,
    cfg: &WebhookConfig,
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<WebhookAnswer, ApiError> {
    let b: ReplyBody = serde_json::from_slice(body)
        .map_err(|_| ApiError::invalid("body", "a reply needs `from` (a phone number) and `text`"))?;
    let number = s
        .phones
        .parse(&b.from)
        .map_err(|_| ApiError::invalid("from", "not a phone number"))?;
    let classified = s.replies.classify(&b.text);
    let class = classified.class;
    let kind = serde_json::to_string(&reachline_policy::EvidenceKind::Reply {
        channel: reachline_domain::Channel::Sms,
        class,
    })
    .map_err(|_| ApiError::internal())?;
    let source =
        serde_json::to_string(&reachline_policy::evidence::Source::Holder).map_err(|_| ApiError::internal())?;
    let holders = s.stores.store.contacts_by_phone(&number).await?;
    let mut accepted = 0;
    for c in holders.iter().filter(|c| c.is_current()) {
        s.stores
            .engine
            .add_evidence(c.borrower_id, Some(c.id), now, &source, &kind)
            .await?;
        accepted += 1;
        // A reply naming a new number starts the verified flow on it: a link goes to the new
        // number, and the change still needs an existing factor. The reply alone changes nothing.
        if let Some(new) = &classified.new_number {
            match crate::change::start(
                s,
                c.borrower_id,
                &reachline_domain::ContactAddress::Phone(new.clone()),
                reachline_policy::change::ChangeTarget::Replace,
                crate::change::Source::Reply,
                None,
                "reply",
                now,
            )
            .await
            {
                Ok(_) => {}
                Err(crate::change::ChangeError::Api(e)) => return Err(e),
                Err(e) => tracing::info!(error = %e, "a reply's new number did not start a change"),
            }
        }
    }
    s.metrics.webhook_receipt(&cfg.name, class.as_str());
    Ok(WebhookAnswer {
        accepted,
        class: class.as_str().to_string(),
    })
}

/// What became of a webhook handed to the batcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Its signature was new and its receipt (if any) is committed.
    Taken,
    /// Its signature was seen before: nothing recorded.
    Replayed,
}

type Job = (Sighting, Option<Receipt>, oneshot::Sender<Option<Recorded>>);

/// Hands webhooks to one task that checks whatever has arrived for replays in one transaction
/// and records the fresh receipts in one engine intake: concurrent webhooks share two commits.
pub(crate) struct ReceiptBatcher {
    tx: mpsc::Sender<Job>,
}

/// Most webhooks in one batch.
const BATCH: usize = 512;

/// Retries `f` a few times (the database may be busy), logging each failure.
async fn retried<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> Option<T> {
    for tries in 1..=3u64 {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => {
                tracing::error!(error = %e, tries, "{what} failed");
                tokio::time::sleep(std::time::Duration::from_millis(100 * tries)).await;
            }
        }
    }
    None
}

impl ReceiptBatcher {
    pub(crate) fn start(engine: Arc<Engine>, server: Arc<dyn ServerStore>, clock: Clock) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(4 * BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let now = clock();
                let sightings: Vec<Sighting> = batch.iter().map(|j| j.0.clone()).collect();
                let Some(fresh) = retried("checking webhook replays", || server.first_sightings(&sightings, now)).await
                else {
                    for (_, _, answer) in batch.drain(..) {
                        let _ = answer.send(None);
                    }
                    continue;
                };
                let receipts: Vec<Receipt> = batch
                    .iter()
                    .zip(&fresh)
                    .filter(|(_, f)| **f)
                    .filter_map(|(j, _)| j.1.clone())
                    .collect();
                let recorded = receipts.is_empty()
                    || retried("recording webhook receipts", || {
                        engine.intake_many(receipts.clone(), now)
                    })
                    .await
                    .is_some();
                for ((sighting, receipt, answer), fresh) in batch.drain(..).zip(fresh) {
                    let outcome = match (fresh, receipt.is_some()) {
                        (false, _) => Some(Recorded::Replayed),
                        (true, true) if !recorded => {
                            // Not taken: forget the signature so the provider's retry passes.
                            server.forget_sighting(&sighting.provider, sighting.digest).await.ok();
                            None
                        }
                        (true, _) => Some(Recorded::Taken),
                    };
                    let _ = answer.send(outcome);
                }
            }
        });
        ReceiptBatcher { tx }
    }

    /// Returns once the webhook's signature is checked and its receipt (if any) committed; an
    /// error (503) when that could not be done.
    pub(crate) async fn record(&self, sighting: Sighting, r: Option<Receipt>) -> Result<Recorded, ApiError> {
        let unavailable = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the webhook could not be recorded; retry",
            )
        };
        let (tx, rx) = oneshot::channel();
        self.tx.send((sighting, r, tx)).await.map_err(|_| unavailable())?;
        rx.await.ok().flatten().ok_or_else(unavailable)
    }
}
