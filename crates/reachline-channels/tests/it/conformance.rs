//! The conformance suite: what every adapter must do, run here against the SMPP adapter on the
//! in-process sandbox SMSC (and, in `interop`, against the Python `smpp34` SMSC).
//!
//! Each peer scripts outcomes by the address's last digit (see `smpp::sandbox`); `script()`
//! is the expected class for each digit.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reachline_channels::failover::{BreakerConfig, BreakerState, Failover, Provider};
use reachline_channels::smpp::sandbox::Sandbox;
use reachline_channels::smpp::{SmppChannel, SmppConfig};
use reachline_channels::{Channel, MessageRef, Outbound, Permanence, Scope};
use reachline_domain::DeliveryClass::{self, *};

use crate::helpers::{collect, phone};

/// Digit → (the send is refused with this class | the receipt's class).
pub fn script() -> Vec<(u8, Result<DeliveryClass, DeliveryClass>)> {
    vec![
        (0, Ok(Delivered)),
        (1, Ok(Dead)),
        (2, Ok(Suspended)),
        (3, Ok(Transient)),
        (4, Ok(Transient)),
        (5, Err(Dead)),
        (6, Ok(Delivered)),
        (7, Err(OurFault)),
        (8, Ok(Delivered)),
        (9, Ok(Unknown)),
    ]
}

pub fn config(port: u16) -> SmppConfig {
    SmppConfig {
        name: format!("smsc-{port}"),
        port,
        reconnect_min_ms: 20,
        reconnect_max_ms: 200,
        ..SmppConfig::default()
    }
}

fn msg(n: u32, digit: u8, text: &str) -> Outbound {
    msg_ref("m", n, digit, text)
}

fn msg_ref(prefix: &str, n: u32, digit: u8, text: &str) -> Outbound {
    Outbound {
        reference: MessageRef(format!("{prefix}{n}")),
        to: phone(n, digit),
        text: text.to_string(),
    }
}

/// Every class the peer can produce is reached, receipts are matched to their messages, and
/// synchronous refusals say permanent or transient.
pub async fn every_class_reachable(ch: &dyn Channel) {
    let mut receipts = ch.take_receipts().expect("receipts");
    let mut expect_receipts = 0;
    for (n, (digit, want)) in script().into_iter().enumerate() {
        let r = ch
            .send(&msg_ref("class", n as u32, digit, &format!("notice {n}")))
            .await;
        match (want, r) {
            (Ok(_), Ok(acc)) => {
                assert_eq!(acc.provider_ids.len(), 1);
                expect_receipts += 1;
            }
            (Err(class), Err(e)) => {
                assert_eq!(e.class, class, "digit {digit}: {e}");
                assert_eq!(e.scope, Scope::Message);
                assert_eq!(e.permanence, Permanence::Permanent);
            }
            (want, got) => panic!("digit {digit}: wanted {want:?}, got {got:?}"),
        }
    }
    let got = collect(&mut receipts, "class", expect_receipts, Duration::from_secs(10)).await;
    for (n, (digit, want)) in script().into_iter().enumerate() {
        if let Ok(class) = want {
            let rs = got
                .get(&MessageRef(format!("class{n}")))
                .unwrap_or_else(|| panic!("no receipt for digit {digit}"));
            assert_eq!(rs.last().unwrap().class, class, "digit {digit}: {:?}", rs);
            assert!(!rs[0].raw.is_empty() || digit == 1, "the raw receipt is kept");
        }
    }
}

async fn sandbox_channel() -> (Sandbox, SmppChannel) {
    let sb = Sandbox::start("127.0.0.1:0").await.unwrap();
    let ch = SmppChannel::start(config(sb.addr().port()));
    assert!(ch.wait_bound(Duration::from_secs(5)).await, "bound to the sandbox");
    (sb, ch)
}

#[tokio::test]
async fn sandbox_every_class_reachable() {
    let (_sb, ch) = sandbox_channel().await;
    every_class_reachable(&ch).await;
    assert!(
        ch.stats().throttled.load(std::sync::atomic::Ordering::Relaxed) >= 1,
        "digit 6 was throttled and resubmitted"
    );
}

#[tokio::test]
async fn long_chinese_text_goes_in_parts_each_with_its_receipt() {
    let (sb, ch) = sandbox_channel().await;
    let mut receipts = ch.take_receipts().unwrap();
    let text: String = "您的贷款本期应还款项将于明日到期，请及时还款。"
        .chars()
        .cycle()
        .take(100)
        .collect();
    let acc = ch.send(&msg(1, 0, &text)).await.unwrap();
    assert_eq!(acc.provider_ids.len(), 2, "100 UCS-2 characters are 67 + 33");
    let got = collect(&mut receipts, "m", 2, Duration::from_secs(5)).await;
    let mut parts: Vec<_> = got[&MessageRef("m1".into())].iter().map(|r| r.part).collect();
    parts.sort();
    assert_eq!(parts, vec![Some(0), Some(1)]);
    let seen: String = sb.accepted().iter().map(|m| m.text.clone()).collect();
    assert_eq!(seen, text);
}

/// A receipt is answered (`deliver_sm_resp`) only once the consumer is done with it (the engine:
/// once it is recorded), so that a crash before then leaves it with the SMSC to deliver again.
#[tokio::test]
async fn a_receipt_is_answered_only_once_its_reader_lets_it_go() {
    use futures::StreamExt;
    let (sb, ch) = sandbox_channel().await;
    let mut receipts = ch.take_receipts().unwrap();
    ch.send(&msg(1, 0, "due tomorrow")).await.unwrap();
    ch.send(&msg(2, 8, "due tomorrow")).await.unwrap(); // its receipt comes before the submit_sm_resp
    let first = tokio::time::timeout(Duration::from_secs(5), receipts.next())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), receipts.next())
        .await
        .unwrap()
        .unwrap();
    let copy = first.clone();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sb.answered(), 0, "no receipt is answered while it is held");
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sb.answered(), 0, "a copy still holds it");
    drop(copy);
    let wait = std::time::Instant::now();
    while sb.answered() < 1 && wait.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sb.answered(), 1, "answered once let go");
    drop(second);
    while sb.answered() < 2 && wait.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sb.answered(), 2);
}

/// A receipt that names no message is kept: reported with no reference, classed `Unknown`,
/// flagged `malformed`, its text as it came.
#[tokio::test]
async fn a_receipt_naming_no_message_is_kept_and_flagged() {
    use futures::StreamExt;
    let (sb, ch) = sandbox_channel().await;
    sb.set_script(Arc::new(|_: &str| reachline_channels::smpp::sandbox::NO_ID));
    let mut receipts = ch.take_receipts().unwrap();
    ch.send(&msg(1, 0, "due tomorrow")).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), receipts.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.reference, r.provider_id.as_str()), (None, ""));
    assert_eq!((r.class, r.code.as_str(), r.is_final), (Unknown, "malformed", false));
    assert_eq!(r.raw, b"sub:001 dlvrd:001 stat:DELIVRD err:000 text:");
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// SMPP over TLS: the client checks the SMSC's certificate against the configured CA file, then
/// sends and gets its receipts as in the clear; an SMSC whose certificate it does not trust is
/// never bound, and a send says the provider is unavailable.
#[tokio::test]
async fn speaks_smpp_over_tls_to_an_smsc_it_trusts_only() {
    use futures::StreamExt;
    let tls =
        reachline_channels::tls::server_config(&fixture("smsc-test-cert.pem"), &fixture("smsc-test-key.pem"), &[])
            .unwrap();
    let sb = Sandbox::start_with("127.0.0.1:0", Some(tls)).await.unwrap();
    let port = sb.addr().port();
    let ch = SmppChannel::start(SmppConfig {
        tls: true,
        tls_ca_file: Some(fixture("smsc-test-cert.pem")),
        tls_server_name: Some("localhost".into()),
        ..config(port)
    });
    assert!(ch.wait_bound(Duration::from_secs(5)).await, "bound over TLS");
    let mut receipts = ch.take_receipts().unwrap();
    let accepted = ch.send(&msg(1, 0, "due tomorrow")).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), receipts.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.reference, r.class), (Some(MessageRef("m1".into())), Delivered));
    assert_eq!(accepted.provider_ids.len(), 1);
    assert_eq!(sb.accepted().len(), 1);

    // The same SMSC, trusted through another certificate: the handshake fails, nothing is sent.
    let untrusting = SmppChannel::start(SmppConfig {
        tls: true,
        tls_ca_file: Some(fixture("other-cert.pem")),
        tls_server_name: Some("localhost".into()),
        bind_wait_ms: 500,
        ..config(port)
    });
    assert!(
        !untrusting.wait_bound(Duration::from_secs(1)).await,
        "not bound to an untrusted SMSC"
    );
    let e = untrusting.send(&msg(2, 0, "due tomorrow")).await.unwrap_err();
    assert_eq!(e.scope, Scope::Provider, "{e:?}");
    // In the clear, to the TLS port: no bind either.
    let clear = SmppChannel::start(SmppConfig {
        bind_wait_ms: 500,
        response_timeout_ms: 500,
        ..config(port)
    });
    assert!(
        !clear.wait_bound(Duration::from_secs(1)).await,
        "no bind in the clear on a TLS port"
    );
    assert_eq!(sb.accepted().len(), 1, "nothing more reached the SMSC");
}

#[tokio::test]
async fn reconnects_after_the_peer_drops_and_sends_nothing_twice() {
    let (sb, ch) = sandbox_channel().await;
    let ch = Arc::new(ch);
    let n = 400u32;
    let sender = {
        let ch = ch.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            futures::stream::iter(0..n)
                .map(|i| {
                    let ch = ch.clone();
                    async move { (i, ch.send(&msg(i, 0, &format!("tag{i}"))).await) }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
        })
    };
    while sb.accepted().len() < 100 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sb.drop_sessions();
    let results = sender.await.unwrap();
    assert!(sb.sessions() >= 2, "the client bound again");
    let tags: Vec<String> = sb.accepted().into_iter().map(|m| m.text).collect();
    let (in_doubt, taken) = crate::helpers::exactly_once_or_in_doubt(&results, &tags, n, 16);
    assert_eq!(
        ch.stats().in_doubt.load(std::sync::atomic::Ordering::Relaxed) as usize,
        in_doubt
    );
    // The sends after the drop went out on the new session.
    assert!(tags.len() >= n as usize - in_doubt);
    eprintln!("drop: {n} messages, {in_doubt} in doubt ({taken} of them taken by the SMSC), none sent twice");
}

#[tokio::test]
async fn fails_over_when_a_provider_is_down_and_its_breaker_opens() {
    let sb = Sandbox::start("127.0.0.1:0").await.unwrap();
    let dead_port = crate::helpers::free_port();
    let down = SmppChannel::start(SmppConfig {
        bind_wait_ms: 100,
        ..config(dead_port)
    });
    let up = SmppChannel::start(config(sb.addr().port()));
    assert!(up.wait_bound(Duration::from_secs(5)).await);
    let breaker = BreakerConfig {
        failures: 2,
        open_for: Duration::from_secs(60),
        slow: Duration::from_secs(5),
    };
    let group = Failover::new(
        "sms",
        reachline_domain::Channel::Sms,
        vec![
            Provider::new(Arc::new(down), breaker, None, Duration::from_secs(2)),
            Provider::new(Arc::new(up), breaker, None, Duration::from_secs(2)),
        ],
    );
    for i in 0..4 {
        let acc = group.send(&msg(i, 0, "hello")).await.unwrap();
        assert_eq!(acc.provider, format!("smsc-{}", sb.addr().port()));
    }
    assert!(matches!(
        group.providers()[0].breaker_state(),
        BreakerState::Open { .. }
    ));
    // The group reports each member: the dead one's breaker open, the other up.
    let status: Vec<(String, &str)> = group
        .status()
        .into_iter()
        .map(|s| (s.provider, s.state.as_str()))
        .collect();
    assert_eq!(
        status,
        [
            (format!("smsc-{dead_port}"), "open"),
            (format!("smsc-{}", sb.addr().port()), "up")
        ]
    );
    // A refusal about the address is not the provider's fault: no failover, no breaker change.
    let e = group.send(&msg(9, 5, "hello")).await.unwrap_err();
    assert_eq!((e.class, e.scope), (Dead, Scope::Message));
    assert_eq!(sb.accepted().len(), 4);
    // The whole conformance script also holds through the failover group.
    every_class_reachable(&group).await;
}

#[tokio::test]
async fn honours_the_rate_limit() {
    let sb = Sandbox::start("127.0.0.1:0").await.unwrap();
    let ch = SmppChannel::start(config(sb.addr().port()));
    assert!(ch.wait_bound(Duration::from_secs(5)).await);
    let group = Failover::new(
        "sms",
        reachline_domain::Channel::Sms,
        vec![Provider::new(
            Arc::new(ch),
            BreakerConfig::default(),
            NonZeroU32::new(20),
            Duration::from_secs(2),
        )],
    );
    let start = Instant::now();
    for i in 0..30 {
        group.send(&msg(i, 0, "x")).await.unwrap();
    }
    // A burst of 20, then 10 more at 20 per second.
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "30 sends at 20/s took only {took:?}"
    );
    assert_eq!(sb.accepted().len(), 30);
}
