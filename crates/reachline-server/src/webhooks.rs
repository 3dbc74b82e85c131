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
//!
//! A provider of kind `wechat_event` is a WeChat official account's server URL instead: WeChat
//! signs the query (`signature`, `timestamp`, `nonce`: SHA-1 of the sorted token, timestamp and
//! nonce, the token being the provider's `secret`), not the body, and posts XML. The same window
//! and the same once-only rule on the signature apply; the answer is `success` as text. `GET`
//! with `echostr` is WeChat's check of the URL, answered with `echostr`. With the provider's
//! `safe_mode` set (the account's EncodingAESKey and app id), the body must be WeChat's
//! encrypted envelope (`encrypt_type=aes`): `msg_signature` is checked over the ciphertext too,
//! and the event inside is read as a plaintext one would be; a plaintext body is refused, since
//! the query's signature does not cover it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::Duration;
use reachline_channels::http::{parse_webhook, HttpApi};
use reachline_channels::webhook::{verify, WebhookError};
use reachline_channels::wechat::{self, SignatureError, WechatEvent};
use reachline_channels::Receipt;
use reachline_domain::{Channel, ContactAddress};
use reachline_engine::Engine;
use reachline_store::server::Sighting;
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
    /// A WeChat official account's events (XML, signed WeChat's way with `secret` as the
    /// token): template-message outcomes by `MsgID`, unsubscribes, text messages. `name` must be
    /// the `[[http]]` provider's that sent the template messages, so the ids match.
    WechatEvent,
}

/// The prefix of the IM contact points a WeChat official account's `openid`s are kept under
/// (`wechat:<openid>`).
pub const WECHAT_IM_PROVIDER: &str = "wechat";

/// `[[server.webhooks]]`: one provider's webhook.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The `{provider}` of the path, and the provider's name on its receipts.
    pub name: String,
    pub kind: WebhookKind,
    /// The shared secret the provider signs with (WeChat's token for `wechat_event`).
    pub secret: String,
    /// How far the timestamp may be from now, in seconds.
    #[serde(default = "default_window")]
    pub window_seconds: i64,
    /// A WeChat account in safe mode (`wechat_event` only): its bodies are encrypted.
    #[serde(default)]
    pub safe_mode: Option<WechatSafeMode>,
}

/// A WeChat official account's message encryption, as its console shows it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatSafeMode {
    /// The account's AppID: a decrypted message for another app is refused.
    pub app_id: String,
    /// The 43-character EncodingAESKey.
    pub encoding_aes_key: String,
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
            .field("safe_mode", &self.safe_mode.as_ref().map(|m| &m.app_id))
            .finish()
    }
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/v1/webhooks/{provider}", post(webhook).get(url_check))
}

/// The query WeChat signs its requests with.
#[derive(Deserialize)]
struct WechatQuery {
    signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
    /// `aes` in safe (or compatible) mode.
    encrypt_type: Option<String>,
    msg_signature: Option<String>,
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
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

fn replayed(s: &crate::Server, cfg: &WebhookConfig) -> ApiError {
    s.metrics.webhook_refused(&cfg.name, "replayed");
    ApiError::new(StatusCode::CONFLICT, "replayed", "this signature was already accepted")
}

/// The signature's sighting: its digest, kept for twice the window.
fn sighting(cfg: &WebhookConfig, signature: &str, now: chrono::DateTime<chrono::Utc>) -> Sighting {
    Sighting {
        provider: cfg.name.clone(),
        digest: Sha256::digest(signature.as_bytes()).into(),
        expires: now + Duration::seconds(cfg.window_seconds.saturating_mul(2)),
    }
}

/// `GET`: WeChat's check of the server URL, answered with its `echostr` once the query's
/// signature is good. Nothing is recorded, so the signature is not spent: the answer only
/// repeats what the caller sent.
async fn url_check(State(s): State<AppState>, Path(provider): Path<String>, uri: Uri) -> Result<Response, ApiError> {
    let Some(cfg) = s.config.webhooks.iter().find(|w| w.name == provider) else {
        return Err(ApiError::not_found("webhook provider"));
    };
    if cfg.kind != WebhookKind::WechatEvent {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "only a WeChat provider's webhook takes GET (its URL check)",
        ));
    }
    let q = axum::extract::Query::<WechatQuery>::try_from_uri(&uri)?.0;
    wechat_verified(&s, cfg, &q, s.now())?;
    match q.echostr {
        Some(e) if !e.is_empty() && e.len() <= 1024 => Ok(text(e)),
        _ => Err(ApiError::invalid(
            "echostr",
            "the URL check needs `echostr`, at most 1024 bytes",
        )),
    }
}

/// What a WeChat push's body holds.
enum Opened {
    /// Plaintext mode: the body is the event.
    Plain,
    /// Safe mode: the event, decrypted.
    Event(Vec<u8>),
    /// Safe mode, `msg_signature` right, but it does not open (another app id, bad padding).
    Unreadable,
}

/// In safe mode, opens the encrypted body. A body that is not sealed (or sealed for a webhook
/// with no `safe_mode`), or whose `msg_signature` does not match, is refused 401 (counted).
fn open_sealed(s: &crate::Server, cfg: &WebhookConfig, q: &WechatQuery, body: &[u8]) -> Result<Opened, ApiError> {
    let sealed = q
        .encrypt_type
        .as_deref()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("aes"));
    let refuse = |reason: &str, message: String| {
        s.metrics.webhook_refused(&cfg.name, reason);
        ApiError::unauthorized(message)
    };
    let Some(mode) = &cfg.safe_mode else {
        if sealed {
            return Err(refuse(
                "malformed",
                "an encrypted WeChat push, but this webhook has no `safe_mode` configured".into(),
            ));
        }
        return Ok(Opened::Plain);
    };
    if !sealed {
        return Err(refuse(
            "malformed",
            "this WeChat account is in safe mode: the body must be encrypted (`encrypt_type=aes`)".into(),
        ));
    }
    let sm = wechat::SafeMode::new(&cfg.secret, &mode.encoding_aes_key, &mode.app_id).map_err(|e| {
        tracing::error!(provider = %cfg.name, error = %e, "the WeChat safe-mode key is not usable");
        ApiError::internal()
    })?;
    let (ts, nonce) = (q.timestamp.as_deref().unwrap_or(""), q.nonce.as_deref().unwrap_or(""));
    match sm.open(ts, nonce, q.msg_signature.as_deref(), body) {
        Ok(msg) => Ok(Opened::Event(msg)),
        Err(e @ (wechat::SafeModeError::MissingSignature | wechat::SafeModeError::Mismatch)) => {
            Err(refuse("signature", format!("WeChat msg_signature refused: {e}")))
        }
        Err(e @ wechat::SafeModeError::MissingCiphertext) => {
            Err(refuse("malformed", format!("WeChat push refused: {e}")))
        }
        Err(e) => {
            tracing::warn!(provider = %cfg.name, error = %e, "a signed WeChat push did not open");
            Ok(Opened::Unreadable)
        }
    }
}

/// Checks WeChat's query signature; a refusal is counted and answered 401, naming the
/// parameter. Returns the signature, lower-cased.
fn wechat_verified(
    s: &crate::Server,
    cfg: &WebhookConfig,
    q: &WechatQuery,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, ApiError> {
    if let Err(e) = wechat::verify(
        &cfg.secret,
        q.timestamp.as_deref(),
        q.nonce.as_deref(),
        q.signature.as_deref(),
        now.timestamp(),
        cfg.window_seconds,
    ) {
        let reason = match e {
            SignatureError::Stale(..) => "stale",
            SignatureError::Mismatch => "signature",
            _ => "malformed",
        };
        s.metrics.webhook_refused(&cfg.name, reason);
        return Err(ApiError::unauthorized(format!("WeChat signature refused: {e}")));
    }
    Ok(q.signature.as_deref().unwrap_or_default().trim().to_ascii_lowercase())
}

async fn webhook(
    State(s): State<AppState>,
    Path(provider): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let Some(cfg) = s.config.webhooks.iter().find(|w| w.name == provider) else {
        return Err(ApiError::not_found("webhook provider"));
    };
    let now = s.now();
    if cfg.kind == WebhookKind::WechatEvent {
        return wechat_event(&s, cfg, &uri, &body, now).await;
    }
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
    let sighting = sighting(cfg, signature.trim_start_matches("sha256="), now);
    let api = match cfg.kind {
        WebhookKind::SmsReceipt => Some(HttpApi::SmsAggregator),
        WebhookKind::VoiceOutcome => Some(HttpApi::Voice),
        WebhookKind::PushOutcome => None,
        // Taken by `wechat_event` above; its template-job outcomes would read the same here.
        WebhookKind::WechatEvent => Some(HttpApi::Wechat),
        WebhookKind::SmsReply => {
            let answer = once(&s, cfg, sighting, || async {
                let b: ReplyBody = serde_json::from_slice(&body)
                    .map_err(|_| ApiError::invalid("body", "a reply needs `from` (a phone number) and `text`"))?;
                let number = s
                    .phones
                    .parse(&b.from)
                    .map_err(|_| ApiError::invalid("from", "not a phone number"))?;
                let holders = s.stores.store.contacts_by_phone(&number).await?;
                reply(&s, cfg, holders, Channel::Sms, &b.text, now).await
            })
            .await?;
            return Ok(Json(answer).into_response());
        }
    };
    let parsed = match api {
        Some(api) => parse_webhook(api, &cfg.name, &body),
        None => reachline_channels::http::parse_push_outcome(&cfg.name, &body),
    };
    let class = receipt(&s, cfg, sighting, parsed, &body).await?;
    Ok(Json(WebhookAnswer {
        accepted: 1,
        class: class.to_string(),
    })
    .into_response())
}

/// Records a parsed receipt once its signature is new, or the malformed body kept and flagged
/// (and refused, 422). Returns the receipt's class.
async fn receipt(
    s: &crate::Server,
    cfg: &WebhookConfig,
    sighting: Sighting,
    parsed: Result<Receipt, reachline_channels::http::InboundError>,
    body: &[u8],
) -> Result<&'static str, ApiError> {
    let (receipt, malformed) = match parsed {
        Ok(r) => (r, false),
        // Kept and flagged like any receipt that matched nothing (and then refused).
        Err(_) => (
            Receipt::malformed(&cfg.name, body.to_vec(), reachline_channels::Unanswered::none()),
            true,
        ),
    };
    let class = receipt.class.as_str();
    if s.receipts.record(sighting, Some(receipt)).await? == Recorded::Replayed {
        return Err(replayed(s, cfg));
    }
    if malformed {
        s.metrics.webhook_refused(&cfg.name, "malformed");
        return Err(ApiError::invalid(
            "body",
            "the body is not what this provider sends; it was kept and flagged",
        ));
    }
    s.metrics.webhook_receipt(&cfg.name, class);
    Ok(class)
}

/// Takes the signature once, then does `f`; when `f` fails on our side the signature is
/// forgotten, so the provider's retry passes.
async fn once<T, F: std::future::Future<Output = Result<T, ApiError>>>(
    s: &crate::Server,
    cfg: &WebhookConfig,
    sighting: Sighting,
    f: impl FnOnce() -> F,
) -> Result<T, ApiError> {
    if s.receipts.record(sighting.clone(), None).await? == Recorded::Replayed {
        return Err(replayed(s, cfg));
    }
    let out = f().await;
    if let Err(e) = &out {
        if e.status.is_server_error() {
            s.stores.server.forget_sighting(&cfg.name, sighting.digest).await.ok();
        }
    }
    out
}

/// A WeChat official account's push: a template message's outcome becomes its receipt (by
/// `MsgID`); an unsubscribe, `dead` evidence about every current contact point with that
/// `openid`; a text message, a reply as an SMS reply is; anything else is taken and nothing is
/// recorded. Answered `success`, as WeChat expects.
async fn wechat_event(
    s: &crate::Server,
    cfg: &WebhookConfig,
    uri: &Uri,
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Response, ApiError> {
    let q = axum::extract::Query::<WechatQuery>::try_from_uri(uri)?.0;
    let signature = wechat_verified(s, cfg, &q, now)?;
    let opened = open_sealed(s, cfg, &q, body)?;
    let sighting = sighting(cfg, &signature, now);
    let body: &[u8] = match &opened {
        Opened::Plain => body,
        Opened::Event(inner) => inner,
        // Signed, but it does not open: kept as it came, flagged, and refused.
        Opened::Unreadable => {
            receipt(
                s,
                cfg,
                sighting,
                Err(reachline_channels::http::InboundError::Body),
                body,
            )
            .await?;
            return Ok(text("success".into()));
        }
    };
    let holders = |openid: String| async move {
        let address = ContactAddress::Im {
            provider: WECHAT_IM_PROVIDER.into(),
            account: openid,
        };
        Ok::<_, ApiError>(s.stores.store.contacts_by_address(&address).await?)
    };
    match wechat::parse_event(body) {
        Ok(WechatEvent::TemplateJobFinished { msg_id, status }) => {
            let r = wechat::job_receipt(&cfg.name, &msg_id, &status, body);
            receipt(s, cfg, sighting, Ok(r), body).await?;
        }
        Ok(WechatEvent::Unsubscribed { openid }) => {
            once(s, cfg, sighting, || async {
                let class = wechat::UNSUBSCRIBE_CLASS;
                let kind = serde_json::to_string(&reachline_policy::EvidenceKind::Delivery {
                    channel: Channel::Im,
                    class,
                })
                .map_err(|_| ApiError::internal())?;
                let source = serde_json::to_string(&reachline_policy::evidence::Source::Provider(cfg.name.clone()))
                    .map_err(|_| ApiError::internal())?;
                for c in holders(openid).await?.iter().filter(|c| c.is_current()) {
                    s.stores
                        .engine
                        .add_evidence(c.borrower_id, Some(c.id), now, &source, &kind)
                        .await?;
                }
                s.metrics.webhook_receipt(&cfg.name, class.as_str());
                Ok(())
            })
            .await?;
        }
        Ok(WechatEvent::Text { openid, content }) => {
            once(s, cfg, sighting, || async {
                reply(s, cfg, holders(openid).await?, Channel::Im, &content, now).await
            })
            .await?;
        }
        Ok(WechatEvent::Other { .. }) => {
            once(s, cfg, sighting, || async { Ok(()) }).await?;
        }
        Err(e) => {
            receipt(s, cfg, sighting, Err(e), body).await?;
        }
    }
    Ok(text("success".into()))
}

/// A reply (an inbound SMS, an IM message): classified, and evidence about every current
/// contact point among `holders` (a recycled number can be current for nobody; then it is only
/// counted).
async fn reply(
    s: &crate::Server,
    cfg: &WebhookConfig,
    holders: Vec<reachline_store::ContactRecord>,
    channel: Channel,
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<WebhookAnswer, ApiError> {
    let classified = s.replies.classify(text);
    let class = classified.class;
    let kind = serde_json::to_string(&reachline_policy::EvidenceKind::Reply { channel, class })
        .map_err(|_| ApiError::internal())?;
    let source =
        serde_json::to_string(&reachline_policy::evidence::Source::Holder).map_err(|_| ApiError::internal())?;
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

/// Hands webhooks to one task that records whatever has arrived in one transaction — replay
/// guards and receipts together ([`Engine::record_sighted`]) — then appends the batch's ledger
/// leaves and answers its webhooks. Concurrent webhooks share one commit and one ledger batch.
///
/// Batches follow one another: letting the next batch be recorded while this one's leaves are
/// appended was measured slower (64 connections: 13,500 webhooks/s against 16,000), as the
/// webhooks then split into smaller batches and each pays a commit.
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
    pub(crate) fn start(engine: Arc<Engine>, clock: Clock) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(4 * BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let now = clock();
                let (items, answers): (Vec<(Sighting, Option<Receipt>)>, Vec<_>) =
                    batch.drain(..).map(|(s, r, answer)| ((s, r), answer)).unzip();
                // One transaction: when it fails nothing was taken, and the provider's retry
                // passes.
                let Some((fresh, intake)) = retried("recording webhooks", || engine.record_sighted(&items, now)).await
                else {
                    for answer in answers {
                        let _ = answer.send(None);
                    }
                    continue;
                };
                // The receipts are committed; without their leaves the webhooks are not
                // answered as taken (503), and a provider's retry is refused as a replay.
                let sealed = retried("appending webhook receipts to the ledger", || engine.seal(&intake))
                    .await
                    .is_some();
                for (answer, fresh) in answers.into_iter().zip(fresh) {
                    let outcome = match (fresh, sealed) {
                        (false, _) => Some(Recorded::Replayed),
                        (true, true) => Some(Recorded::Taken),
                        (true, false) => None,
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
