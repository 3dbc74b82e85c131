//! Email against `aiosmtpd` (tools/smtp_peer.py): synchronous replies classed by enhanced code,
//! and an asynchronous RFC 3464 bounce read from the peer's mbox and matched by return path.

use std::time::Duration;

use reachline_channels::smtp::{SmtpChannel, SmtpConfig};
use reachline_channels::{Channel, MessageRef, Outbound, Permanence};
use reachline_domain::DeliveryClass::*;
use reachline_domain::{ContactAddress, Email};

use reachline_channels::peers::SmtpPeer;

use crate::helpers::{collect, free_port};

fn mail(r: &str, to: &str) -> Outbound {
    Outbound {
        reference: MessageRef(r.into()),
        to: ContactAddress::Email(Email::parse(to).unwrap()),
        text: "Your repayment is due.".into(),
    }
}

#[tokio::test]
async fn aiosmtpd_replies_and_bounces_are_classed() {
    let dir = tempfile::tempdir().unwrap();
    let peer = SmtpPeer::start(dir.path()).unwrap();
    let (port, mbox) = (peer.port, peer.mbox.clone());
    let ch = SmtpChannel::new(SmtpConfig {
        port,
        accepted_is_delivered: true,
        ..SmtpConfig::default()
    });
    let mut receipts = ch.take_receipts().unwrap();

    ch.send(&mail("e-ok", "borrower@example.com")).await.unwrap();
    for (addr, class, permanence) in [
        ("gone@example.com", Dead, Permanence::Permanent),
        ("full@example.com", Transient, Permanence::Transient),
        ("disabled@example.com", Dead, Permanence::Permanent),
        ("spam@example.com", OurFault, Permanence::Permanent),
    ] {
        let e = ch.send(&mail("e-x", addr)).await.unwrap_err();
        assert_eq!((e.class, e.permanence), (class, permanence), "{addr}: {e}");
        assert!(
            !e.to_string().contains(addr.split('@').next().unwrap()),
            "the error does not echo the address"
        );
    }
    ch.send(&mail("e-later", "later@example.com")).await.unwrap();
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&mbox).unwrap_or_default();
        if !text.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ch.ingest_mbox(&text), (1, 0));
    // e-ok: the 250; e-later: its 250, then the bounce that came after it.
    let got = collect(&mut receipts, "e-", 3, Duration::from_secs(5)).await;
    assert_eq!(got[&MessageRef("e-ok".into())][0].class, Delivered);
    let later = &got[&MessageRef("e-later".into())];
    assert_eq!(later.len(), 2);
    let bounce = &later[1];
    assert_eq!((bounce.class, bounce.code.as_str()), (Dead, "failed 5.1.1"));
    // What the recipient read: the text as sent, from the configured sender.
    let inbox = peer.wait_for("borrower@example.com", 1).await;
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert_eq!(inbox[0].text.trim_end(), "Your repayment is due.");
    assert_eq!(inbox[0].subject, "Repayment notice");
    assert!(inbox[0].from.starts_with("bounce+e-ok@"), "{inbox:?}");
}

#[tokio::test]
async fn a_closed_port_is_the_providers_fault() {
    let ch = SmtpChannel::new(SmtpConfig {
        port: free_port(),
        timeout_ms: 2_000,
        ..SmtpConfig::default()
    });
    let e = ch.send(&mail("e-1", "borrower@example.com")).await.unwrap_err();
    assert_eq!(e.scope, reachline_channels::Scope::Provider);
    assert!(e.is_transient());
}

#[tokio::test]
async fn bounces_delivered_to_a_maildir_are_read_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let peer = SmtpPeer::start(dir.path()).unwrap();
    let ch = std::sync::Arc::new(SmtpChannel::new(SmtpConfig {
        port: peer.port,
        accepted_is_delivered: true,
        bounce_maildir: Some(peer.maildir.clone()),
        bounce_poll_ms: 100,
        ..SmtpConfig::default()
    }));
    let mut receipts = ch.take_receipts().unwrap();
    ch.spawn_bounce_reader();
    ch.send(&mail("m-later", "later@example.com")).await.unwrap();
    ch.send(&mail("m-ok", "borrower@example.com")).await.unwrap();
    let got = collect(&mut receipts, "m-", 3, Duration::from_secs(10)).await;
    let later = &got[&MessageRef("m-later".into())];
    assert_eq!(later.len(), 2, "{later:?}");
    assert_eq!((later[1].class, later[1].code.as_str()), (Dead, "failed 5.1.1"));
    assert_eq!(
        got[&MessageRef("m-ok".into())].len(),
        1,
        "no bounce for a delivered one"
    );
    // Read once: the bounce moves from new/ to cur/ (just after its receipt is reported).
    let count = |sub: &str| std::fs::read_dir(peer.maildir.join(sub)).map_or(0, |d| d.count());
    for _ in 0..100 {
        if count("cur") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((count("new"), count("cur")), (0, 1));
}
