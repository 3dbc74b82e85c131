//! Interop with peers we did not write: the PyPI `smpp34` SMSC driven by `tools/smsc.py`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reachline_channels::smpp::{SmppChannel, SmppConfig};
use reachline_channels::{Channel, MessageRef, Outbound};

use crate::conformance::{config, every_class_reachable};
use crate::helpers::{collect, free_port, phone, PySmsc};

#[tokio::test]
async fn python_smsc_every_class_reachable() {
    let dir = std::env::temp_dir().join(format!("rl-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let _smsc = PySmsc::start(port, &dir.join("classes.jsonl"), &[]);
    let ch = SmppChannel::start(config(port));
    assert!(ch.wait_bound(Duration::from_secs(10)).await, "bound to the Python SMSC");
    every_class_reachable(&ch).await;
}

#[tokio::test]
async fn python_smsc_throttling_recovered_and_kill_restart_sends_nothing_twice() {
    let dir = std::env::temp_dir().join(format!("rl-interop-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("accepted.jsonl");
    let _ = std::fs::remove_file(&log);
    let port = free_port();
    let mut smsc = PySmsc::start(port, &log, &["--throttle-every", "25"]);
    let ch = Arc::new(SmppChannel::start(SmppConfig {
        window: 8,
        ..config(port)
    }));
    assert!(ch.wait_bound(Duration::from_secs(10)).await);
    let mut receipts = ch.take_receipts().unwrap();
    let n = 1500u32;
    let sender = {
        let ch = ch.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..n)
                .map(|i| {
                    let ch = ch.clone();
                    let m = Outbound {
                        reference: MessageRef(format!("k{i}")),
                        to: phone(i, 0),
                        text: format!("tag{i}"),
                    };
                    async move { (i, ch.send(&m).await) }
                })
                .buffer_unordered(16)
                .collect::<Vec<_>>()
                .await
        })
    };
    while smsc.accepted().len() < 400 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    smsc.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _smsc2 = PySmsc::start(port, &log, &["--throttle-every", "25", "--id-start", "5000000"]);
    let results = sender.await.unwrap();
    let stats = ch.stats();
    assert!(
        stats.throttled.load(Ordering::Relaxed) > 0,
        "throttling was met and recovered from"
    );
    assert!(stats.binds.load(Ordering::Relaxed) >= 2, "bound again after the kill");
    // Both SMSCs wrote to the same log: it holds every part either of them took.
    let tags: Vec<String> = _smsc2.accepted().into_iter().map(|a| a.1).collect();
    // At most the window's parts were out when the SMSC died.
    let (in_doubt, taken) = crate::helpers::exactly_once_or_in_doubt(&results, &tags, n, 8);
    assert_eq!(stats.in_doubt.load(Ordering::Relaxed) as usize, in_doubt);
    eprintln!(
        "kill/restart: {n} messages, {in_doubt} in doubt ({taken} of them taken by the dead SMSC), none sent twice"
    );
    // Receipts of messages the restarted SMSC accepted (its ids start at 5,000,000) all match;
    // the first SMSC's pending receipts died with it.
    let mut after: Vec<String> = _smsc2
        .accepted()
        .into_iter()
        .filter(|a| a.2.parse::<u64>().is_ok_and(|id| id >= 5_000_000))
        .map(|a| a.1)
        .collect();
    after.sort();
    after.dedup();
    assert!(!after.is_empty(), "the restarted SMSC accepted messages");
    let got = collect(&mut receipts, "k", after.len(), Duration::from_secs(30)).await;
    assert!(
        got.len() >= after.len(),
        "receipts matched: {} of {} accepted after the restart",
        got.len(),
        after.len()
    );
}
