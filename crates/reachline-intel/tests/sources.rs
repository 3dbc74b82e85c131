//! The HTTP vendor adapter against a local HTTP server speaking a vendor's JSON, the guard's
//! cache and per-number limit, and the layered sources.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::NaiveDate;
use reachline_domain::PhoneNumber;
use reachline_intel::{
    Guarded, GuardedConfig, HttpIntel, HttpIntelConfig, IntelError, Layered, NumberIntel, QuerySpec,
};
use reachline_policy::intel::{NumberStatus, RecycleAnswer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A vendor on loopback: answers by the number's last digit, and counts requests.
async fn vendor() -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (h, s) = (hits.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (h, s) = (h.clone(), s.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                h.fetch_add(1, Ordering::SeqCst);
                let line = req.lines().next().unwrap_or("").to_string();
                s.lock().unwrap().push(req.clone());
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let digit = path
                    .split("msisdn=")
                    .nth(1)
                    .and_then(|r| r.chars().take_while(|c| c.is_ascii_digit()).last())
                    .unwrap_or('0');
                let (code, body) = if !req.contains("authorization: Bearer s3cret") {
                    ("401 Unauthorized", r#"{"error":"token"}"#.to_string())
                } else if path.starts_with("/v2/status") {
                    let state = match digit {
                        '1' => "2",
                        '2' => "3",
                        '3' => "99",
                        '9' => return, // hang up: a transport error
                        _ => "1",
                    };
                    ("200 OK", format!(r#"{{"code":0,"data":{{"state":"{state}"}}}}"#))
                } else if path.starts_with("/v2/recycle") {
                    let r = match digit {
                        '1' => "Y",
                        '2' => "U",
                        _ => "N",
                    };
                    ("200 OK", format!(r#"{{"data":{{"result":"{r}"}}}}"#))
                } else if path.starts_with("/v2/swap") {
                    (
                        "200 OK",
                        r#"{"data":{"swapped":true,"at":"2024-05-02T10:00:00Z"}}"#.to_string(),
                    )
                } else {
                    ("404 Not Found", "{}".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}"), hits, seen)
}

fn spec(path: &str, field: &str, values: &[(&str, &[&str])]) -> QuerySpec {
    QuerySpec {
        path: path.into(),
        field: field.into(),
        values: values
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect(),
        date_field: None,
    }
}

fn config(base: &str, token: &str) -> HttpIntelConfig {
    HttpIntelConfig {
        name: "acme".into(),
        base_url: base.into(),
        token: Some(token.into()),
        timeout_ms: 2_000,
        status: Some(spec(
            "/v2/status?msisdn={number}",
            "/data/state",
            &[("normal", &["1"]), ("empty", &["2"]), ("suspended", &["3"])],
        )),
        recycled: Some(spec(
            "/v2/recycle?msisdn={number}&since={since}",
            "/data/result",
            &[("yes", &["Y"]), ("no", &["N"]), ("no_data", &["U"])],
        )),
        sim_swap: Some(QuerySpec {
            date_field: Some("/data/at".into()),
            ..spec(
                "/v2/swap?msisdn={number}&since={since}",
                "/data/swapped",
                &[("yes", &["true"]), ("no", &["false"])],
            )
        }),
        ported: None,
    }
}

fn n(s: &str) -> PhoneNumber {
    PhoneNumber::parse(s).unwrap()
}

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_vendor_answers_are_mapped_by_configuration() {
    let (base, _, seen) = vendor().await;
    let v = HttpIntel::new(config(&base, "s3cret")).unwrap();
    assert_eq!(v.status(&n("+8613800001230")).await.unwrap(), NumberStatus::Normal);
    assert_eq!(v.status(&n("+8613800001231")).await.unwrap(), NumberStatus::Empty);
    assert_eq!(v.status(&n("+8613800001232")).await.unwrap(), NumberStatus::Suspended);
    // A value the table does not know is unknown, not guessed.
    assert_eq!(v.status(&n("+8613800001233")).await.unwrap(), NumberStatus::Unknown);
    let since = d("2024-01-01");
    assert_eq!(
        v.recycled_since(&n("+8613800001231"), since).await.unwrap(),
        RecycleAnswer::Yes
    );
    assert_eq!(
        v.recycled_since(&n("+8613800001232"), since).await.unwrap(),
        RecycleAnswer::NoData
    );
    assert_eq!(
        v.recycled_since(&n("+8613800001230"), since).await.unwrap(),
        RecycleAnswer::No
    );
    let swap = v.sim_swap_since(&n("+8613800001230"), since).await.unwrap();
    assert!(swap.changed);
    assert_eq!(swap.on, Some(d("2024-05-02")));
    assert!(matches!(
        v.ported_since(&n("+8613800001230"), since).await,
        Err(IntelError::Unsupported { .. })
    ));
    let seen = seen.lock().unwrap();
    assert!(seen
        .iter()
        .any(|r| r.starts_with("GET /v2/recycle?msisdn=8613800001231&since=2024-01-01 ")));
}

#[tokio::test]
async fn vendor_errors_are_clear_and_never_name_the_number() {
    let (base, _, _) = vendor().await;
    let v = HttpIntel::new(config(&base, "wrong")).unwrap();
    let e = v.status(&n("+8613800001230")).await.unwrap_err().to_string();
    assert!(e.contains("HTTP 401") && e.contains("acme"), "{e}");
    let v = HttpIntel::new(config(&base, "s3cret")).unwrap();
    let e = v.status(&n("+8613800001239")).await.unwrap_err().to_string();
    assert!(e.contains("acme: request failed"), "{e}");
    assert!(!e.contains("13800001239") && !e.contains("8613800001239"), "{e}");
    let v = HttpIntel::new(config("http://127.0.0.1:9", "s3cret")).unwrap();
    let e = v.status(&n("+8613800001230")).await.unwrap_err().to_string();
    assert!(e.contains("could not connect"), "{e}");
}

#[tokio::test]
async fn answers_are_cached_and_rapid_repeats_refused() {
    let (base, hits, _) = vendor().await;
    let cfg = GuardedConfig {
        status_ttl_secs: 3600,
        history_ttl_secs: 3600,
        min_interval_secs: 3600,
        max_entries: 100,
    };
    let g = Guarded::new(HttpIntel::new(config(&base, "s3cret")).unwrap(), cfg);
    let a = n("+8613800001231");
    assert_eq!(g.status(&a).await.unwrap(), NumberStatus::Empty);
    assert_eq!(g.status(&a).await.unwrap(), NumberStatus::Empty);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the second answer comes from the cache");
    // Another kind of query about the same number is its own lookup.
    assert_eq!(g.recycled_since(&a, d("2024-01-01")).await.unwrap(), RecycleAnswer::Yes);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // The same kind with another date is not cached, and the number was just asked about.
    let e = g.recycled_since(&a, d("2023-01-01")).await.unwrap_err();
    assert!(matches!(e, IntelError::RateLimited { .. }), "{e}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Other numbers are not held back.
    assert_eq!(g.status(&n("+8613800001230")).await.unwrap(), NumberStatus::Normal);
    assert_eq!(g.lookups(), 3);
}

#[tokio::test]
async fn layered_sources_pass_on_what_they_cannot_tell() {
    let (base, _, _) = vendor().await;
    struct Knows(RecycleAnswer);
    #[async_trait::async_trait]
    impl NumberIntel for Knows {
        fn name(&self) -> &str {
            "fixed"
        }
        async fn status(&self, _: &PhoneNumber) -> reachline_intel::Result<NumberStatus> {
            Ok(NumberStatus::Unknown)
        }
        async fn recycled_since(&self, _: &PhoneNumber, _: NaiveDate) -> reachline_intel::Result<RecycleAnswer> {
            Ok(self.0)
        }
        async fn sim_swap_since(
            &self,
            _: &PhoneNumber,
            _: NaiveDate,
        ) -> reachline_intel::Result<reachline_policy::intel::ChangeSince> {
            Err(IntelError::Unsupported {
                source_name: "fixed".into(),
                query: "sim_swap",
            })
        }
        async fn ported_since(
            &self,
            n: &PhoneNumber,
            d: NaiveDate,
        ) -> reachline_intel::Result<reachline_policy::intel::ChangeSince> {
            self.sim_swap_since(n, d).await
        }
    }
    let layered = Layered::new(vec![
        Box::new(Knows(RecycleAnswer::NoData)),
        Box::new(HttpIntel::new(config(&base, "s3cret")).unwrap()),
    ]);
    assert_eq!(layered.name(), "fixed+acme");
    // The first cannot tell; the vendor can.
    assert_eq!(
        layered
            .recycled_since(&n("+8613800001231"), d("2024-01-01"))
            .await
            .unwrap(),
        RecycleAnswer::Yes
    );
    assert_eq!(layered.status(&n("+8613800001231")).await.unwrap(), NumberStatus::Empty);
    let first_knows = Layered::new(vec![
        Box::new(Knows(RecycleAnswer::No)),
        Box::new(HttpIntel::new(config(&base, "s3cret")).unwrap()),
    ]);
    assert_eq!(
        first_knows
            .recycled_since(&n("+8613800001231"), d("2024-01-01"))
            .await
            .unwrap(),
        RecycleAnswer::No
    );
}
