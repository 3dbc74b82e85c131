//! The HTTP providers against the HTTP sandbox: every class each API can produce, receipts and
//! call outcomes pushed to the signed webhook and matched, and unsigned or stale webhooks
//! refused.

use std::sync::Arc;
use std::time::Duration;

use reachline_channels::http::{webhook_router, HttpApi, HttpChannel, HttpConfig};
use reachline_channels::http_sandbox::HttpSandbox;
use reachline_channels::{Channel, MessageRef, Outbound};
use reachline_domain::ContactAddress;
use reachline_domain::DeliveryClass::{self, *};

use crate::helpers::{collect, phone};

const SECRET: &str = "webhook-secret";

/// A channel of `api` on a fresh sandbox, with its webhook served on loopback.
async fn setup(api: HttpApi) -> (HttpSandbox, Arc<HttpChannel>, String) {
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/", hook.local_addr().unwrap());
    let sandbox = HttpSandbox::start("127.0.0.1:0", Some(hook_url.clone()), SECRET)
        .await
        .unwrap();
    let ch = Arc::new(HttpChannel::new(HttpConfig {
        name: format!("{api:?}"),
        api,
        base_url: sandbox.base_url(),
        token: "t0ken".into(),
        template: "SMS_001".into(),
        webhook_secret: SECRET.into(),
        timeout_ms: 5_000,
    }));
    let router = webhook_router(ch.clone());
    tokio::spawn(async move { axum::serve(hook, router).await.unwrap() });
    (sandbox, ch, hook_url)
}

/// Sends one message per scripted address; `Ok` expects a receipt of that class, `Err` a
/// refusal of that class.
async fn check(ch: &HttpChannel, cases: Vec<(ContactAddress, Result<DeliveryClass, DeliveryClass>)>) {
    let mut receipts = ch.take_receipts().unwrap();
    let mut want = 0;
    for (n, (to, expect)) in cases.iter().enumerate() {
        let m = Outbound {
            reference: MessageRef(format!("h{n}")),
            to: to.clone(),
            text: "还款提醒".into(),
        };
        match (expect, ch.send(&m).await) {
            (Ok(_), Ok(_)) => want += 1,
            (Err(c), Err(e)) => assert_eq!(e.class, *c, "case {n}: {e}"),
            (e, got) => panic!("case {n}: wanted {e:?}, got {got:?}"),
        }
    }
    let got = collect(&mut receipts, "h", want, Duration::from_secs(5)).await;
    for (n, (_, expect)) in cases.iter().enumerate() {
        if let Ok(class) = expect {
            let r = got
                .get(&MessageRef(format!("h{n}")))
                .unwrap_or_else(|| panic!("case {n}: no receipt"));
            assert_eq!(r[0].class, *class, "case {n}");
        }
    }
}

#[tokio::test]
async fn sms_aggregator() {
    let (_sb, ch, _) = setup(HttpApi::SmsAggregator).await;
    let c = |d: u8, e| (phone(u32::from(d), d), e);
    check(
        &ch,
        vec![
            c(0, Ok(Delivered)),
            c(1, Ok(Dead)),
            c(2, Ok(Suspended)),
            c(3, Ok(Transient)),
            c(4, Err(Dead)),
            c(5, Err(Transient)),
            c(6, Err(OurFault)),
            c(7, Err(Transient)),
            c(8, Ok(Unknown)),
        ],
    )
    .await;
}

#[tokio::test]
async fn voice_outcomes_with_keys_and_transcripts() {
    let (_sb, ch, _) = setup(HttpApi::Voice).await;
    let c = |d: u8, e| (phone(u32::from(d), d), e);
    check(
        &ch,
        vec![
            c(0, Ok(Engaged)),
            c(1, Ok(WrongParty)),
            c(2, Ok(Dead)),
            c(3, Ok(Transient)),
            c(4, Ok(Delivered)),
            c(5, Err(Dead)),
        ],
    )
    .await;
}

#[tokio::test]
async fn fcm_push() {
    let (_sb, ch, _) = setup(HttpApi::Fcm).await;
    let c = |t: &str, e| (ContactAddress::PushToken(t.into()), e);
    let cases = vec![
        c("tok1", Err(Dead)),
        c("tok2", Err(Dead)),
        c("tok3", Err(OurFault)),
        c("tok4", Err(Transient)),
        c("tok5", Err(Transient)),
    ];
    check(&ch, cases).await;
    let ok = Outbound {
        reference: MessageRef("p".into()),
        to: ContactAddress::PushToken("tok0".into()),
        text: "x".into(),
    };
    assert!(ch.send(&ok).await.unwrap().provider_ids[0].starts_with("projects/p/messages/"));
}

#[tokio::test]
async fn wechat_template_message() {
    let (_sb, ch, _) = setup(HttpApi::Wechat).await;
    let c = |id: &str, e| {
        (
            ContactAddress::Im {
                provider: "wechat".into(),
                account: id.into(),
            },
            e,
        )
    };
    let cases = vec![
        c("oAbc1", Err(Dead)),
        c("oAbc2", Err(Dead)),
        c("oAbc3", Err(OurFault)),
        c("oAbc4", Err(Transient)),
        c("oAbc5", Err(Dead)),
    ];
    check(&ch, cases).await;
    let ok = Outbound {
        reference: MessageRef("w".into()),
        to: ContactAddress::Im {
            provider: "wechat".into(),
            account: "oAbc0".into(),
        },
        text: "x".into(),
    };
    // The id is the msgid as digits, as a TEMPLATESENDJOBFINISH event's MsgID names it.
    let id = ch.send(&ok).await.unwrap().provider_ids.remove(0);
    assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
}

#[tokio::test]
async fn unsigned_or_stale_webhooks_are_refused_with_a_clear_reason() {
    let (_sb, _ch, url) = setup(HttpApi::SmsAggregator).await;
    let client = reqwest_client();
    let body = br#"{"message_id":"1","out_id":"x","status":"DELIVRD"}"#.to_vec();
    let r = client.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.text().await.unwrap(), "missing signature or timestamp header");
    let old = 1_000_000;
    let sig = reachline_channels::webhook::sign(SECRET.as_bytes(), old, &body);
    let r = client
        .post(&url)
        .header("x-timestamp", old.to_string())
        .header("x-signature", sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap().contains("replay window"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sig = reachline_channels::webhook::sign(b"wrong", now, &body);
    let r = client
        .post(&url)
        .header("x-timestamp", now.to_string())
        .header("x-signature", sig)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap().as_str()),
        (401, "signature does not match")
    );
    let sig = reachline_channels::webhook::sign(SECRET.as_bytes(), now, &body);
    let r = client
        .post(&url)
        .header("x-timestamp", now.to_string())
        .header("x-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A provider that takes the request and never answers may have acted on it: the send is in
/// doubt (never retried), while one that cannot be reached at all is merely unavailable.
#[tokio::test]
async fn an_unanswered_request_is_in_doubt_an_unreachable_provider_is_not() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            held.push(sock);
        }
    });
    let closed = crate::helpers::free_port();
    let channel = |base_url: String| {
        HttpChannel::new(HttpConfig {
            name: "fcm".into(),
            api: HttpApi::Fcm,
            base_url,
            token: "t0ken".into(),
            template: "SMS_001".into(),
            webhook_secret: SECRET.into(),
            timeout_ms: 300,
        })
    };
    let m = Outbound {
        reference: MessageRef("d1".into()),
        to: ContactAddress::PushToken("token-0".into()),
        text: "还款提醒".into(),
    };
    let e = channel(silent_url).send(&m).await.unwrap_err();
    assert!(e.is_in_doubt(), "{e:?}");
    assert_eq!(requests.load(std::sync::atomic::Ordering::Relaxed), 1);
    let e = channel(format!("http://127.0.0.1:{closed}"))
        .send(&m)
        .await
        .unwrap_err();
    assert!(e.is_transient() && !e.is_in_doubt(), "{e:?}");
}

/// Trouble on the provider's side (5xx, 429, busy) is the provider's failure: the failover
/// group moves to the next provider, and nothing is said about the address. A refusal about
/// the address (a dead token, a per-number limit) stays the message's.
#[tokio::test]
async fn provider_trouble_fails_over_and_says_nothing_of_the_address() {
    use reachline_channels::failover::{BreakerConfig, Failover, Provider};
    use reachline_channels::Scope;
    let send = |ch: Arc<HttpChannel>, to: ContactAddress| async move {
        let m = Outbound {
            reference: MessageRef("s".into()),
            to,
            text: "x".into(),
        };
        ch.send(&m).await.unwrap_err()
    };
    let (_a, sms, _) = setup(HttpApi::SmsAggregator).await;
    assert_eq!(send(sms.clone(), phone(7, 7)).await.scope, Scope::Provider, "HTTP 503");
    assert_eq!(
        send(sms.clone(), phone(5, 5)).await.scope,
        Scope::Message,
        "per-number limit"
    );
    let (_f, fcm, _) = setup(HttpApi::Fcm).await;
    let token = |t: &str| ContactAddress::PushToken(t.into());
    assert_eq!(send(fcm.clone(), token("tok4")).await.scope, Scope::Provider, "429");
    assert_eq!(send(fcm.clone(), token("tok5")).await.scope, Scope::Provider, "503");
    assert_eq!(
        send(fcm.clone(), token("tok1")).await.scope,
        Scope::Message,
        "unregistered"
    );
    let (_w, wechat, _) = setup(HttpApi::Wechat).await;
    let openid = |id: &str| ContactAddress::Im {
        provider: "wechat".into(),
        account: id.into(),
    };
    assert_eq!(
        send(wechat.clone(), openid("oAbc4")).await.scope,
        Scope::Provider,
        "busy"
    );
    assert_eq!(send(wechat, openid("oAbc1")).await.scope, Scope::Message, "blocked");

    // FCM down on the first project: the second one takes the push.
    let (down, first, _) = setup(HttpApi::Fcm).await;
    down.set_fcm_failure(Some(503));
    let group = Failover::new(
        "push",
        reachline_domain::Channel::Push,
        vec![
            Provider::new(first, BreakerConfig::default(), None, Duration::from_secs(2)),
            Provider::new(fcm, BreakerConfig::default(), None, Duration::from_secs(2)),
        ],
    );
    let m = Outbound {
        reference: MessageRef("f".into()),
        to: token("tok0"),
        text: "x".into(),
    };
    // Without failover the first project's 503 would be the answer.
    group.send(&m).await.unwrap();
    assert_eq!(
        group.providers()[0].breaker_state(),
        reachline_channels::failover::BreakerState::Closed { failures: 1 },
        "counted against the failing project"
    );
}
