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
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::error::{ApiError, Json, Path};
use crate::metrics::Metrics;
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
    let digest: [u8; 32] = Sha256::digest(signature.trim_start_matches("sha256=").as_bytes()).into();
    let expires = now + Duration::seconds(cfg.window_seconds.saturating_mul(2));
    if !s.stores.server.first_sighting(&cfg.name, digest, now, expires).await? {
        return Err(refused(
            "replayed",
            ApiError::new(StatusCode::CONFLICT, "replayed", "this signature was already accepted"),
        ));
    }
    let answer = match cfg.kind {
        WebhookKind::SmsReceipt | WebhookKind::VoiceOutcome => {
            let api = if cfg.kind == WebhookKind::SmsReceipt {
                HttpApi::SmsAggregator
            } else {
                HttpApi::Voice
            };
            match parse_webhook(api, &cfg.name, &body) {
                Ok(r) => {
                    let class = r.class.as_str().to_string();
                    let recorded = s.receipts.record(r).await;
                    if let Err(e) = recorded {
                        s.stores.server.forget_sighting(&cfg.name, digest).await.ok();
                        return Err(e);
                    }
                    s.metrics.webhook_receipt(&cfg.name, &class);
                    WebhookAnswer { accepted: 1, class }
                }
                Err(_) => {
                    // Malformed: kept and flagged like any receipt that matched nothing.
                    let raw = Receipt {
                        provider: cfg.name.clone(),
                        reference: None,
                        provider_id: String::new(),
                        part: None,
                        class: reachline_domain::DeliveryClass::Unknown,
                        code: "malformed".into(),
                        is_final: false,
                        raw: body.to_vec(),
                    };
                    s.receipts.record(raw).await?;
                    s.metrics.webhook_refused(&cfg.name, "malformed");
                    return Err(ApiError::invalid(
                        "body",
                        "the body is not the JSON this provider sends; it was kept and flagged",
                    ));
                }
            }
        }
        WebhookKind::SmsReply => reply(&s, cfg, &body, now).await?,
    };
    Ok(Json(answer))
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
    let class = s.replies.classify(&b.text).class;
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
    }
    s.metrics.webhook_receipt(&cfg.name, class.as_str());
    Ok(WebhookAnswer {
        accepted,
        class: class.as_str().to_string(),
    })
}

/// Hands receipts to one task that records whatever has arrived together.
pub(crate) struct ReceiptBatcher {
    tx: mpsc::Sender<(Receipt, oneshot::Sender<bool>)>,
}

/// Most receipts recorded in one intake.
const BATCH: usize = 512;

impl ReceiptBatcher {
    pub(crate) fn start(engine: Arc<Engine>, clock: Clock, _metrics: Metrics) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Receipt, oneshot::Sender<bool>)>(4 * BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let (receipts, answers): (Vec<Receipt>, Vec<oneshot::Sender<bool>>) = batch.drain(..).unzip();
                let mut ok = false;
                for tries in 1..=3u64 {
                    match engine.intake_many(receipts.clone(), clock()).await {
                        Ok(()) => {
                            ok = true;
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, tries, "recording webhook receipts failed");
                            tokio::time::sleep(std::time::Duration::from_millis(100 * tries)).await;
                        }
                    }
                }
                for a in answers {
                    let _ = a.send(ok);
                }
            }
        });
        ReceiptBatcher { tx }
    }

    /// Returns once the receipt is committed; an error (503) when it could not be.
    pub(crate) async fn record(&self, r: Receipt) -> Result<(), ApiError> {
        let unavailable = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the receipt could not be recorded; retry",
            )
        };
        let (tx, rx) = oneshot::channel();
        self.tx.send((r, tx)).await.map_err(|_| unavailable())?;
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(unavailable()),
        }
    }
}
