//! HTTP providers: SMS through an aggregator API (template code and parameters, receipts
//! pushed to a callback), app push in FCM HTTP v1 form, a WeChat official-account template
//! message, and a voice/IVR provider (create a call; an outcome webhook with hang-up cause,
//! keypresses and transcript). Base URLs are configuration, so the sandbox (`http_sandbox`)
//! or a real provider answers alike. Inbound webhooks are HMAC-authenticated (`webhook`).

use std::sync::Mutex;
use std::time::Duration;

use reachline_domain::{ContactAddress, DeliveryClass};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::classify::http::{
    aggregator_send_class, cmpp_stat_class, fcm_class, ivr_class, q850_class, sip_class, wechat_class,
};
use crate::webhook::{verify, WebhookError, DEFAULT_WINDOW_SECS};
use crate::{Accepted, Channel, MessageRef, Outbound, Receipt, ReceiptStream, SendError};

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpApi {
    SmsAggregator,
    Fcm,
    Wechat,
    Voice,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub name: String,
    pub api: HttpApi,
    /// `http://127.0.0.1:8080` for the sandbox; the provider's address in production.
    pub base_url: String,
    /// Bearer token (FCM), access token (WeChat) or API key (aggregator, voice).
    pub token: String,
    /// Template code (aggregator), template id (WeChat), or FCM project id.
    pub template: String,
    /// The secret inbound webhooks are signed with.
    pub webhook_secret: String,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("name", &self.name)
            .field("api", &self.api)
            .field("base_url", &self.base_url)
            .field("token", &"[redacted]")
            .field("template", &self.template)
            .field("webhook_secret", &"[redacted]")
            .finish()
    }
}

pub struct HttpChannel {
    config: HttpConfig,
    client: reqwest::Client,
    receipts_tx: mpsc::UnboundedSender<Receipt>,
    receipts_rx: Mutex<Option<mpsc::UnboundedReceiver<Receipt>>>,
}

/// Why an inbound webhook was refused (the HTTP layer answers 401 or 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error(transparent)]
    Auth(#[from] WebhookError),
    #[error("the body is not what this provider sends")]
    Body,
}

impl HttpChannel {
    pub fn new(config: HttpConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .expect("a client without TLS builds");
        let (receipts_tx, rx) = mpsc::unbounded_channel();
        HttpChannel {
            config,
            client,
            receipts_tx,
            receipts_rx: Mutex::new(Some(rx)),
        }
    }

    fn request(&self, to: &ContactAddress, msg: &Outbound) -> Result<(String, Value), SendError> {
        let c = &self.config;
        let wrong = || {
            SendError::rejected(
                &c.name,
                DeliveryClass::OurFault,
                "address",
                format!("{:?} cannot send to this kind of address", c.api),
            )
        };
        Ok(match (c.api, to) {
            (HttpApi::SmsAggregator, ContactAddress::Phone(p)) => (
                format!("{}/sms/send", c.base_url),
                json!({"phone": p.e164(), "template_code": c.template, "params": {"text": msg.text}, "out_id": msg.reference.0}),
            ),
            (HttpApi::Voice, ContactAddress::Phone(p)) => (
                format!("{}/calls", c.base_url),
                json!({"to": p.e164(), "tts": msg.text, "ref": msg.reference.0}),
            ),
            (HttpApi::Fcm, ContactAddress::PushToken(t)) => (
                format!("{}/v1/projects/{}/messages:send", c.base_url, c.template),
                json!({"message": {"token": t, "notification": {"body": msg.text}, "data": {"ref": msg.reference.0}}}),
            ),
            (HttpApi::Wechat, ContactAddress::Im { account, .. }) => (
                format!("{}/cgi-bin/message/template/send?access_token={}", c.base_url, c.token),
                json!({"touser": account, "template_id": c.template, "data": {"text": {"value": msg.text}}}),
            ),
            _ => return Err(wrong()),
        })
    }

    /// Reads the provider's answer: the provider's message id, or a classed failure. An answer
    /// that speaks of the provider's own state (5xx, 429, busy, quota) is the provider's
    /// failure: the failover group tries the next provider and counts it against this one's
    /// breaker, and the engine queues the send again, adding no evidence about the address.
    fn answer(&self, status: u16, body: &Value) -> Result<String, SendError> {
        let name = &self.config.name;
        let s = |v: &Value| v.as_str().unwrap_or("").to_string();
        match self.config.api {
            HttpApi::SmsAggregator => {
                let code = s(&body["code"]);
                match (status, code.as_str()) {
                    (200, "OK") => Ok(s(&body["message_id"])),
                    (500..=599, _) | (429, _) => {
                        Err(SendError::provider_failed(name, status.to_string(), "provider error"))
                    }
                    _ => Err(SendError::rejected(
                        name,
                        aggregator_send_class(&code),
                        code,
                        "send refused",
                    )),
                }
            }
            HttpApi::Voice => {
                match status {
                    200 | 201 => Ok(s(&body["call_id"])),
                    _ if status >= 500 && body["sip_status"].as_u64().unwrap_or(0) == 0 => Err(
                        SendError::provider_failed(name, format!("{status} sip 0"), "provider error"),
                    ),
                    _ => {
                        let sip = body["sip_status"].as_u64().unwrap_or(0) as u16;
                        let class = if sip > 0 {
                            sip_class(sip)
                        } else if status >= 500 {
                            DeliveryClass::Transient
                        } else {
                            DeliveryClass::OurFault
                        };
                        Err(SendError::rejected(
                            name,
                            class,
                            format!("{status} sip {sip}"),
                            "call refused",
                        ))
                    }
                }
            }
            HttpApi::Fcm => {
                if status == 200 {
                    return Ok(s(&body["name"]));
                }
                let e = &body["error"];
                let details: Vec<&Value> = e["details"].as_array().map(|d| d.iter().collect()).unwrap_or_default();
                let types: Vec<&str> = details.iter().filter_map(|d| d["@type"].as_str()).collect();
                // The FcmError detail's errorCode is the precise word (UNREGISTERED …).
                let word = details
                    .iter()
                    .find_map(|d| d["errorCode"].as_str())
                    .or(e["status"].as_str())
                    .unwrap_or("");
                if status == 429 || status >= 500 {
                    return Err(SendError::provider_failed(
                        name,
                        format!("{status} {word}"),
                        "push refused",
                    ));
                }
                let class = fcm_class(status, word, &types);
                Err(SendError::rejected(
                    name,
                    class,
                    format!("{status} {word}"),
                    "push refused",
                ))
            }
            HttpApi::Wechat => {
                let code = body["errcode"].as_i64().unwrap_or(-2);
                if status == 200 && code == 0 {
                    // A number in WeChat's answer; its text is what `TEMPLATESENDJOBFINISH`'s
                    // `MsgID` names, so the outcome matches. A string is taken as it is.
                    return Ok(match &body["msgid"] {
                        Value::String(id) => id.clone(),
                        id => id.to_string(),
                    });
                }
                // System busy, or the account's daily quota spent: WeChat's trouble, not the
                // borrower's.
                if status >= 500 || matches!(code, -1 | 45009) {
                    return Err(SendError::provider_failed(
                        name,
                        code.to_string(),
                        "template message refused",
                    ));
                }
                Err(SendError::rejected(
                    name,
                    wechat_class(code),
                    code.to_string(),
                    "template message refused",
                ))
            }
        }
    }

    /// Handles an inbound webhook (a delivery receipt or call outcome): authenticates it,
    /// classes it and reports it on the receipt stream. `now` is Unix seconds.
    pub fn handle_webhook(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), InboundError> {
        verify(
            self.config.webhook_secret.as_bytes(),
            timestamp,
            signature,
            body,
            now,
            DEFAULT_WINDOW_SECS,
        )?;
        let receipt = parse_webhook(self.config.api, &self.config.name, body)?;
        let _ = self.receipts_tx.send(receipt);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Channel for HttpChannel {
    fn kind(&self) -> reachline_domain::Channel {
        match self.config.api {
            HttpApi::SmsAggregator => reachline_domain::Channel::Sms,
            HttpApi::Voice => reachline_domain::Channel::Voice,
            HttpApi::Fcm => reachline_domain::Channel::Push,
            HttpApi::Wechat => reachline_domain::Channel::Im,
        }
    }

    fn provider(&self) -> &str {
        &self.config.name
    }

    async fn send(&self, msg: &Outbound) -> Result<Accepted, SendError> {
        let (url, body) = self.request(&msg.to, msg)?;
        let mut req = self.client.post(url).json(&body);
        if self.config.api != HttpApi::Wechat {
            req = req.bearer_auth(&self.config.token);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() {
                // No connection, so no request: safe to try again or elsewhere.
                SendError::unavailable(&self.config.name, "connection failed")
            } else {
                // The request may have reached the provider, which may have acted on it.
                SendError::in_doubt(
                    &self.config.name,
                    if e.is_timeout() {
                        "no answer in time"
                    } else {
                        "connection lost before the answer"
                    },
                )
            }
        })?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let id = self.answer(status, &body)?;
        Ok(Accepted {
            provider: self.config.name.clone(),
            provider_ids: vec![id],
        })
    }

    fn take_receipts(&self) -> Option<ReceiptStream> {
        let mut rx = self.receipts_rx.lock().expect("receipts lock poisoned").take()?;
        Some(Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx))))
    }
}

/// Reads a provider's webhook body (a delivery receipt or a call outcome) into a classed
/// [`Receipt`], keeping the raw body. Pure: the caller has authenticated it.
pub fn parse_webhook(api: HttpApi, provider: &str, body: &[u8]) -> Result<Receipt, InboundError> {
    if api == HttpApi::Wechat {
        // WeChat reports a template message's outcome as an XML event (`wechat`).
        return crate::wechat::parse_job_receipt(provider, body);
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| InboundError::Body)?;
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let (reference, id, class, code) = match api {
        HttpApi::SmsAggregator => {
            let stat = s("status").ok_or(InboundError::Body)?;
            (
                s("out_id"),
                s("message_id").unwrap_or_default(),
                cmpp_stat_class(&stat),
                stat,
            )
        }
        HttpApi::Voice => {
            let keys = s("keys").unwrap_or_default();
            let transcript = s("transcript");
            let cause = v["hangup_cause"].as_u64().unwrap_or(0) as u16;
            let sip = v["sip_status"].as_u64().unwrap_or(0) as u16;
            let class = ivr_class(&keys, transcript.as_deref()).unwrap_or_else(|| match sip {
                200 | 0 => q850_class(cause),
                s => sip_class(s),
            });
            (
                s("ref"),
                s("call_id").unwrap_or_default(),
                class,
                format!("sip {sip} cause {cause} keys {keys}"),
            )
        }
        // FCM reports no per-message receipts; WeChat's are read above.
        HttpApi::Fcm | HttpApi::Wechat => return Err(InboundError::Body),
    };
    Ok(Receipt {
        provider: provider.to_string(),
        reference: reference.map(MessageRef),
        provider_id: id,
        part: None,
        class,
        code,
        is_final: true,
        raw: body.to_vec(),
        unanswered: crate::Unanswered::none(),
    })
}

/// Reads what a lender's app backend reports about a push notification: `{"ref": <our
/// reference>, "message_id": <the provider's id>, "event": "delivered" | "opened" |
/// "unregistered" | …}`. Pure: the caller has authenticated it.
pub fn parse_push_outcome(provider: &str, body: &[u8]) -> Result<Receipt, InboundError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| InboundError::Body)?;
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let event = s("event").ok_or(InboundError::Body)?;
    let reference = s("ref");
    let id = s("message_id").unwrap_or_default();
    if reference.is_none() && id.is_empty() {
        return Err(InboundError::Body);
    }
    Ok(Receipt {
        provider: provider.to_string(),
        reference: reference.map(MessageRef),
        provider_id: id,
        part: None,
        class: crate::classify::http::push_event_class(&event),
        code: format!("push:{}", event.chars().take(32).collect::<String>()),
        is_final: true,
        raw: body.to_vec(),
        unanswered: crate::Unanswered::none(),
    })
}

/// The webhook endpoint: `POST /` with `X-Timestamp` and `X-Signature` headers. Refusals are
/// 401 (authentication) or 400 (body), with the reason in plain words.
pub fn webhook_router(channel: std::sync::Arc<HttpChannel>) -> axum::Router {
    use axum::http::{HeaderMap, StatusCode};
    axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let channel = channel.clone();
            async move {
                let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                match channel.handle_webhook(h("x-timestamp").as_deref(), h("x-signature").as_deref(), &body, now) {
                    Ok(()) => (StatusCode::OK, "ok".to_string()),
                    Err(e @ InboundError::Auth(_)) => (StatusCode::UNAUTHORIZED, e.to_string()),
                    Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
                }
            }
        }),
    )
}
