//! The server over a real socket and a fresh SQLite database: every route with every role, the
//! unmasked read and its log, the book's all-or-nothing upsert, webhooks' authentication and
//! replay refusal, payments, consents, tokens, and errors' shape; the borrower's pages and the
//! number-change flow (`selfservice`); WeChat's events (`wechat`).

mod selfservice;
mod wechat;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;
use reachline_channels::webhook::sign;
use reachline_engine::{Engine, EngineConfig, LedgerSink};
use reachline_ledger::note::SignerKey;
use reachline_policy::Templates;
use reachline_server::api::PERMISSIONS;
use reachline_server::auth::{allows, new_token, Role};
use reachline_server::{ServerConfig, WebhookConfig, WebhookKind};
use reachline_store::ledger::{LedgerStore, Sequencer, SequencerConfig};
use reachline_store::{Keyring, Stores};
use serde_json::{json, Value};

const ORIGIN: &str = "reachline.test/ledger";
const SECRET: &str = "provider-secret";
const METRICS_TOKEN: &str = "scraper-token";
/// The token WeChat and the `wx` provider share.
const WECHAT_TOKEN: &str = "reachline-token";
/// The `wxsafe` account's safe mode.
const WECHAT_APP_ID: &str = "wx2c2769f8efd9abc2";
const WECHAT_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// Where a harness keeps its data: SQLite in a temporary directory, or a fresh PostgreSQL
/// database on the server `REACHLINE_TEST_DATABASE_URL` names.
enum Db {
    Sqlite,
    Postgres,
}

struct Harness {
    _dir: tempfile::TempDir,
    /// (admin URL, database) to drop at the end, on PostgreSQL.
    pg: Option<(String, String)>,
    base: String,
    http: reqwest::Client,
    tokens: Vec<(Role, String)>,
    stores: Stores,
    engine: Arc<Engine>,
    server: Arc<reachline_server::Server>,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_on(Db::Sqlite).await.unwrap()
    }

    /// None on PostgreSQL when no server is named.
    async fn start_on(db: Db) -> Option<Harness> {
        Harness::start_with(db, Vec::new()).await
    }

    /// With these channels (the engine's and the number-change flow's).
    async fn start_with(db: Db, channels: Vec<Arc<dyn reachline_channels::Channel>>) -> Option<Harness> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match db {
            Db::Sqlite => (format!("sqlite://{}", dir.path().join("s.db").display()), None),
            Db::Postgres => {
                let admin = std::env::var("REACHLINE_TEST_DATABASE_URL").ok()?;
                let name = format!("reachline_server_test_{}_{}", std::process::id(), rand::random::<u32>());
                reachline_store::postgres::create_database(&admin, &name).await.unwrap();
                (
                    reachline_store::postgres::url_with_database(&admin, &name),
                    Some((admin, name)),
                )
            }
        };
        let keys = Keyring::random("t");
        let stores = reachline_store::open_all(&url, keys.clone()).await.unwrap();
        let ledger: Arc<dyn LedgerStore> = reachline_store::open_ledger(&url, keys).await.unwrap().into();
        let sequencer = Sequencer::start(
            ledger.clone(),
            SignerKey::from_seed(ORIGIN, &[9; 32]).unwrap(),
            SequencerConfig {
                origin: ORIGIN.into(),
                batch_max_entries: 64,
                batch_max_ms: 5,
            },
        )
        .await
        .unwrap();
        let engine = Arc::new(
            Engine::new(
                stores.engine.clone(),
                channels,
                Templates::load(Templates::builtin_sources()).unwrap(),
                EngineConfig {
                    link_base: format!("{base}/n/"),
                    self_service_base: format!("{base}/"),
                    // These tests step the engine to a moment and expect the notice then;
                    // the send-time model (tested in the engine's planner) would move it.
                    timing: reachline_policy::TimingConfig {
                        enabled: false,
                        ..Default::default()
                    },
                    ..EngineConfig::default()
                },
            )
            .with_ledger(LedgerSink {
                sequencer: Arc::new(sequencer),
                store: ledger.clone(),
            }),
        );
        let config = ServerConfig {
            max_body_bytes: 64 * 1024,
            webhooks: vec![
                WebhookConfig {
                    name: "agg".into(),
                    kind: WebhookKind::SmsReceipt,
                    secret: SECRET.into(),
                    window_seconds: 300,
                    safe_mode: None,
                },
                WebhookConfig {
                    name: "replies".into(),
                    kind: WebhookKind::SmsReply,
                    secret: SECRET.into(),
                    window_seconds: 300,
                    safe_mode: None,
                },
                WebhookConfig {
                    name: "app".into(),
                    kind: WebhookKind::PushOutcome,
                    secret: SECRET.into(),
                    window_seconds: 300,
                    safe_mode: None,
                },
                WebhookConfig {
                    name: "wx".into(),
                    kind: WebhookKind::WechatEvent,
                    secret: WECHAT_TOKEN.into(),
                    window_seconds: 300,
                    safe_mode: None,
                },
                WebhookConfig {
                    name: "wxsafe".into(),
                    kind: WebhookKind::WechatEvent,
                    secret: WECHAT_TOKEN.into(),
                    window_seconds: 300,
                    safe_mode: Some(reachline_server::webhooks::WechatSafeMode {
                        app_id: WECHAT_APP_ID.into(),
                        encoding_aes_key: WECHAT_AES_KEY.into(),
                    }),
                },
            ],
            metrics_token: Some(METRICS_TOKEN.into()),
            ..ServerConfig::default()
        };
        let server = reachline_server::Server::new(
            stores.clone(),
            engine.clone(),
            Some(ledger),
            config,
            Arc::new(Utc::now),
            reachline_book::parse::BookDefaults {
                locale: reachline_domain::Locale::parse_tag("zh-CN").unwrap(),
                time_zone: chrono_tz::Asia::Shanghai,
                jurisdiction: "cn".parse().unwrap(),
            },
            reachline_domain::PhoneParser::default(),
        );
        server.set_ledger_key(SignerKey::from_seed(ORIGIN, &[9; 32]).unwrap().verifier());
        let mut tokens = Vec::new();
        for role in Role::ALL {
            let t = new_token(
                &format!("test {}", role.as_str()),
                role,
                Utc::now(),
                &mut rand::rngs::OsRng,
            );
            stores.server.create_token(&t.record).await.unwrap();
            tokens.push((role, t.token));
        }
        tokio::spawn(reachline_server::serve(
            listener,
            reachline_server::router(server.clone()),
        ));
        let h = Harness {
            _dir: dir,
            pg,
            base,
            http: reqwest::Client::new(),
            tokens,
            stores,
            engine,
            server,
        };
        let r = h.call(Role::Admin, "POST", "/v1/book", Some(book())).await;
        assert_eq!(r.0, 200, "{}", r.1);
        Some(h)
    }

    async fn finish(self) {
        if let Some((admin, db)) = &self.pg {
            // The server's pool still holds connections: drop the database with FORCE.
            let _ = reachline_store::postgres::drop_database(admin, db).await;
        }
    }

    fn token(&self, role: Role) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1
    }

    async fn raw(&self, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    /// `/metrics`, scraped with the metrics token.
    async fn metrics(&self) -> (u16, Value) {
        let r = self.raw(Some(METRICS_TOKEN), "GET", "/metrics", None).await;
        (r.status().as_u16(), Value::String(r.text().await.unwrap()))
    }

    async fn call(&self, role: Role, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self.raw(Some(self.token(role)), method, path, body).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn webhook(&self, provider: &str, body: &str, ts: i64, sig: Option<String>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/webhooks/{provider}", self.base))
            .header("x-timestamp", ts.to_string())
            .body(body.to_string());
        if let Some(s) = sig {
            req = req.header("x-signature", s);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn book() -> Value {
    json!({
        "borrowers": [
            {"external_id": "B1", "name": "张伟", "national_id": "11010519491231002X"},
            {"external_id": "B2", "name": "Susan Nguyen"}
        ],
        "contacts": [
            {"borrower_id": "B1", "slot": "mobile", "kind": "mobile", "role": "primary", "value": "13812345678", "bound_since": "2025-01-01"},
            {"borrower_id": "B2", "slot": "mobile", "kind": "mobile", "role": "primary", "value": "13900001111", "bound_since": "2025-01-01"}
        ],
        "loans": [
            {"external_id": "L1", "borrower_id": "B1", "product": "cash", "principal": "3000.00", "currency": "CNY", "disbursed_on": "2026-01-01"}
        ],
        "installments": [
            {"loan_id": "L1", "seq": 1, "due_date": "2026-12-01", "amount_due": "1000.00"},
            {"loan_id": "L1", "seq": 2, "due_date": "2027-01-01", "amount_due": "1000.00"}
        ],
        "consents": [
            {"borrower_id": "B1", "purpose": "service", "state": "granted", "at": "2026-01-01T00:00:00Z", "source": "contract", "text_version": "v1"}
        ]
    })
}

/// A request that a role allowed on the route should get past validation with (or be refused
/// for its content, never for its role).
fn probe(method: &str, template: &str) -> (String, Option<Value>) {
    let path = template
        .replace("{external_id}", "B1")
        .replace("{contact_id}", "1")
        .replace("{notice_id}", "1")
        .replace("{token_id}", "000000000000")
        .replace("{change_id}", "1")
        .replace("{request_id}", "1");
    let body = (method == "POST").then(|| match template {
        "/v1/book" => json!({"borrowers": [{"external_id": "B9", "name": "王芳"}]}),
        "/v1/payments" => json!({"loan_id": "L1", "seq": 2, "amount_minor": 100}),
        "/v1/tokens" => json!({"name": "probe", "role": "auditor"}),
        "/v1/contacts/{contact_id}/verify" => json!({"method": "call"}),
        "/v1/contacts/{contact_id}/retire" => json!({"reason": "probe"}),
        "/v1/contact-changes/{change_id}/approve" | "/v1/contact-changes/{change_id}/reject" => {
            json!({"reason": "probe"})
        }
        "/v1/plan-requests/{request_id}/decide" => json!({"state": "declined", "reason": "probe"}),
        // B1 owes: an allowed erasure is refused (409), and the fixture survives the probe.
        "/v1/borrowers/{external_id}/erasure" => json!({"reason": "probe request"}),
        "/v1/borrowers/{external_id}/contacts" => {
            json!({"slot": "backup1", "kind": "mobile", "role": "backup", "value": "13700002222"})
        }
        "/v1/borrowers/{external_id}/consents" => {
            json!({"purpose": "collection", "state": "granted", "source": "api", "text_version": "v1"})
        }
        "/v1/borrowers/{external_id}/evidence" => {
            json!({"contact_id": 1, "evidence": {"kind": "operator", "action": "verify"}})
        }
        _ => json!({}),
    });
    (path, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_the_matrix_says() {
    every_route_with_every_role(Harness::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_the_matrix_says_on_postgres() {
    if let Some(h) = Harness::start_on(Db::Postgres).await {
        every_route_with_every_role(h).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_on_postgres() {
    if let Some(h) = Harness::start_on(Db::Postgres).await {
        webhooks_signed_fresh_once(h).await;
    }
}

async fn every_route_with_every_role(h: Harness) {
    // The document and the matrix name the same routes: none escapes the probe.
    let (status, doc) = h.call(Role::Auditor, "GET", "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let matrix: BTreeSet<(String, String)> = PERMISSIONS
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, matrix,
        "the OpenAPI document and the permission matrix differ"
    );

    let mut probes = 0;
    for (method, template, permission) in PERMISSIONS {
        let (path, body) = probe(method, template);
        // Without a token: 401, whatever the route.
        let r = h.raw(None, method, &path, body.clone()).await;
        assert_eq!(r.status().as_u16(), 401, "{method} {template} without a token");
        let r = h.raw(Some("rl_0000_nothing"), method, &path, body.clone()).await;
        assert_eq!(r.status().as_u16(), 401, "{method} {template} with a made-up token");
        for role in Role::ALL {
            let (status, answer) = h.call(role, method, &path, body.clone()).await;
            if allows(role, *permission) {
                assert!(
                    status != 401 && status != 403 && status < 500,
                    "{method} {template} as {role:?}: {status} {answer}"
                );
            } else {
                assert_eq!(status, 403, "{method} {template} as {role:?}: {answer}");
                assert_eq!(answer["code"], "forbidden");
            }
            probes += 1;
        }
    }
    assert_eq!(probes, PERMISSIONS.len() * 4);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_masked_unless_unmasked_with_a_reason_and_every_such_read_is_logged() {
    let h = Harness::start().await;
    let (s, b) = h.call(Role::Integration, "GET", "/v1/borrowers/B1", None).await;
    assert_eq!(s, 200);
    assert_eq!(b["masked"], true);
    assert!(!b["name"].as_str().unwrap().contains('伟'), "{b}");
    assert!(!b.to_string().contains("19491231"), "{b}");
    let (_, cs) = h.call(Role::Auditor, "GET", "/v1/borrowers/B1/contacts", None).await;
    assert!(cs[0]["address"].as_str().unwrap().contains("****"), "{cs}");
    assert!(!cs.to_string().contains("12345678"), "{cs}");

    // Roles that may not unmask are refused even with a reason.
    for role in [Role::Auditor, Role::Integration] {
        let (s, e) = h
            .call(
                role,
                "GET",
                "/v1/borrowers/B1?unmask=true&reason=dispute%20review",
                None,
            )
            .await;
        assert_eq!((s, e["code"].as_str()), (403, Some("forbidden")), "{role:?}");
    }
    // A reason is required, and may not carry a number.
    let (s, e) = h
        .call(Role::Operator, "GET", "/v1/borrowers/B1?unmask=true", None)
        .await;
    assert_eq!((s, e["field"].as_str()), (422, Some("reason")));
    let (s, _) = h
        .call(
            Role::Operator,
            "GET",
            "/v1/borrowers/B1?unmask=true&reason=call%2013812345678",
            None,
        )
        .await;
    assert_eq!(s, 422);
    let (s, b) = h
        .call(
            Role::Operator,
            "GET",
            "/v1/borrowers/B1?unmask=true&reason=dispute%20case%20D-77",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!((b["name"].as_str(), b["masked"].as_bool()), (Some("张伟"), Some(false)));
    let (_, cs) = h
        .call(
            Role::Operator,
            "GET",
            "/v1/borrowers/B1/contacts?unmask=true&reason=dispute%20case%20D-77",
            None,
        )
        .await;
    assert_eq!(cs[0]["address"], "+8613812345678");

    let (s, log) = h.call(Role::Auditor, "GET", "/v1/access-log?borrower=B1", None).await;
    assert_eq!(s, 200);
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    let operator = h.stores.server.tokens().await.unwrap();
    let operator = operator.iter().find(|t| t.role == "operator").unwrap();
    for e in log {
        assert_eq!(e["actor"], format!("token:{}", operator.id));
        assert_eq!(e["reason"], "dispute case D-77");
        assert_eq!(e["borrower_id"], 1);
        assert_eq!(e["request_id"].as_str().unwrap().len(), 16);
    }
    assert_eq!(log[0]["action"], "contacts.read");
    assert_eq!(log[1]["action"], "borrower.read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_book_upsert_is_all_or_nothing_and_its_error_names_the_field() {
    let h = Harness::start().await;
    let mut bad = json!({
        "borrowers": [{"external_id": "B3", "name": "李娜"}, {"external_id": "B4", "name": "刘洋"}],
        "contacts": [
            {"borrower_id": "B3", "slot": "mobile", "kind": "mobile", "role": "primary", "value": "13600003333", "bound_since": "2025-01-01"},
            {"borrower_id": "B4", "slot": "mobile", "kind": "mobile", "role": "primary", "value": "12345", "bound_since": "2025-01-01"}
        ]
    });
    let (s, e) = h.call(Role::Integration, "POST", "/v1/book", Some(bad.clone())).await;
    assert_eq!(s, 422, "{e}");
    assert_eq!(e["code"], "invalid");
    assert_eq!(e["field"], "contacts[1].value");
    assert!(!e.to_string().contains("12345\""), "the value is not echoed: {e}");
    assert_eq!(h.call(Role::Admin, "GET", "/v1/borrowers/B3", None).await.0, 404);

    // A loan for a borrower nobody knows.
    let (s, e) = h
        .call(
            Role::Integration,
            "POST",
            "/v1/book",
            Some(json!({"loans": [{"external_id": "L9", "borrower_id": "B404", "product": "cash", "principal": "10.00", "currency": "CNY", "disbursed_on": "2026-01-01"}]})),
        )
        .await;
    assert_eq!((s, e["field"].as_str()), (422, Some("loans[0].borrower_id")), "{e}");
    // An unknown field in a row.
    let (s, e) = h
        .call(
            Role::Integration,
            "POST",
            "/v1/book",
            Some(json!({"borrowers": [{"external_id": "B5", "name": "x", "phone": "1"}]})),
        )
        .await;
    assert_eq!((s, e["field"].as_str()), (422, Some("borrowers[0]")), "{e}");

    bad["contacts"][1]["value"] = json!("13600004444");
    let (s, r) = h.call(Role::Integration, "POST", "/v1/book", Some(bad)).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["borrowers_created"], 2);
    assert_eq!(r["contacts_added"], 2);
    assert_eq!(h.call(Role::Admin, "GET", "/v1/borrowers/B4", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_fresh_and_taken_once_and_every_receipt_is_kept() {
    webhooks_signed_fresh_once(Harness::start().await).await;
}

async fn webhooks_signed_fresh_once(h: Harness) {
    let now = Utc::now().timestamp();
    let body = r#"{"out_id":"999","message_id":"m-1","status":"UNDELIV"}"#;
    let sig = sign(SECRET.as_bytes(), now, body.as_bytes());
    assert_eq!(h.webhook("agg", body, now, None).await.0, 401);
    assert_eq!(
        h.webhook("agg", body, now, Some(sign(b"wrong", now, body.as_bytes())))
            .await
            .0,
        401
    );
    let old = now - 3600;
    assert_eq!(
        h.webhook("agg", body, old, Some(sign(SECRET.as_bytes(), old, body.as_bytes())))
            .await
            .0,
        401
    );
    assert_eq!(h.webhook("nobody", body, now, Some(sig.clone())).await.0, 404);
    let (s, a) = h.webhook("agg", body, now, Some(sig.clone())).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (a["accepted"].as_u64(), a["class"].as_str()),
        (Some(1), Some("unknown"))
    );
    // The same signature again is a replay, however fresh.
    let (s, a) = h.webhook("agg", body, now, Some(sig)).await;
    assert_eq!((s, a["code"].as_str()), (409, Some("replayed")));
    // A body the provider would never send is kept and flagged, and refused.
    let junk = r#"{"what":"no status here"}"#;
    let (s, _) = h
        .webhook("agg", junk, now, Some(sign(SECRET.as_bytes(), now, junk.as_bytes())))
        .await;
    assert_eq!(s, 422);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(h.engine.counters.receipts.load(Relaxed), 2, "both receipts recorded");
    assert_eq!(
        h.engine.counters.receipts_unmatched.load(Relaxed),
        2,
        "neither matched a send"
    );

    let (_, metrics) = h.metrics().await;
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains(r#"reachline_webhook_refused_total{provider="agg",reason="replayed"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"reachline_webhook_refused_total{provider="agg",reason="signature"} 1"#));
    assert!(metrics.contains(r#"reachline_engine_receipts_total 2"#));
    // No number-intelligence source here: none asked, none failed.
    assert!(metrics.contains("reachline_engine_lookups_total 0"), "{metrics}");
    assert!(metrics.contains("reachline_engine_lookups_failed_total 0"), "{metrics}");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_number_reply_becomes_evidence_about_the_current_holder() {
    let h = Harness::start().await;
    let now = Utc::now().timestamp();
    let body = json!({"from": "+8613812345678", "text": "你发错了，我不认识这个人"}).to_string();
    let (s, a) = h
        .webhook(
            "replies",
            &body,
            now,
            Some(sign(SECRET.as_bytes(), now, body.as_bytes())),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(
        (a["accepted"].as_u64(), a["class"].as_str()),
        (Some(1), Some("wrong_number"))
    );
    let b1 = h
        .stores
        .store
        .borrower_by_external_id(&reachline_domain::ExternalId::parse("B1").unwrap())
        .await
        .unwrap()
        .unwrap();
    let today = Utc::now().date_naive();
    let views = h.stores.engine.views(&[b1.id], today, today).await.unwrap();
    let evidence: Vec<String> = views[0].evidence.iter().map(|e| e.kind.clone()).collect();
    assert!(evidence.iter().any(|k| k.contains("wrong_number")), "{evidence:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_consents_and_tokens_through_the_api() {
    let h = Harness::start().await;
    let (s, e) = h
        .call(
            Role::Integration,
            "POST",
            "/v1/payments",
            Some(json!({"loan_id": "L1", "seq": 1, "amount_minor": 100000})),
        )
        .await;
    assert_eq!(s, 204, "{e}");
    let (_, loans) = h.call(Role::Auditor, "GET", "/v1/borrowers/B1/loans", None).await;
    assert_eq!(loans[0]["installments"][0]["amount_paid_minor"], 100000);
    assert!(loans[0]["installments"][0]["paid_at"].is_string());
    let (s, e) = h
        .call(
            Role::Integration,
            "POST",
            "/v1/payments",
            Some(json!({"loan_id": "L1", "seq": 7, "amount_minor": 1})),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
    let (s, e) = h
        .call(
            Role::Integration,
            "POST",
            "/v1/payments",
            Some(json!({"loan_id": "L1", "seq": 1, "amount_minor": -5})),
        )
        .await;
    assert_eq!((s, e["field"].as_str()), (422, Some("amount_minor")));

    let (s, _) = h
        .call(
            Role::Operator,
            "POST",
            "/v1/borrowers/B1/consents",
            Some(json!({"purpose": "service", "channel": "sms", "state": "withdrawn", "source": "operator", "text_version": "v1"})),
        )
        .await;
    assert_eq!(s, 204);
    let (_, cs) = h.call(Role::Auditor, "GET", "/v1/borrowers/B1/consents", None).await;
    let last = cs.as_array().unwrap().last().unwrap();
    assert_eq!(
        (last["state"].as_str(), last["channel"].as_str()),
        (Some("withdrawn"), Some("sms"))
    );

    // A token made through the API works at once and stops at once when revoked.
    let (s, t) = h
        .call(
            Role::Admin,
            "POST",
            "/v1/tokens",
            Some(json!({"name": "core banking", "role": "integration"})),
        )
        .await;
    assert_eq!(s, 201);
    let token = t["token"].as_str().unwrap().to_string();
    let r = h.raw(Some(&token), "GET", "/v1/borrowers/B1", None).await;
    assert_eq!(r.status().as_u16(), 200);
    let id = t["id"].as_str().unwrap();
    assert_eq!(
        h.call(Role::Admin, "POST", &format!("/v1/tokens/{id}/revoke"), None)
            .await
            .0,
        204
    );
    let r = h.raw(Some(&token), "GET", "/v1/borrowers/B1", None).await;
    assert_eq!(r.status().as_u16(), 401);
    let (_, list) = h.call(Role::Admin, "GET", "/v1/tokens", None).await;
    assert!(!list.to_string().contains(&token[10..]), "secrets are never listed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_a_code_and_the_request_id() {
    let h = Harness::start().await;
    let r = h
        .http
        .get(format!("{}/no/such/route", h.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (e["code"].as_str(), e["request_id"].as_str()),
        (Some("not_found"), Some("abc-123"))
    );

    // A body over the limit.
    let big = json!({"borrowers": [{"external_id": "B7", "name": "x".repeat(100 * 1024)}]});
    let (s, e) = h.call(Role::Admin, "POST", "/v1/book", Some(big)).await;
    assert_eq!((s, e["code"].as_str()), (413, Some("too_large")), "{e}");
    // Not JSON.
    let r = h
        .http
        .post(format!("{}/v1/payments", h.base))
        .bearer_auth(h.token(Role::Admin))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "invalid");
    assert_eq!(e["request_id"].as_str().unwrap().len(), 16);
    // A path id that is not a number.
    let (s, e) = h
        .call(
            Role::Admin,
            "POST",
            "/v1/contacts/abc/verify",
            Some(json!({"method": "call"})),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("invalid")));
}

#[test]
fn the_readme_shows_the_permission_matrix_the_server_enforces() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let table = reachline_server::auth::matrix_markdown();
    assert!(readme.contains(&table), "README.md should hold this table:\n{table}");
}

/// Every `Set-Cookie` of a response, whole.
fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn cookie_value(set: &[String], name: &str) -> Option<String> {
    set.iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap().to_string())
}

/// An operator whose password is `correct-horse-battery`.
async fn add_operator(h: &Harness, login: &str, role: &str) {
    h.stores
        .server
        .put_operator(&reachline_store::server::OperatorRecord {
            login: login.into(),
            role: role.into(),
            hash: reachline_server::auth::hash_secret("correct-horse-battery", &mut rand::rngs::OsRng),
            created_at: Utc::now(),
            disabled_at: None,
        })
        .await
        .unwrap();
}

fn form_csrf(html: &str) -> String {
    let i = html.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + 19;
    html[i..i + 32].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_log_in_with_a_password_and_forms_need_their_csrf_token() {
    let h = Harness::start().await;
    for (login, role) in [("ops", "operator"), ("audit", "auditor")] {
        add_operator(&h, login, role).await;
    }
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str, cookie: Option<String>| {
        let mut r = browser.get(format!("{}{path}", h.base));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    // Without a session: to the login page.
    let r = get("/", None).await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/login");

    let login = |user: &'static str, password: &'static str, csrf_cookie: Option<String>, csrf_form: String| {
        let mut r = browser.post(format!("{}/login", h.base)).form(&[
            ("login", user),
            ("password", password),
            ("csrf", csrf_form.as_str()),
        ]);
        if let Some(c) = csrf_cookie {
            r = r.header("cookie", format!("rl_login_csrf={c}"));
        }
        r.send()
    };
    let page = get("/login", None).await.unwrap();
    let csrf_cookie = cookie_value(&set_cookies(&page), "rl_login_csrf").unwrap();
    let csrf = form_csrf(&page.text().await.unwrap());
    assert_eq!(csrf, csrf_cookie);
    // A form posted from elsewhere (no matching cookie) is refused before the password is read.
    let r = login("ops", "correct-horse-battery", None, csrf.clone()).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(cookie_value(&set_cookies(&r), "rl_session").is_none());
    // A wrong password, or an unknown login: the same answer.
    for (user, pw) in [("ops", "wrong-password-here"), ("nobody", "correct-horse-battery")] {
        let r = login(user, pw, Some(csrf.clone()), csrf.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{user}");
        assert!(r.text().await.unwrap().contains("Wrong login or password."));
    }
    let r = login("ops", "correct-horse-battery", Some(csrf.clone()), csrf.clone())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let set = set_cookies(&r);
    let session_cookie = set.iter().find(|c| c.starts_with("rl_session=")).unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(session_cookie.contains(attr), "{session_cookie}");
    }
    let session = format!("rl_session={}", cookie_value(&set, "rl_session").unwrap());

    let r = get("/", Some(session.clone())).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await.unwrap();
    for section in [
        "Reach rate by channel",
        "Attempts by outcome",
        "Unreachable exposure",
        "Ledger",
    ] {
        assert!(html.contains(section), "{section}");
    }
    assert!(html.contains("ops (operator)"));
    let r = get("/verify?notice=999999", Some(session.clone())).await.unwrap();
    assert!(r.text().await.unwrap().contains("No ledger leaf names notice 999999"));

    // Log out needs the session's CSRF token.
    let logout = |csrf: String| {
        browser
            .post(format!("{}/logout", h.base))
            .header("cookie", session.clone())
            .form(&[("csrf", csrf)])
            .send()
    };
    assert_eq!(logout("0".repeat(32)).await.unwrap().status().as_u16(), 403);
    assert_eq!(logout(form_csrf(&html)).await.unwrap().status().as_u16(), 303);
    assert_eq!(
        get("/", Some(session)).await.unwrap().status().as_u16(),
        303,
        "the session ended"
    );
}

fn envelope(kind: &str, key: &str, data: Value) -> Value {
    json!({
        "id": 1, "source": "fineract-test", "type": kind, "category": "LOAN",
        "createdAt": "2026-11-29T10:00:00", "businessDate": "2026-11-29", "tenantId": "default",
        "idempotencyKey": key, "dataschema": "org.apache.fineract.avro.loan.v1.X", "data": data
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fineract_events_become_installments_payments_and_loans() {
    let h = Harness::start().await;
    let post = |body: Value| h.call(Role::Integration, "POST", "/v1/integrations/fineract", Some(body));
    // A repayment falls due for an installment Reachline does not know yet (Avro's JSON
    // encoding, union branches named).
    let due = envelope(
        "LoanRepaymentDueBusinessEvent",
        "k-due-3",
        json!({"loanId": {"long": 7}, "loanAccountNo": {"string": "000000007"}, "loanExternalId": {"string": "L1"},
               "currency": {"org.apache.fineract.avro.generic.v1.CurrencyDataV1": {"code": "CNY", "decimalPlaces": 2}},
               "installment": {"org.apache.fineract.avro.loan.v1.RepaymentDueDataV1":
                   {"installmentNumber": {"int": 3}, "installmentDueDate": {"string": "2027-02-01"}, "totalAmountDue": 1000.000000}}}),
    );
    let (s, a) = post(due.clone()).await;
    assert_eq!((s, a["outcome"].as_str()), (200, Some("installment_added")), "{a}");
    let (s, a) = post(due).await;
    assert_eq!((s, a["outcome"].as_str()), (200, Some("duplicate")));
    // Overdue for one it knows (plain JSON).
    let overdue = envelope(
        "LoanRepaymentOverdueBusinessEvent",
        "k-over-1",
        json!({"loanId": 7, "loanAccountNo": "000000007", "loanExternalId": "L1",
               "installment": {"installmentNumber": 1, "installmentDueDate": "2026-12-01", "totalAmountDue": "1000.00"}}),
    );
    let (s, a) = post(overdue).await;
    assert_eq!((s, a["outcome"].as_str()), (200, Some("installment_known")), "{a}");

    // A repayment of 1500: installment 1 in full, half of 2.
    let pay = envelope(
        "LoanTransactionMakeRepaymentPostBusinessEvent",
        "k-pay-1",
        json!({"loanId": 7, "externalLoanId": "L1", "date": "2026-11-28", "amount": 1500.000000,
               "currency": {"code": "CNY", "decimalPlaces": 2}}),
    );
    let (s, a) = post(pay).await;
    assert_eq!((s, a["outcome"].as_str()), (200, Some("payment_recorded")), "{a}");
    let (_, loans) = h.call(Role::Auditor, "GET", "/v1/borrowers/B1/loans", None).await;
    let paid: Vec<i64> = loans[0]["installments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["amount_paid_minor"].as_i64().unwrap())
        .collect();
    assert_eq!(paid, [100_000, 50_000, 0]);
    assert_eq!(loans[0]["installments"][2]["due_date"], "2027-02-01");

    // A loan Reachline does not know: refused, and the same event is taken once it does.
    let unknown = envelope(
        "LoanRepaymentDueBusinessEvent",
        "k-due-9",
        json!({"loanId": 9, "loanAccountNo": "000000009",
               "installment": {"installmentNumber": 1, "installmentDueDate": "2027-01-05", "totalAmountDue": "300"}}),
    );
    let (s, e) = post(unknown.clone()).await;
    assert_eq!((s, e["field"].as_str()), (422, Some("data.loan")), "{e}");
    // The disbursal creates it for a borrower Reachline knows by the client's external id.
    let disbursal = envelope(
        "LoanDisbursalBusinessEvent",
        "k-disb-9",
        json!({"id": 9, "accountNo": "000000009", "clientExternalId": "B2", "loanProductName": "cash-3m",
               "principal": 900.0, "currency": {"code": "CNY", "decimalPlaces": 2},
               "timeline": {"actualDisbursementDate": "2026-11-05"}}),
    );
    let (s, a) = post(disbursal).await;
    assert_eq!(
        (s, a["outcome"].as_str(), a["loan_id"].as_str()),
        (200, Some("loan_written"), Some("fineract-000000009")),
        "{a}"
    );
    let (s, a) = post(unknown).await;
    assert_eq!((s, a["outcome"].as_str()), (200, Some("installment_added")), "{a}");
    let (_, loans) = h.call(Role::Auditor, "GET", "/v1/borrowers/B2/loans", None).await;
    assert_eq!(loans[0]["principal_minor"], 90_000);
    assert_eq!(loans[0]["installments"][0]["amount_due_minor"], 30_000);

    // Types Reachline has no use for are acknowledged; an amount finer than the currency refused.
    let (s, a) = post(envelope("ClientCreateBusinessEvent", "k-c", json!({"id": 1}))).await;
    assert_eq!((s, a["outcome"].as_str()), (200, Some("ignored")));
    let bad = envelope(
        "LoanTransactionMakeRepaymentPostBusinessEvent",
        "k-pay-2",
        json!({"externalLoanId": "L1", "amount": "10.005"}),
    );
    let (s, e) = post(bad).await;
    assert_eq!((s, e["field"].as_str()), (422, Some("data.amount")), "{e}");
    // Only roles that write the book may post events.
    let (s, _) = h
        .call(Role::Auditor, "POST", "/v1/integrations/fineract", Some(json!({})))
        .await;
    assert_eq!(s, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_listed_with_their_receipts_a_page_at_a_time() {
    use reachline_store::engine::{NewSend, PlanWrite};
    let h = Harness::start().await;
    let b1 = h
        .stores
        .store
        .borrower_by_external_id(&reachline_domain::ExternalId::parse("B1").unwrap())
        .await
        .unwrap()
        .unwrap();
    let contact = h.stores.store.contacts(b1.id).await.unwrap()[0].id;
    let loan = h.stores.store.loans(b1.id).await.unwrap()[0].id;
    let inst = h.stores.store.installments(loan).await.unwrap()[0].id;
    let now = Utc::now();
    let sends = (0..3)
        .map(|step| NewSend {
            idem_key: format!("{}/{step}/pre_due/{}/sms/0", inst.0, contact.0),
            borrower: b1.id,
            installment: inst,
            step,
            kind: "pre_due".into(),
            rung: 0,
            contact,
            channel: reachline_domain::Channel::Sms,
            third_party: false,
            not_before: now,
        })
        .collect();
    h.stores
        .engine
        .write_plan(PlanWrite {
            at: Some(now),
            sends,
            ..PlanWrite::default()
        })
        .await
        .unwrap();
    let (_, metrics) = h.metrics().await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"reachline_outbox_rows{state="queued"} 3"#),
        "{metrics}"
    );
    let (s, page) = h
        .call(Role::Auditor, "GET", "/v1/notices?limit=2&channel=sms", None)
        .await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["attempts"].as_array().unwrap().len(), 2);
    let after = page["next_after"].as_i64().unwrap();
    let (_, rest) = h
        .call(
            Role::Auditor,
            "GET",
            &format!("/v1/notices?limit=2&after={after}"),
            None,
        )
        .await;
    assert_eq!(rest["attempts"].as_array().unwrap().len(), 1);
    assert!(rest["next_after"].is_null());
    let first = page["attempts"][0]["id"].as_i64().unwrap();
    // A click is a receipt (engagement) of its attempt, and shows on it.
    assert!(h.engine.click(first, Utc::now()).await.unwrap());
    let (_, one) = h
        .call(Role::Auditor, "GET", "/v1/notices?borrower=B1&limit=1", None)
        .await;
    let receipts = one["attempts"][0]["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(
        (receipts[0]["class"].as_str(), receipts[0]["code"].as_str()),
        (Some("engaged"), Some("click"))
    );
    let (_, none) = h.call(Role::Auditor, "GET", "/v1/notices?state=sent", None).await;
    assert!(none["attempts"].as_array().unwrap().is_empty());
    let (s, e) = h
        .call(Role::Auditor, "GET", "/v1/notices?state=SENT%20OR%201", None)
        .await;
    assert_eq!((s, e["field"].as_str()), (422, Some("state")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_borrowers_export_needs_the_clear_read_permission_and_a_reason_and_is_logged() {
    let h = Harness::start().await;
    let path = "/v1/borrowers/B1/export?reason=access%20request%20AR-17";
    for role in [Role::Auditor, Role::Integration] {
        let (s, e) = h.call(role, "GET", path, None).await;
        assert_eq!(s, 403, "{role:?}: {e}");
    }
    let (s, e) = h
        .call(
            Role::Admin,
            "GET",
            "/v1/borrowers/B1/export?reason=call%20138123456",
            None,
        )
        .await;
    assert_eq!((s, e["field"].as_str()), (422, Some("reason")), "{e}");
    let (s, doc) = h.call(Role::Operator, "GET", path, None).await;
    assert_eq!(s, 200, "{doc}");
    assert_eq!(doc["format"], "reachline-borrower-export/1");
    assert_eq!(doc["borrower"]["name"], "张伟");
    assert!(doc["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["address"] == "+8613812345678"));
    assert!(
        doc["loans"][0]["installments"]
            .as_array()
            .is_some_and(|i| !i.is_empty()),
        "{doc}"
    );
    for part in [
        "contact_history",
        "consents",
        "evidence",
        "contact_checks",
        "contact_changes",
        "plan_requests",
    ] {
        assert!(doc[part].is_array(), "{part}");
    }
    assert!(doc["notices"]["attempts"].is_array() && doc["notices"]["decisions"].is_array());
    assert_eq!(doc["access_log"][0]["action"], "borrower.export");
    assert_eq!(doc["access_log"][0]["reason"], "access request AR-17");
    let (s, _) = h
        .call(
            Role::Admin,
            "GET",
            "/v1/borrowers/NOBODY/export?reason=access%20request",
            None,
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_is_admin_only_waits_for_the_debt_and_leaves_the_borrower_gone() {
    let h = Harness::start().await;
    let path = "/v1/borrowers/B1/erasure";
    let ask = json!({"reason": "borrower request ER-3"});
    for role in [Role::Operator, Role::Auditor, Role::Integration] {
        let (s, e) = h.call(role, "POST", path, Some(ask.clone())).await;
        assert_eq!(s, 403, "{role:?}: {e}");
    }
    let (s, e) = h
        .call(Role::Admin, "POST", path, Some(json!({"reason": "call 13812345678"})))
        .await;
    assert_eq!((s, e["field"].as_str()), (422, Some("reason")), "{e}");
    let (s, e) = h.call(Role::Admin, "POST", path, Some(ask.clone())).await;
    assert_eq!((s, e["code"].as_str()), (409, Some("not_erasable")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("2 unpaid installment"), "{e}");
    for seq in [1, 2] {
        let (s, e) = h
            .call(
                Role::Integration,
                "POST",
                "/v1/payments",
                Some(json!({"loan_id": "L1", "seq": seq, "amount_minor": 100000})),
            )
            .await;
        assert_eq!(s, 204, "{e}");
    }
    let (s, out) = h.call(Role::Admin, "POST", path, Some(ask.clone())).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["state"], "erased");
    assert!(out["ledger_index"].is_u64(), "the erasure is a ledger leaf: {out}");
    assert_eq!(out["shredded"]["contact_points"], 1, "{out}");
    // The borrower's data is gone from every read; the erasure itself is on record.
    let (s, e) = h.call(Role::Admin, "GET", "/v1/borrowers/B1", None).await;
    assert_eq!((s, e["code"].as_str()), (410, Some("erased")), "{e}");
    let (s, e) = h
        .call(
            Role::Admin,
            "GET",
            "/v1/borrowers/B1/export?reason=access%20request",
            None,
        )
        .await;
    assert_eq!(s, 410, "{e}");
    let (s, again) = h.call(Role::Admin, "POST", path, Some(ask)).await;
    assert_eq!((s, again["state"].as_str()), (200, Some("already_erased")), "{again}");
    assert_eq!(again["ledger_index"], out["ledger_index"]);
    let (s, log) = h.call(Role::Auditor, "GET", "/v1/access-log", None).await;
    assert_eq!(s, 200, "{log}");
    assert!(log.to_string().contains("borrower.erase"), "{log}");
}

/// With a metrics token configured, `/metrics` answers only the scraper that sends it: not an
/// anonymous caller, not an API token (even an admin's), not a wrong token.
#[tokio::test]
async fn metrics_answer_only_the_metrics_token() {
    let h = Harness::start().await;
    let r = h.raw(None, "GET", "/metrics", None).await;
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized", "{body}");
    let admin = h.token(Role::Admin).to_string();
    for token in [admin.as_str(), "scraper-token-but-longer", "scraper-toke"] {
        let r = h.raw(Some(token), "GET", "/metrics", None).await;
        assert_eq!(r.status().as_u16(), 401, "token {token}");
    }
    let (s, text) = h.metrics().await;
    assert_eq!(s, 200);
    assert!(
        text.as_str().unwrap().contains("reachline_engine_receipts_total"),
        "{text}"
    );
    h.finish().await;
}
