//! A sandbox for the HTTP providers: one axum server answering the aggregator, FCM, WeChat and
//! voice APIs as `http` calls them, with the outcome scripted by the address's last character,
//! and delivery receipts / call outcomes pushed, HMAC-signed, to a callback URL.
//!
//! | last char | SMS aggregator | voice | FCM token | WeChat openid |
//! |---|---|---|---|---|
//! | 0 | OK, receipt `DELIVRD` | answered, key `1` (Engaged) | 200 | errcode 0 |
//! | 1 | OK, receipt `MK:0001` (Dead) | transcript "打错了" (WrongParty) | 404 `UNREGISTERED` | 43004 |
//! | 2 | OK, receipt `MK:0005` (Suspended) | SIP 404 (Dead) | 400 with `FcmError` | 40003 |
//! | 3 | OK, receipt `MK:0010` (Transient) | SIP 486 (Transient) | 400 with `BadRequest` | 40001 |
//! | 4 | `isv.MOBILE_NUMBER_ILLEGAL` | cause 16, no keys (Delivered) | 429 | -1 |
//! | 5 | `isv.BUSINESS_LIMIT_CONTROL` | refused, SIP 484 (Dead) | 503 | 43101 |
//! | 6 | `isv.SMS_TEMPLATE_ILLEGAL` | as 0 | as 0 | as 0 |
//! | 7 | HTTP 503 | as 0 | as 0 | as 0 |
//! | 8 | OK, receipt `MBBLACK` (Unknown) | as 0 | as 0 | as 0 |

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::webhook::sign;

struct State {
    callback: Option<String>,
    secret: String,
    next: AtomicU64,
    client: reqwest::Client,
    /// An HTTP status every FCM send answers with (0: none, the script decides): a drill's fault.
    fcm_failure: std::sync::atomic::AtomicU16,
}

pub struct HttpSandbox {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpSandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn last(s: &str) -> char {
    s.chars().last().unwrap_or('0')
}

impl State {
    fn id(&self) -> String {
        format!("{:08}", self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn push(self: &Arc<Self>, body: Value) {
        let Some(url) = self.callback.clone() else { return };
        let s = self.clone();
        tokio::spawn(async move {
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let sig = sign(s.secret.as_bytes(), ts, &bytes);
            let _ = s
                .client
                .post(url)
                .header("x-timestamp", ts.to_string())
                .header("x-signature", sig)
                .body(bytes)
                .send()
                .await;
        });
    }
}

impl HttpSandbox {
    /// Listens on `addr`; receipts go to `callback` signed with `secret`.
    pub async fn start(addr: &str, callback: Option<String>, secret: &str) -> std::io::Result<Self> {
        let state = Arc::new(State {
            callback,
            secret: secret.to_string(),
            next: AtomicU64::new(0),
            client: reqwest::Client::new(),
            fcm_failure: Default::default(),
        });
        let (s1, s2, s3, s4) = (state.clone(), state.clone(), state.clone(), state.clone());
        let app = Router::new()
            .route(
                "/sms/send",
                post(move |Json(b): Json<Value>| {
                    let s = s1.clone();
                    async move {
                        let phone = b["phone"].as_str().unwrap_or("").to_string();
                        let out_id = b["out_id"].clone();
                        let refuse = |code: &str| (StatusCode::OK, Json(json!({"code": code, "message": "refused"})));
                        match last(&phone) {
                            '4' => return refuse("isv.MOBILE_NUMBER_ILLEGAL"),
                            '5' => return refuse("isv.BUSINESS_LIMIT_CONTROL"),
                            '6' => return refuse("isv.SMS_TEMPLATE_ILLEGAL"),
                            '7' => return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"code": "isp.SYSTEM_ERROR"}))),
                            _ => {}
                        }
                        let id = s.id();
                        let stat = match last(&phone) {
                            '1' => "MK:0001",
                            '2' => "MK:0005",
                            '3' => "MK:0010",
                            '8' => "MBBLACK",
                            _ => "DELIVRD",
                        };
                        s.push(json!({"message_id": id, "out_id": out_id, "status": stat}));
                        (StatusCode::OK, Json(json!({"code": "OK", "message_id": id})))
                    }
                }),
            )
            .route(
                "/calls",
                post(move |Json(b): Json<Value>| {
                    let s = s2.clone();
                    async move {
                        let to = b["to"].as_str().unwrap_or("").to_string();
                        if last(&to) == '5' {
                            return (StatusCode::BAD_REQUEST, Json(json!({"error": "invalid number", "sip_status": 484})));
                        }
                        let id = s.id();
                        let mut outcome = json!({"call_id": id, "ref": b["ref"], "sip_status": 200, "hangup_cause": 16, "keys": ""});
                        match last(&to) {
                            '1' => outcome["transcript"] = json!("喂？你打错了，我不是他"),
                            '2' => outcome = json!({"call_id": id, "ref": b["ref"], "sip_status": 404, "hangup_cause": 1}),
                            '3' => outcome = json!({"call_id": id, "ref": b["ref"], "sip_status": 486, "hangup_cause": 17}),
                            '4' => {}
                            _ => outcome["keys"] = json!("1"),
                        }
                        s.push(outcome);
                        (StatusCode::OK, Json(json!({"call_id": id})))
                    }
                }),
            )
            .route(
                "/v1/projects/{project}/messages:send",
                post(move |Json(b): Json<Value>| {
                    let s = s3.clone();
                    async move {
                        let token = b["message"]["token"].as_str().unwrap_or("").to_string();
                        let fcm_error = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
                        let err = |code: u16, status: &str, details: Value| {
                            (StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST), Json(json!({"error": {"code": code, "status": status, "details": details}})))
                        };
                        let failure = s.fcm_failure.load(Ordering::Relaxed);
                        if failure != 0 {
                            return err(failure, "UNAVAILABLE", json!([]));
                        }
                        match last(&token) {
                            '1' => err(404, "NOT_FOUND", json!([{"@type": fcm_error, "errorCode": "UNREGISTERED"}])),
                            '2' => err(400, "INVALID_ARGUMENT", json!([{"@type": fcm_error, "errorCode": "INVALID_ARGUMENT"}])),
                            '3' => err(400, "INVALID_ARGUMENT", json!([{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": []}])),
                            '4' => err(429, "RESOURCE_EXHAUSTED", json!([{"@type": fcm_error, "errorCode": "QUOTA_EXCEEDED"}])),
                            '5' => err(503, "UNAVAILABLE", json!([])),
                            _ => (StatusCode::OK, Json(json!({"name": format!("projects/p/messages/{}", s.id())}))),
                        }
                    }
                }),
            )
            .route(
                "/cgi-bin/message/template/send",
                post(move |Json(b): Json<Value>| {
                    let s = s4.clone();
                    async move {
                        let code = match last(b["touser"].as_str().unwrap_or("")) {
                            '1' => 43004,
                            '2' => 40003,
                            '3' => 40001,
                            '4' => -1,
                            '5' => 43101,
                            _ => 0,
                        };
                        let msgid: u64 = s.id().parse().unwrap_or(0);
                        Json(json!({"errcode": code, "errmsg": if code == 0 { "ok" } else { "refused" }, "msgid": msgid}))
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(HttpSandbox { addr, state, task })
    }

    /// Makes every FCM send answer `status` (a 5xx outage), or, with `None`, the script again.
    pub fn set_fcm_failure(&self, status: Option<u16>) {
        self.state.fcm_failure.store(status.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
