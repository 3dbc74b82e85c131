//! WeChat official-account events at `/v1/webhooks/{provider}`: an IM attempt sent with a known
//! `msgid`, its `TEMPLATESENDJOBFINISH` outcome signed WeChat's way and recorded on it; a wrong
//! or stale signature refused (401) with nothing recorded; a replay refused; the URL check
//! (`GET` with `echostr`); an unsubscribe and a text message as evidence about the IM contact.

use std::sync::atomic::Ordering::Relaxed;

use chrono::Utc;
use reachline_channels::wechat::signature;
use reachline_domain::{BorrowerId, Channel, ContactId, ExternalId};
use reachline_server::auth::Role;
use reachline_store::engine::{NewSend, PlanWrite, SentRecord};
use serde_json::json;

use super::{Harness, WECHAT_AES_KEY, WECHAT_APP_ID, WECHAT_TOKEN};

const OPENID: &str = "oia2TjuEGTNoeX76QEjQNrcURxG8";
const MSG_ID: &str = "200163836";

fn job(msg_id: &str, status: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>\n\
         <FromUserName><![CDATA[{OPENID}]]></FromUserName>\n\
         <CreateTime>1395658920</CreateTime><MsgType><![CDATA[event]]></MsgType>\n\
         <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msg_id}</MsgID>\n\
         <Status><![CDATA[{status}]]></Status></xml>"
    )
}

/// The query WeChat would sign a request with, with `token`.
fn signed(token: &str, ts: i64, nonce: &str) -> String {
    let ts = ts.to_string();
    format!(
        "signature={}&timestamp={ts}&nonce={nonce}&openid={OPENID}",
        signature(token, &ts, nonce)
    )
}

async fn post(h: &Harness, query: &str, body: &str) -> (u16, Option<String>, String) {
    post_to(h, "wx", query, body).await
}

async fn post_to(h: &Harness, provider: &str, query: &str, body: &str) -> (u16, Option<String>, String) {
    let r = h
        .http
        .post(format!("{}/v1/webhooks/{provider}?{query}", h.base))
        .header("content-type", "text/xml")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
    (status, ct, r.text().await.unwrap())
}

async fn get(h: &Harness, provider: &str, query: &str) -> (u16, String) {
    let r = h
        .http
        .get(format!("{}/v1/webhooks/{provider}?{query}", h.base))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// B1 with a WeChat IM contact point, and one IM attempt to it that provider `wx` took with
/// `msgid` [`MSG_ID`].
async fn im_attempt(h: &Harness) -> (BorrowerId, ContactId, i64) {
    im_attempt_by(h, "wx").await
}

async fn im_attempt_by(h: &Harness, provider: &str) -> (BorrowerId, ContactId, i64) {
    let (s, c) = h
        .call(
            Role::Admin,
            "POST",
            "/v1/borrowers/B1/contacts",
            Some(
                json!({"slot": "wechat", "kind": "im_account", "role": "primary", "value": format!("wechat:{OPENID}")}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let b1 = h
        .stores
        .store
        .borrower_by_external_id(&ExternalId::parse("B1").unwrap())
        .await
        .unwrap()
        .unwrap();
    let contacts = h.stores.store.contacts(b1.id).await.unwrap();
    let im = contacts.iter().find(|c| c.point.slot.as_str() == "wechat").unwrap().id;
    let loan = h.stores.store.loans(b1.id).await.unwrap()[0].id;
    let inst = h.stores.store.installments(loan).await.unwrap()[0].id;
    let now = Utc::now();
    let e = &h.stores.engine;
    e.write_plan(PlanWrite {
        at: Some(now),
        sends: vec![NewSend {
            idem_key: format!("{}/0/pre_due/{}/im/0", inst.0, im.0),
            borrower: b1.id,
            installment: inst,
            step: 0,
            kind: "pre_due".into(),
            rung: 0,
            contact: im,
            channel: Channel::Im,
            third_party: false,
            not_before: now,
        }],
        ..PlanWrite::default()
    })
    .await
    .unwrap();
    let rows = e.lease("t", now, chrono::Duration::minutes(5), 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    let id = rows[0].id;
    e.mark_sending_many("t", vec![id], now).await.unwrap();
    e.record_sent_many(
        vec![SentRecord {
            id,
            at: now,
            provider: provider.into(),
            provider_ids: vec![MSG_ID.into()],
            template_id: "pre_due".into(),
            template_version: 1,
            text_sha256: [7; 32],
        }],
        &|_, _| String::new(),
    )
    .await
    .unwrap();
    (b1.id, im, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_job_outcome_is_matched_by_msgid_and_signed_wechats_way() {
    let h = Harness::start().await;
    let (_, _, attempt) = im_attempt(&h).await;
    let now = Utc::now().timestamp();
    let body = job(MSG_ID, "failed:user block");

    // Wrong token, no signature, a stale one: 401 with the JSON error, and nothing recorded.
    for query in [
        signed("not-the-token", now, "11"),
        format!("timestamp={now}&nonce=11"),
        signed(WECHAT_TOKEN, now - 3600, "11"),
    ] {
        let (s, ct, text) = post(&h, &query, &body).await;
        assert_eq!(s, 401, "{query}: {text}");
        assert!(ct.unwrap().starts_with("application/json"));
        let e: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["code"], "unauthorized", "{e}");
        assert!(e["message"].as_str().unwrap().contains("signature"), "{e}");
        assert!(!text.contains(OPENID), "{text}");
    }
    assert_eq!(h.engine.counters.receipts.load(Relaxed), 0, "nothing recorded");
    assert!(h.stores.engine.receipts_of(&[attempt]).await.unwrap().is_empty());

    // Signed: answered `success` as text once the receipt is recorded on the attempt.
    let query = signed(WECHAT_TOKEN, now, "583729164");
    let (s, ct, text) = post(&h, &query, &body).await;
    assert_eq!((s, text.as_str()), (200, "success"));
    assert!(ct.unwrap().starts_with("text/plain"));
    let receipts = h.stores.engine.receipts_of(&[attempt]).await.unwrap();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    let r = &receipts[0];
    assert_eq!(
        (
            r.provider.as_str(),
            r.provider_id.as_str(),
            r.class.as_str(),
            r.flag.as_deref()
        ),
        ("wx", MSG_ID, "dead", None)
    );
    assert_eq!(r.code, "wechat:failed:user block");
    assert_eq!(h.engine.counters.receipts_unmatched.load(Relaxed), 0);
    let (_, notices) = h
        .call(Role::Auditor, "GET", "/v1/notices?borrower=B1&channel=im", None)
        .await;
    assert_eq!(notices["attempts"][0]["receipts"][0]["class"], "dead", "{notices}");

    // The same signed request again is a replay, however fresh: refused, and not recorded.
    let (s, _, text) = post(&h, &query, &job(MSG_ID, "success")).await;
    assert_eq!(s, 409, "{text}");
    assert!(text.contains("\"replayed\""), "{text}");
    assert_eq!(h.stores.engine.receipts_of(&[attempt]).await.unwrap().len(), 1);

    // A body that is not WeChat's XML is kept, flagged unmatched, and refused.
    let (s, _, text) = post(&h, &signed(WECHAT_TOKEN, now, "12"), "<xml><oops>").await;
    assert_eq!(s, 422, "{text}");
    assert_eq!(h.engine.counters.receipts.load(Relaxed), 2);
    assert_eq!(h.engine.counters.receipts_unmatched.load(Relaxed), 1);

    let (_, metrics) = h.metrics().await;
    let metrics = metrics.as_str().unwrap().to_string();
    for line in [
        r#"reachline_webhook_receipts_total{provider="wx",class="dead"} 1"#,
        r#"reachline_webhook_refused_total{provider="wx",reason="signature"} 1"#,
        r#"reachline_webhook_refused_total{provider="wx",reason="stale"} 1"#,
        r#"reachline_webhook_refused_total{provider="wx",reason="malformed"} 2"#,
        r#"reachline_webhook_refused_total{provider="wx",reason="replayed"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_check_echoes_echostr_only_when_signed() {
    let h = Harness::start().await;
    let now = Utc::now().timestamp();
    let q = signed(WECHAT_TOKEN, now, "77");
    assert_eq!(
        get(&h, "wx", &format!("{q}&echostr=5837291640")).await,
        (200, "5837291640".to_string())
    );
    // It spends no signature: WeChat may check again with the same one.
    assert_eq!(get(&h, "wx", &format!("{q}&echostr=abc")).await.0, 200);
    let (s, text) = get(&h, "wx", &format!("{}&echostr=abc", signed("wrong", now, "77"))).await;
    assert_eq!(s, 401, "{text}");
    assert!(!text.contains("abc"), "{text}");
    let (s, text) = get(&h, "wx", &q).await;
    assert_eq!(s, 422, "{text}");
    assert!(text.contains("echostr"), "{text}");
    // Only a WeChat provider's webhook answers GET.
    assert_eq!(get(&h, "agg", &format!("{q}&echostr=abc")).await.0, 405);
    assert_eq!(get(&h, "nobody", &format!("{q}&echostr=abc")).await.0, 404);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_and_a_reply_are_evidence_about_the_im_contact() {
    let h = Harness::start().await;
    let (b1, im, _) = im_attempt(&h).await;
    let now = Utc::now().timestamp();
    let text = format!(
        "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName>\
         <CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
         <Content><![CDATA[你发错了，我不认识这个人]]></Content><MsgId>6054768590064713728</MsgId></xml>"
    );
    let (s, _, body) = post(&h, &signed(WECHAT_TOKEN, now, "1"), &text).await;
    assert_eq!((s, body.as_str()), (200, "success"));
    let unsub = format!(
        "<xml><ToUserName>gh_7f083739789a</ToUserName><FromUserName>{OPENID}</FromUserName>\
         <CreateTime>{now}</CreateTime><MsgType>event</MsgType><Event>unsubscribe</Event></xml>"
    );
    let (s, _, body) = post(&h, &signed(WECHAT_TOKEN, now, "2"), &unsub).await;
    assert_eq!((s, body.as_str()), (200, "success"));
    // Someone else's unsubscribe, and a subscribe: taken, nothing recorded.
    let other = unsub.replace(OPENID, "oSomeoneElse");
    assert_eq!(post(&h, &signed(WECHAT_TOKEN, now, "3"), &other).await.0, 200);
    let sub = unsub.replace("unsubscribe", "subscribe");
    assert_eq!(post(&h, &signed(WECHAT_TOKEN, now, "4"), &sub).await.0, 200);

    let today = Utc::now().date_naive();
    let views = h.stores.engine.views(&[b1], today, today).await.unwrap();
    let about_im: Vec<(String, String)> = views[0]
        .evidence
        .iter()
        .filter(|e| e.contact == Some(im))
        .map(|e| (e.source.clone(), e.kind.clone()))
        .collect();
    assert_eq!(about_im.len(), 2, "{about_im:?}");
    assert!(
        about_im[0].1.contains("reply") && about_im[0].1.contains("\"im\"") && about_im[0].1.contains("wrong_number"),
        "{about_im:?}"
    );
    assert!(
        about_im[1].1.contains("delivery") && about_im[1].1.contains("\"im\"") && about_im[1].1.contains("dead"),
        "{about_im:?}"
    );
    assert!(about_im[1].0.contains("wx"), "{about_im:?}");
    assert_eq!(h.engine.counters.receipts.load(Relaxed), 0, "no receipt among them");
    h.finish().await;
}

/// The `wxsafe` account is in safe mode: its pushes come sealed (AES under its EncodingAESKey,
/// `msg_signature` over the ciphertext). A sealed outcome is opened and recorded as a plaintext
/// one is; a plaintext body, a wrong `msg_signature` and a seal for another app are refused,
/// the last kept and flagged.
#[tokio::test]
async fn a_safe_mode_account_s_sealed_outcome_is_opened_and_recorded() {
    use reachline_channels::wechat::SafeMode;
    let h = Harness::start().await;
    let (_, _, attempt) = im_attempt_by(&h, "wxsafe").await;
    let now = Utc::now().timestamp();
    let ts = now.to_string();
    let sm = SafeMode::new(WECHAT_TOKEN, WECHAT_AES_KEY, WECHAT_APP_ID).unwrap();
    let sealed = |sm: &SafeMode, nonce: &str| {
        let (encrypt, msg_signature) = sm.seal(job(MSG_ID, "success").as_bytes(), &ts, nonce, [3; 16]);
        let body = format!(
            "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        );
        let query = format!(
            "{}&encrypt_type=aes&msg_signature={msg_signature}",
            signed(WECHAT_TOKEN, now, nonce)
        );
        (query, body)
    };

    // A plaintext body to a safe-mode account: refused, nothing recorded.
    let (s, _, text) = post_to(&h, "wxsafe", &signed(WECHAT_TOKEN, now, "1"), &job(MSG_ID, "success")).await;
    assert_eq!(s, 401, "{text}");
    assert!(text.contains("safe mode"), "{text}");
    // Sealed, but its msg_signature is for other bytes.
    let (query, body) = sealed(&sm, "2");
    let wrong = query.replace("msg_signature=", "msg_signature=0");
    let (s, _, text) = post_to(&h, "wxsafe", &wrong[..wrong.len() - 1], &body).await;
    assert_eq!(s, 401, "{text}");
    assert!(text.contains("msg_signature"), "{text}");
    assert!(h.stores.engine.receipts_of(&[attempt]).await.unwrap().is_empty());

    // Sealed right: opened, matched by MsgID, answered `success`.
    let (query, body) = sealed(&sm, "3");
    let (s, _, text) = post_to(&h, "wxsafe", &query, &body).await;
    assert_eq!((s, text.as_str()), (200, "success"));
    let receipts = h.stores.engine.receipts_of(&[attempt]).await.unwrap();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(
        (receipts[0].provider.as_str(), receipts[0].class.as_str()),
        ("wxsafe", "delivered")
    );

    // Signed, but sealed for another app: kept, flagged, refused 422.
    let other = SafeMode::new(WECHAT_TOKEN, WECHAT_AES_KEY, "wx0000000000000000").unwrap();
    let (query, body) = sealed(&other, "4");
    let (s, _, text) = post_to(&h, "wxsafe", &query, &body).await;
    assert_eq!(s, 422, "{text}");
    assert!(text.contains("kept"), "{text}");
    assert_eq!(
        h.engine.counters.receipts_unmatched.load(Relaxed),
        1,
        "kept, unmatched, flagged"
    );
    // The plaintext account refuses a sealed push: it has no key to open it with.
    let (query, body) = sealed(&sm, "5");
    let (s, _, text) = post_to(&h, "wx", &query, &body).await;
    assert_eq!(s, 401, "{text}");
}
