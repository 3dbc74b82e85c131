//! The number-change flow end to end through the SMPP sandbox and an SMTP server (`aiosmtpd`),
//! and the attacks on it: a dead number → a contact check's link by email → the page → a code
//! on the new number → the contact replaced, the old one retired and told → the next reminder
//! to the new number; an email added with a code sent to it; a face check; then brute force, a
//! replayed link, a second change within the hour, a SIM-swapped number, another borrower's
//! change, and a reply that names a number.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use reachline_channels::peers::SmtpPeer;
use reachline_channels::smpp::sandbox::Sandbox;
use reachline_channels::smpp::{SmppChannel, SmppConfig};
use reachline_channels::smtp::{SmtpChannel, SmtpConfig};
use reachline_domain::{BorrowerId, ContactAddress, PhoneNumber};
use reachline_policy::intel::{ChangeSince, NumberStatus, RecycleAnswer};
use reachline_server::auth::Role;
use serde_json::json;

use super::{Db, Harness, SECRET};

/// A browser without JavaScript: keeps the session cookie, never follows redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookie: None,
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", format!("rl_b={c}")),
            None => req,
        };
        let r = req.send().await.unwrap();
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            if let Some(rest) = v.strip_prefix("rl_b=") {
                assert!(v.contains("HttpOnly") && v.contains("SameSite=Strict"), "{v}");
                self.cookie = Some(rest.split(';').next().unwrap().to_string());
            }
        }
        Page {
            status: r.status().as_u16(),
            location: r.headers().get("location").map(|l| l.to_str().unwrap().to_string()),
            body: r.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(self.url(path));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(self.url(path)).form(form);
        self.send(req).await
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }
}

fn csrf(html: &str) -> String {
    let re = regex::Regex::new(r#"name="csrf" value="([0-9a-f]+)""#).unwrap();
    re.captures(html).unwrap()[1].to_string()
}

/// The texts the SMSC took for a number (its national digits).
fn texts_to(sandbox: &Sandbox, digits: &str) -> Vec<String> {
    sandbox
        .messages()
        .into_iter()
        .filter(|(to, _)| to.ends_with(digits))
        .map(|(_, t)| t)
        .collect()
}

async fn texts_eventually(sandbox: &Sandbox, digits: &str, n: usize) -> Vec<String> {
    for _ in 0..100 {
        let t = texts_to(sandbox, digits);
        if t.len() >= n {
            return t;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    texts_to(sandbox, digits)
}

fn code_in(text: &str) -> String {
    regex::Regex::new(r"\d{6}")
        .unwrap()
        .find(text)
        .unwrap()
        .as_str()
        .to_string()
}

/// A server with an SMS channel to the sandbox SMSC.
async fn with_sms() -> (Harness, Sandbox) {
    with_gateways(None).await
}

/// B1's email address in the tests that have one.
const EMAIL: &str = "zhang.wei@example.com";

/// A server with SMS to the sandbox SMSC and email to an `aiosmtpd` peer; B1 has an email.
async fn with_sms_and_email() -> (Harness, Sandbox, SmtpPeer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let peer = SmtpPeer::start(dir.path()).unwrap();
    let mail = SmtpChannel::new(SmtpConfig {
        port: peer.port,
        accepted_is_delivered: true,
        ..SmtpConfig::default()
    });
    let (h, sandbox) = with_gateways(Some(Arc::new(mail))).await;
    let (s, e) = h
        .call(
            Role::Admin,
            "POST",
            "/v1/borrowers/B1/contacts",
            Some(json!({"slot": "email", "kind": "email", "role": "primary", "value": EMAIL, "bound_since": "2025-01-01"})),
        )
        .await;
    assert_eq!(s, 201, "{e}");
    (h, sandbox, peer, dir)
}

async fn with_gateways(mail: Option<Arc<dyn reachline_channels::Channel>>) -> (Harness, Sandbox) {
    let sandbox = Sandbox::start("127.0.0.1:0").await.unwrap();
    let sms = SmppChannel::start(SmppConfig {
        port: sandbox.addr().port(),
        ..SmppConfig::default()
    });
    assert!(sms.wait_bound(StdDuration::from_secs(5)).await);
    let mut channels: Vec<Arc<dyn reachline_channels::Channel>> = vec![Arc::new(sms)];
    channels.extend(mail);
    let h = Harness::start_with(Db::Sqlite, channels).await.unwrap();
    // B1 (张伟, 13812345678, L1 due 2026-12-01) may get verification messages and has a
    // backup number.
    for body in [
        json!({"purpose": "verification", "state": "granted", "source": "contract", "text_version": "v1"}),
        json!({"purpose": "collection", "state": "granted", "source": "contract", "text_version": "v1"}),
    ] {
        let (s, e) = h
            .call(Role::Admin, "POST", "/v1/borrowers/B1/consents", Some(body))
            .await;
        assert_eq!(s, 204, "{e}");
    }
    let (s, e) = h
        .call(
            Role::Admin,
            "POST",
            "/v1/borrowers/B1/contacts",
            Some(json!({"slot": "backup1", "kind": "mobile", "role": "backup", "value": "13700002220", "bound_since": "2025-01-01"})),
        )
        .await;
    assert_eq!(s, 201, "{e}");
    (h, sandbox)
}

async fn b1(h: &Harness) -> BorrowerId {
    h.stores
        .store
        .borrower_by_external_id(&reachline_domain::ExternalId::parse("B1").unwrap())
        .await
        .unwrap()
        .unwrap()
        .id
}

/// 10:00 in Shanghai on the day of `t` (inside every profile's hours).
fn morning(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().and_hms_opt(2, 0, 0).unwrap().and_utc()
}

/// The mobile number fails hard on two days: health says it is dead.
async fn kill_mobile(h: &Harness, borrower: BorrowerId, at: DateTime<Utc>) {
    let mobile = h.stores.store.contacts(borrower).await.unwrap()[0].id;
    let kind = json!({"kind": "delivery", "channel": "sms", "class": "dead"}).to_string();
    let source = json!({"source": "provider", "name": "smsc"}).to_string();
    for days in [2, 1] {
        h.stores
            .engine
            .add_evidence(borrower, Some(mobile), at - Duration::days(days), &source, &kind)
            .await
            .unwrap();
    }
}

/// Opens a session through the contact check's link that reached the backup number (or, with
/// `mail`, B1's email).
async fn session_from_check(h: &Harness, sandbox: &Sandbox, borrower: BorrowerId, now: DateTime<Utc>) -> Browser {
    session_from_check_via(h, sandbox, None, borrower, now).await
}

async fn session_from_check_via(
    h: &Harness,
    sandbox: &Sandbox,
    mail: Option<&SmtpPeer>,
    borrower: BorrowerId,
    now: DateTime<Utc>,
) -> Browser {
    kill_mobile(h, borrower, now).await;
    h.engine.plan(now).await.unwrap();
    let texts = match mail {
        Some(peer) => peer.wait_for(EMAIL, 1).await.into_iter().map(|m| m.text).collect(),
        None => texts_eventually(sandbox, "13700002220", 1).await,
    };
    let link = regex::Regex::new(r"http://[0-9.:]+/c/[A-Za-z0-9_.-]+")
        .unwrap()
        .find(texts.first().map_or("", String::as_str))
        .unwrap_or_else(|| panic!("no link in {texts:?}"))
        .as_str()
        .to_string();
    let mut b = Browser::new(&h.base);
    // A mail scanner's GET spends nothing.
    let p = b.get(&link).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(b.cookie.is_none());
    let p = b.post(&link, &[]).await;
    assert_eq!(p.status, 303, "{}", p.body);
    assert!(b.cookie.is_some());
    // The link is single use.
    let mut other = Browser::new(&h.base);
    let p = other.post(&link, &[]).await;
    assert_eq!(p.status, 410, "{}", p.body);
    assert!(p.body.contains("已使用"), "{}", p.body);
    assert!(other.cookie.is_none());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_number_is_replaced_through_a_link_by_email_and_a_code_on_the_new_number() {
    let (h, sandbox, mail, _dir) = with_sms_and_email().await;
    let borrower = b1(&h).await;
    let now = morning(Utc::now());
    let mut b = session_from_check_via(&h, &sandbox, Some(&mail), borrower, now).await;
    let checks = h
        .call(Role::Operator, "GET", "/v1/contact-checks?borrower=B1", None)
        .await
        .1;
    assert_eq!(checks[0]["state"], "confirmed", "{checks}");
    let steps: Vec<&str> = checks[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    // The link went to both other channels: the backup number and the email.
    assert_eq!(
        steps,
        [
            "check_started",
            "links_sending",
            "link_sent",
            "link_sent",
            "check_confirmed"
        ],
        "{checks}"
    );

    // The account page: the schedule, masked contacts, the forms.
    let home = b.get("/me").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(
        home.body.contains("2026-12-01") && home.body.contains("138****5678"),
        "{}",
        home.body
    );
    assert!(!home.body.contains("13812345678"), "numbers are masked");
    let token = csrf(&home.body);
    // A form without the session's token is refused.
    assert_eq!(
        b.post("/me/number", &[("csrf", "00"), ("number", "13912345678")])
            .await
            .status,
        403
    );

    let p = b
        .post("/me/number", &[("csrf", &token), ("number", "13912345678")])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let at = p.location.unwrap();
    let id: i64 = regex::Regex::new(r"/me/number/(\d+)").unwrap().captures(&at).unwrap()[1]
        .parse()
        .unwrap();
    let code = code_in(&texts_eventually(&sandbox, "13912345678", 1).await[0]);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let p = b
        .post(&format!("/me/number/{id}/code"), &[("csrf", &token), ("code", wrong)])
        .await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains("验证码错误"), "{}", p.body);
    let p = b
        .post(&format!("/me/number/{id}/code"), &[("csrf", &token), ("code", &code)])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let p = b.get(&format!("/me/number/{id}")).await;
    assert!(p.body.contains("号码已更换"), "{}", p.body);
    // The same code again changes nothing.
    let p = b
        .post(&format!("/me/number/{id}/code"), &[("csrf", &token), ("code", &code)])
        .await;
    assert_eq!(p.status, 422, "{}", p.body);

    // The new number is current and verified; the old one retired as replaced.
    let (_, contacts) = h
        .call(
            Role::Admin,
            "GET",
            "/v1/borrowers/B1/contacts?unmask=true&reason=number%20change%20test",
            None,
        )
        .await;
    let current: Vec<&serde_json::Value> = contacts
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["retired_at"].is_null())
        .collect();
    assert!(
        current
            .iter()
            .any(|c| c["address"] == "+8613912345678" && !c["verified_at"].is_null()),
        "{contacts}"
    );
    let old = contacts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "+8613812345678")
        .unwrap();
    assert_eq!(old["retired_reason"], "replaced", "{contacts}");
    // The old number was told, without a word of the debt.
    let told = texts_eventually(&sandbox, "13812345678", 1).await;
    assert!(told.iter().any(|t| t.contains("已更换")), "{told:?}");
    assert!(
        told.iter().all(|t| !t.contains("1000") && !t.contains("还款")),
        "{told:?}"
    );

    // Every step is on record, and the change's history is the operators' to read.
    let (_, change) = h
        .call(Role::Auditor, "GET", &format!("/v1/contact-changes/{id}"), None)
        .await;
    assert_eq!(change["state"], "applied", "{change}");
    assert_eq!(change["new_address"], "+86139****5678");
    assert_eq!(change["target"], "replace");
    assert_eq!(change["authorised_by"], "link");
    let steps: Vec<&str> = change["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    for s in [
        "change_started",
        "code_sent",
        "code_refused",
        "new_number_proven",
        "applied",
        "old_channel_told",
    ] {
        assert!(steps.contains(&s), "{s} in {steps:?}");
    }

    // The next reminder goes to the new number.
    let next = now + Duration::days(1);
    h.engine.step(next).await.unwrap();
    let texts = texts_eventually(&sandbox, "13912345678", 2).await;
    assert!(texts.iter().any(|t| t.contains("1000.00")), "{texts:?}");
    assert!(
        texts_to(&sandbox, "13812345678").iter().all(|t| !t.contains("1000.00")),
        "nothing more to the old number"
    );

    // A second change within the cooling period is refused, and recorded.
    let p = b
        .post("/me/number", &[("csrf", &token), ("number", "13922223333")])
        .await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains("之后才能再次更换"), "{}", p.body);
    let steps = h.stores.selfservice.steps(borrower, None, None).await.unwrap();
    assert!(steps
        .iter()
        .any(|s| s.step == "change_refused" && s.detail.as_deref().unwrap_or_default().contains("cooling_period")));
    assert!(
        texts_to(&sandbox, "13922223333").is_empty(),
        "no code for a refused change"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_is_stopped_and_another_borrowers_change_is_not_found() {
    let (h, sandbox) = with_sms().await;
    let borrower = b1(&h).await;
    let now = morning(Utc::now());
    let mut b = session_from_check(&h, &sandbox, borrower, now).await;
    let token = csrf(&b.get("/me").await.body);
    let p = b
        .post("/me/number", &[("csrf", &token), ("number", "13912345678")])
        .await;
    let id: i64 = regex::Regex::new(r"/me/number/(\d+)")
        .unwrap()
        .captures(&p.location.unwrap())
        .unwrap()[1]
        .parse()
        .unwrap();
    let code = code_in(&texts_eventually(&sandbox, "13912345678", 1).await[0]);
    let wrong: Vec<String> = (0..5)
        .map(|i| format!("{:06}", (code.parse::<u32>().unwrap() + 1 + i) % 1_000_000))
        .collect();
    for w in &wrong {
        let p = b
            .post(&format!("/me/number/{id}/code"), &[("csrf", &token), ("code", w)])
            .await;
        assert_eq!(p.status, 422, "{}", p.body);
    }
    // After five wrong guesses even the right code is refused.
    let p = b
        .post(&format!("/me/number/{id}/code"), &[("csrf", &token), ("code", &code)])
        .await;
    assert_eq!(p.status, 422);
    assert!(p.body.contains("错误次数过多"), "{}", p.body);
    assert_eq!(h.stores.selfservice.code_failures(borrower).await.unwrap(), 6);
    let current: Vec<_> = h
        .stores
        .store
        .contacts(borrower)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.is_current())
        .collect();
    assert!(
        current.iter().all(
            |c| !matches!(&c.point.address, reachline_domain::ContactAddress::Phone(p) if p.e164() == "+8613912345678")
        ),
        "nothing changed"
    );

    // Another borrower's change: not found, and the attempt recorded.
    let b2 = h
        .stores
        .store
        .borrower_by_external_id(&reachline_domain::ExternalId::parse("B2").unwrap())
        .await
        .unwrap()
        .unwrap()
        .id;
    let number = reachline_domain::PhoneParser::default().parse("13955554444").unwrap();
    let theirs = h
        .stores
        .selfservice
        .create_change(
            &reachline_store::selfservice::NewChange {
                borrower: b2,
                old_contact: None,
                new_address: &ContactAddress::Phone(number.clone()),
                source: "page",
                state: "pending",
                flow: &serde_json::to_string(&reachline_policy::change::Flow::new(
                    &Default::default(),
                    Default::default(),
                    vec![],
                    Utc::now(),
                ))
                .unwrap(),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(b.get(&format!("/me/number/{theirs}")).await.status, 404);
    let p = b
        .post(
            &format!("/me/number/{theirs}/code"),
            &[("csrf", &token), ("code", "123456")],
        )
        .await;
    assert_eq!(p.status, 404);
    let steps = h.stores.selfservice.steps(borrower, None, None).await.unwrap();
    assert_eq!(steps.iter().filter(|s| s.step == "foreign_change_refused").count(), 2);
    assert_eq!(h.stores.selfservice.change(theirs).await.unwrap().unwrap().version, 0);
    h.finish().await;
}

/// A carrier that reports a SIM swap yesterday for one number.
struct Swapped(&'static str);

#[async_trait]
impl reachline_intel::NumberIntel for Swapped {
    fn name(&self) -> &str {
        "carrier-test"
    }
    async fn status(&self, _: &PhoneNumber) -> reachline_intel::Result<NumberStatus> {
        Ok(NumberStatus::Normal)
    }
    async fn recycled_since(&self, _: &PhoneNumber, _: NaiveDate) -> reachline_intel::Result<RecycleAnswer> {
        Ok(RecycleAnswer::No)
    }
    async fn sim_swap_since(&self, n: &PhoneNumber, since: NaiveDate) -> reachline_intel::Result<ChangeSince> {
        let changed = n.e164() == self.0;
        Ok(ChangeSince {
            since,
            changed,
            on: changed.then(|| Utc::now().date_naive() - Duration::days(1)),
        })
    }
    async fn ported_since(&self, _: &PhoneNumber, since: NaiveDate) -> reachline_intel::Result<ChangeSince> {
        Ok(ChangeSince {
            since,
            changed: false,
            on: None,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sim_swapped_number_waits_for_an_operator_and_a_reply_alone_changes_nothing() {
    let (h, sandbox) = with_sms().await;
    let _ = h.server.intel.set(Arc::new(Swapped("+8613966667770")));
    let borrower = b1(&h).await;
    let now = morning(Utc::now());
    let mut b = session_from_check(&h, &sandbox, borrower, now).await;
    let token = csrf(&b.get("/me").await.body);
    let p = b
        .post("/me/number", &[("csrf", &token), ("number", "13966667770")])
        .await;
    let at = p.location.unwrap_or_else(|| panic!("{}", p.body));
    let id: i64 = regex::Regex::new(r"/me/number/(\d+)").unwrap().captures(&at).unwrap()[1]
        .parse()
        .unwrap();
    let code = code_in(&texts_eventually(&sandbox, "13966667770", 1).await[0]);
    b.post(&format!("/me/number/{id}/code"), &[("csrf", &token), ("code", &code)])
        .await;
    let p = b.get(&format!("/me/number/{id}?lang=en")).await;
    assert!(p.body.contains("reviewed by our staff"), "{}", p.body);
    // In the review queue, with its risk; the number not yet changed.
    let (_, queue) = h
        .call(Role::Operator, "GET", "/v1/contact-changes?state=review", None)
        .await;
    assert_eq!(queue[0]["id"], id, "{queue}");
    assert_eq!(queue[0]["risks"], json!(["sim_swap"]));
    // An integration token may read but not decide; an operator decides, with a reason code.
    let (s, _) = h
        .call(
            Role::Integration,
            "POST",
            &format!("/v1/contact-changes/{id}/approve"),
            Some(json!({"reason": "called_borrower"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, e) = h
        .call(
            Role::Operator,
            "POST",
            &format!("/v1/contact-changes/{id}/reject"),
            Some(json!({"reason": "suspected_fraud"})),
        )
        .await;
    assert_eq!((s, &e["state"]), (200, &json!("rejected")), "{e}");
    let (s, _) = h
        .call(
            Role::Operator,
            "POST",
            &format!("/v1/contact-changes/{id}/approve"),
            Some(json!({"reason": "changed_mind"})),
        )
        .await;
    assert_eq!(s, 409, "a decided change stays decided");
    let current = h.stores.store.contacts(borrower).await.unwrap();
    assert!(current.iter().all(
        |c| !matches!(&c.point.address, reachline_domain::ContactAddress::Phone(p) if p.e164() == "+8613966667770")
    ));

    // B2 replies from their number naming a new one: a link goes to it; nothing changes yet.
    let (s, _) = h
        .call(
            Role::Admin,
            "POST",
            "/v1/borrowers/B2/consents",
            Some(json!({"purpose": "verification", "state": "granted", "source": "contract", "text_version": "v1"})),
        )
        .await;
    assert_eq!(s, 204);
    let body = json!({"from": "13900001111", "text": "我换号了，新号码是13955556660"}).to_string();
    let ts = Utc::now().timestamp();
    let (s, a) = h
        .webhook(
            "replies",
            &body,
            ts,
            Some(reachline_channels::webhook::sign(
                SECRET.as_bytes(),
                ts,
                body.as_bytes(),
            )),
        )
        .await;
    assert_eq!(s, 200, "{a}");
    let texts = texts_eventually(&sandbox, "13955556660", 1).await;
    assert!(texts[0].contains("/c/"), "{texts:?}");
    let (_, changes) = h
        .call(Role::Operator, "GET", "/v1/contact-changes?borrower=B2", None)
        .await;
    assert_eq!(
        (changes[0]["source"].as_str(), changes[0]["state"].as_str()),
        (Some("reply"), Some("pending")),
        "{changes}"
    );
    let b2 = h
        .stores
        .store
        .borrower_by_external_id(&reachline_domain::ExternalId::parse("B2").unwrap())
        .await
        .unwrap()
        .unwrap()
        .id;
    assert_eq!(
        h.stores
            .store
            .contacts(b2)
            .await
            .unwrap()
            .iter()
            .filter(|c| c.is_current())
            .count(),
        1,
        "the reply alone changes no contact"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_a_notice_needs_a_code_on_another_channel_to_change_the_number() {
    let (h, sandbox) = with_sms().await;
    let borrower = b1(&h).await;
    let contacts = h.stores.store.contacts(borrower).await.unwrap();
    let (mobile, backup) = (contacts[0].id, contacts[1].id);
    let token = notice_token(&h, borrower).await;
    let mut b = Browser::new(&h.base);
    let p = b.get(&format!("/n/{token}")).await;
    assert!(
        p.body.contains("已确认收到通知") && p.body.contains("1000.00"),
        "{}",
        p.body
    );
    // The wrong name and ID: nothing, and a failure counted.
    let p = b
        .post(
            &format!("/n/{token}/identify"),
            &[("name", "李四"), ("national_id", "11010519491231002X")],
        )
        .await;
    assert_eq!(p.status, 422);
    assert!(b.cookie.is_none());
    assert_eq!(h.stores.selfservice.code_failures(borrower).await.unwrap(), 1);
    let p = b
        .post(
            &format!("/n/{token}/identify"),
            &[("name", "张伟"), ("national_id", "11010519491231002x")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let token = csrf(&b.get("/me").await.body);
    let p = b
        .post("/me/number", &[("csrf", &token), ("number", "13912345678")])
        .await;
    let id: i64 = regex::Regex::new(r"/me/number/(\d+)")
        .unwrap()
        .captures(&p.location.unwrap_or_else(|| panic!("{}", p.body)))
        .unwrap()[1]
        .parse()
        .unwrap();
    let code = code_in(&texts_eventually(&sandbox, "13912345678", 1).await[0]);
    let p = b
        .post(
            &format!("/me/number/{id}/code"),
            &[("csrf", &token), ("code", &code), ("which", "new")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    // Proven, but a name and an ID number authorise nothing: a code to the backup number must.
    let p = b.get(&format!("/me/number/{id}?lang=en")).await;
    assert!(
        p.body.contains("still need to know it is you") && p.body.contains("137****2220"),
        "{}",
        p.body
    );
    assert!(!p.body.contains("138****5678"), "not to the number being replaced");
    let p = b
        .post(
            &format!("/me/number/{id}/factor"),
            &[("csrf", &token), ("contact", &mobile.0.to_string())],
        )
        .await;
    assert_eq!(p.status, 404, "the number being replaced is no factor");
    let p = b
        .post(
            &format!("/me/number/{id}/factor"),
            &[("csrf", &token), ("contact", &backup.0.to_string())],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let factor = code_in(&texts_eventually(&sandbox, "13700002220", 1).await[0]);
    let p = b
        .post(
            &format!("/me/number/{id}/code"),
            &[("csrf", &token), ("code", &factor), ("which", "factor")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let (_, change) = h
        .call(Role::Operator, "GET", &format!("/v1/contact-changes/{id}"), None)
        .await;
    assert_eq!(
        (change["state"].as_str(), change["authorised_by"].as_str()),
        (Some("applied"), Some("code")),
        "{change}"
    );
    h.finish().await;
}

fn change_id(location: Option<String>, body: &str) -> i64 {
    regex::Regex::new(r"/me/number/(\d+)")
        .unwrap()
        .captures(&location.unwrap_or_else(|| panic!("{body}")))
        .unwrap()[1]
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_is_added_with_a_code_sent_to_it_and_the_other_channels_are_told() {
    let (h, sandbox, mail, _dir) = with_sms_and_email().await;
    let borrower = b1(&h).await;
    let now = morning(Utc::now());
    let mut b = session_from_check(&h, &sandbox, borrower, now).await;
    let home = b.get("/me?lang=en").await;
    assert!(
        home.body.contains("Add an email address") && home.body.contains("Add a backup mobile number"),
        "{}",
        home.body
    );
    let token = csrf(&home.body);
    let p = b
        .post(
            "/me/number",
            &[("csrf", &token), ("target", "add_email"), ("email", "not an address")],
        )
        .await;
    assert_eq!(p.status, 422, "{}", p.body);
    let p = b
        .post(
            "/me/number",
            &[
                ("csrf", &token),
                ("target", "add_email"),
                ("email", "Zhang.Wei.New@Example.com"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let id = change_id(p.location, &p.body);
    let sent = mail.wait_for("Zhang.Wei.New@example.com", 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let code = code_in(&sent[0].text);
    let p = b
        .post(&format!("/me/number/{id}/code"), &[("csrf", &token), ("code", &code)])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let p = b.get(&format!("/me/number/{id}?lang=en")).await;
    assert!(p.body.contains("Added."), "{}", p.body);

    // The email is a current, verified contact point of its own; nothing was retired.
    let contacts = h.stores.store.contacts(borrower).await.unwrap();
    let added: Vec<_> = contacts
        .iter()
        .filter(|c| c.point.address.canonical() == "Zhang.Wei.New@example.com")
        .collect();
    assert_eq!(added.len(), 1, "{contacts:?}");
    assert!(added[0].is_current() && added[0].point.verified_at.is_some());
    assert_eq!(added[0].point.kind, reachline_domain::ContactKind::Email);
    assert_eq!(
        added[0].point.role,
        reachline_domain::ContactRole::Backup,
        "B1 had an email"
    );
    assert!(contacts.iter().all(|c| c.is_current()), "an addition retires nothing");
    // The other channels are told a contact was added: the backup number and the old email.
    assert!(
        texts_eventually(&sandbox, "13700002220", 2)
            .await
            .iter()
            .any(|t| t.contains("新增了一个联系方式")),
        "{:?}",
        texts_to(&sandbox, "13700002220")
    );
    assert!(mail
        .wait_for(EMAIL, 2)
        .await
        .iter()
        .any(|m| m.text.contains("新增了一个联系方式")));
    let (_, change) = h
        .call(Role::Operator, "GET", &format!("/v1/contact-changes/{id}"), None)
        .await;
    assert_eq!(
        (
            change["target"].as_str(),
            change["state"].as_str(),
            change["new_address"].as_str()
        ),
        (Some("add_email"), Some("applied"), Some("Z***@example.com")),
        "{change}"
    );

    // Another addition within the cooling period is refused, and nothing is sent.
    let p = b
        .post(
            "/me/number",
            &[("csrf", &token), ("target", "add_backup"), ("number", "13955556660")],
        )
        .await;
    assert_eq!(p.status, 422, "{}", p.body);
    assert!(texts_to(&sandbox, "13955556660").is_empty());
    h.finish().await;
}

/// The link token of a reminder queued for the borrower's mobile now.
async fn notice_token(h: &Harness, borrower: BorrowerId) -> String {
    use reachline_store::engine::{NewSend, PlanWrite};
    let contacts = h.stores.store.contacts(borrower).await.unwrap();
    let mobile = contacts[0].id;
    let loan = h.stores.store.loans(borrower).await.unwrap()[0].id;
    let inst = h.stores.store.installments(loan).await.unwrap()[0].id;
    let now = Utc::now();
    h.stores
        .engine
        .write_plan(PlanWrite {
            at: Some(now),
            sends: vec![NewSend {
                idem_key: format!("{}/0/pre_due/{}/sms/0", inst.0, mobile.0),
                borrower,
                installment: inst,
                step: 0,
                kind: "pre_due".into(),
                rung: 0,
                contact: mobile,
                channel: reachline_domain::Channel::Sms,
                third_party: false,
                not_before: now,
            }],
            ..PlanWrite::default()
        })
        .await
        .unwrap();
    let notice = h
        .stores
        .engine
        .attempts(&reachline_store::engine::AttemptFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()[0]
        .id;
    reachline_policy::codes::notice_token(&h.engine.config().link_key, notice as u64)
}

/// A session from a notice's page, opened with the borrower's name and ID (no factor).
async fn session_from_notice(h: &Harness, borrower: BorrowerId) -> Browser {
    let token = notice_token(h, borrower).await;
    let mut b = Browser::new(&h.base);
    let p = b
        .post(
            &format!("/n/{token}/identify"),
            &[("name", "张伟"), ("national_id", "11010519491231002X")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    b
}

/// A multipart form with the session's CSRF token and a photo.
async fn post_photo(b: &mut Browser, path: &str, csrf: &str, photo: Vec<u8>) -> Page {
    let form = reqwest::multipart::Form::new().text("csrf", csrf.to_string()).part(
        "photo",
        reqwest::multipart::Part::bytes(photo)
            .file_name("me.jpg")
            .mime_str("image/jpeg")
            .unwrap(),
    );
    let req = b.http.post(b.url(path)).multipart(form);
    b.send(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_face_check_authorises_a_change_and_a_stranger_s_face_changes_nothing() {
    use sha2::{Digest, Sha256};
    let (h, sandbox) = with_sms().await;
    let borrower = b1(&h).await;
    // A phone camera's photo: larger than any other form the server takes (64 KiB here).
    let mut mine = vec![0xFF, 0xD8, 0xFF, 0xE0];
    mine.extend(std::iter::repeat_n(7u8, 300 * 1024));
    let mut stranger = mine.clone();
    stranger[4] = 8;
    let _ = h
        .server
        .identity
        .set(Arc::new(reachline_server::identity::SandboxIdentity {
            // The carrier says the new number is not the borrower's: the three-factor check fails.
            others: ["+8613912345678".to_string()].into(),
            other_faces: [hex::encode(Sha256::digest(&stranger))].into(),
        }));
    let mut b = session_from_notice(&h, borrower).await;
    let token = csrf(&b.get("/me").await.body);
    let p = b
        .post("/me/number", &[("csrf", &token), ("number", "13912345678")])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let id = change_id(p.location, &p.body);
    let code = code_in(&texts_eventually(&sandbox, "13912345678", 1).await[0]);
    let p = b
        .post(&format!("/me/number/{id}/code"), &[("csrf", &token), ("code", &code)])
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let p = b.get(&format!("/me/number/{id}?lang=en")).await;
    assert!(
        p.body.contains("face check") && p.body.contains(r#"enctype="multipart/form-data""#),
        "{}",
        p.body
    );

    // Without the session's token: refused. A stranger's face: refused, counted, nothing changed.
    let path = format!("/me/number/{id}/face");
    assert_eq!(post_photo(&mut b, &path, "00", mine.clone()).await.status, 403);
    let failures = h.stores.selfservice.code_failures(borrower).await.unwrap();
    let p = post_photo(&mut b, &path, &token, stranger).await;
    assert_eq!(p.status, 422, "{}", p.body);
    assert!(p.body.contains("人脸识别未通过"), "{}", p.body);
    assert_eq!(
        h.stores.selfservice.code_failures(borrower).await.unwrap(),
        failures + 1
    );
    let p = post_photo(&mut b, &path, &token, b"not a photo".to_vec()).await;
    assert_eq!(p.status, 422, "{}", p.body);
    let (_, change) = h
        .call(Role::Operator, "GET", &format!("/v1/contact-changes/{id}"), None)
        .await;
    assert_eq!(change["state"], "pending", "{change}");

    // The borrower's face: the change is authorised and applied.
    let p = post_photo(&mut b, &path, &token, mine).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let (_, change) = h
        .call(Role::Operator, "GET", &format!("/v1/contact-changes/{id}"), None)
        .await;
    assert_eq!(
        (change["state"].as_str(), change["authorised_by"].as_str()),
        (Some("applied"), Some("identity_check")),
        "{change}"
    );
    let verdicts: Vec<String> = change["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "identity_checked")
        .map(|s| s["detail"].to_string())
        .collect();
    assert_eq!(verdicts.len(), 3, "stranger, not a photo, match: {verdicts:?}");
    assert!(verdicts.iter().any(|v| v.contains("mismatch")) && verdicts.last().unwrap().contains("match"));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_channels_and_quiet_hours_set_on_the_page_steer_the_next_notice() {
    let (h, _sandbox, mail, _dir) = with_sms_and_email().await;
    let borrower = b1(&h).await;
    let mut b = session_from_notice(&h, borrower).await;
    let token = csrf(&b.get("/me").await.body);
    // Quiet hours longer than 16 hours are refused, and nothing is kept.
    let p = b
        .post(
            "/me/preferences",
            &[
                ("csrf", &token),
                ("first", "email"),
                ("quiet_from", "6"),
                ("quiet_to", "23"),
            ],
        )
        .await;
    assert_eq!(p.status, 422, "{}", p.body);
    assert_eq!(
        h.stores.selfservice.preferences(borrower).await.unwrap(),
        reachline_domain::Preferences::default()
    );
    let p = b
        .post(
            "/me/preferences",
            &[
                ("csrf", &token),
                ("first", "email"),
                ("second", "sms"),
                ("quiet_from", "21"),
                ("quiet_to", "12"),
            ],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.body);
    let home = b.get(p.location.as_deref().unwrap()).await;
    assert!(home.body.contains("已保存"), "{}", home.body);
    assert!(
        home.body.contains(r#"<option value="email" selected>"#),
        "{}",
        home.body
    );
    let prefs = h.stores.selfservice.preferences(borrower).await.unwrap();
    assert_eq!(
        prefs.channels,
        [reachline_domain::Channel::Email, reachline_domain::Channel::Sms]
    );
    assert_eq!(prefs.quiet.unwrap().minutes(), 15 * 60);
    let steps = h.stores.selfservice.steps(borrower, None, None).await.unwrap();
    assert!(steps.iter().any(|s| s.step == "preferences_set"), "{steps:?}");

    // Tomorrow at 10:00 the borrower's quiet hours hold the reminder; at 12:30 it goes, by email.
    let notices = |peer: &SmtpPeer| {
        peer.received()
            .into_iter()
            .filter(|m| m.to == EMAIL && m.text.contains("1000.00"))
            .count()
    };
    let tomorrow = morning(Utc::now()) + Duration::days(1);
    h.engine.step(tomorrow).await.unwrap();
    assert_eq!(notices(&mail), 0, "{:?}", mail.received());
    h.engine.step(tomorrow + Duration::minutes(150)).await.unwrap();
    assert_eq!(
        mail.wait_for(EMAIL, 1)
            .await
            .iter()
            .filter(|m| m.text.contains("1000.00"))
            .count(),
        1
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_starts_a_check_and_the_borrower_vouches_for_their_numbers() {
    let (h, sandbox) = with_sms().await;
    let borrower = b1(&h).await;
    let contacts = h.stores.store.contacts(borrower).await.unwrap();
    let (mobile, backup) = (contacts[0].id, contacts[1].id);
    // The borrower called: their mobile is gone. The operator starts a check on it; the link
    // goes to the backup number at once, whatever the hour.
    let (st, check) = h
        .call(
            Role::Operator,
            "POST",
            "/v1/borrowers/B1/contact-checks",
            Some(json!({"contact_id": mobile.0})),
        )
        .await;
    assert_eq!(st, 201, "{check}");
    assert_eq!(
        (check["state"].as_str(), check["reason"].as_str()),
        (Some("open"), Some("requested"))
    );
    let steps: Vec<&str> = check["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["check_started", "links_sending", "link_sent"], "{check}");
    assert!(
        check["steps"][0]["actor"].as_str().unwrap().starts_with("token:"),
        "{check}"
    );
    let texts = texts_eventually(&sandbox, "13700002220", 1).await;
    let link = regex::Regex::new(r"http://[0-9.:]+/c/[A-Za-z0-9_.-]+")
        .unwrap()
        .find(&texts[0])
        .unwrap()
        .as_str()
        .to_string();
    // Asked again while it is open: the same check, no second link.
    let (st, again) = h
        .call(
            Role::Operator,
            "POST",
            "/v1/borrowers/B1/contact-checks",
            Some(json!({})),
        )
        .await;
    assert_eq!((st, &again["id"]), (201, &check["id"]), "{again}");
    assert_eq!(texts_to(&sandbox, "13700002220").len(), 1);
    // Not a contact point of this borrower; an auditor may not start one.
    let (st, _) = h
        .call(
            Role::Operator,
            "POST",
            "/v1/borrowers/B1/contact-checks",
            Some(json!({"contact_id": 999_999})),
        )
        .await;
    assert_eq!(st, 422);
    let (st, _) = h
        .call(
            Role::Auditor,
            "POST",
            "/v1/borrowers/B1/contact-checks",
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 403);

    // The link signs the borrower in with a factor: they may vouch for their numbers.
    let mut b = Browser::new(&h.base);
    assert_eq!(b.post(&link, &[]).await.status, 303);
    let home = b.get("/me?lang=en").await;
    assert!(
        home.body.contains("No longer mine") && home.body.contains("Still mine"),
        "{}",
        home.body
    );
    let token = csrf(&home.body);
    for (contact, report) in [(mobile, "not_mine"), (backup, "still_mine")] {
        let p = b
            .post(
                "/me/contact",
                &[
                    ("csrf", &token),
                    ("contact", &contact.0.to_string()),
                    ("report", report),
                ],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.body);
    }
    let day = Utc::now().date_naive();
    let view = h.stores.engine.views(&[borrower], day, day).await.unwrap().remove(0);
    let said = |c: reachline_domain::ContactId, what: &str| {
        view.evidence
            .iter()
            .any(|e| e.contact == Some(c) && e.kind.contains(what) && e.source.contains("borrower"))
    };
    assert!(
        said(mobile, "not_mine") && said(backup, "still_mine"),
        "{:?}",
        view.evidence
    );
    // Another borrower's contact point is not theirs to speak for.
    let b2 = h
        .stores
        .store
        .borrower_by_external_id(&reachline_domain::ExternalId::parse("B2").unwrap())
        .await
        .unwrap()
        .unwrap()
        .id;
    let theirs = h.stores.store.contacts(b2).await.unwrap()[0].id;
    let p = b
        .post(
            "/me/contact",
            &[
                ("csrf", &token),
                ("contact", &theirs.0.to_string()),
                ("report", "not_mine"),
            ],
        )
        .await;
    assert_eq!(p.status, 404);

    // A session opened with name and ID alone has no factor: no buttons, and the form is refused.
    let mut n = session_from_notice(&h, borrower).await;
    let home = n.get("/me?lang=en").await;
    assert!(!home.body.contains("No longer mine"), "{}", home.body);
    let token = csrf(&home.body);
    let p = n
        .post(
            "/me/contact",
            &[
                ("csrf", &token),
                ("contact", &backup.0.to_string()),
                ("report", "not_mine"),
            ],
        )
        .await;
    assert_eq!(p.status, 403);
    h.finish().await;
}

/// Logs an operator in through the login form; the session's cookie header.
async fn operator_session(h: &Harness, login: &str, role: &str) -> String {
    super::add_operator(h, login, role).await;
    let mut b = Browser::new(&h.base);
    let page = b.http.get(b.url("/login")).send().await.unwrap();
    let csrf_cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .unwrap()
                .strip_prefix("rl_login_csrf=")
                .map(|v| v.split(';').next().unwrap().to_string())
        })
        .unwrap();
    let r = b
        .http
        .post(b.url("/login"))
        .header("cookie", format!("rl_login_csrf={csrf_cookie}"))
        .form(&[
            ("login", login),
            ("password", "correct-horse-battery"),
            ("csrf", &csrf_cookie),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .unwrap()
                .strip_prefix("rl_session=")
                .map(|v| v.split(';').next().unwrap().to_string())
        })
        .unwrap();
    b.cookie = None;
    format!("rl_session={session}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_decide_held_changes_and_plan_requests_on_the_dashboard() {
    use reachline_policy::change::{ChangeTarget, Factor, Flow, Risk};
    let (h, _sandbox) = with_sms().await;
    let borrower = b1(&h).await;
    let mobile = h.stores.store.contacts(borrower).await.unwrap()[0].id;
    // A change with both proofs in, held because the new number's SIM was swapped.
    let mut flow = Flow::new(
        &Default::default(),
        ChangeTarget::Replace,
        vec![Risk::SimSwap],
        Utc::now(),
    );
    flow.new_number_proven = true;
    flow.authorised_by = Some(Factor::Link { contact: mobile.0 });
    let number = PhoneNumber::parse("13912345678").unwrap();
    let id = h
        .stores
        .selfservice
        .create_change(
            &reachline_store::selfservice::NewChange {
                borrower,
                old_contact: Some(mobile),
                new_address: &ContactAddress::Phone(number),
                source: "page",
                state: "review",
                flow: &serde_json::to_string(&flow).unwrap(),
            },
            Utc::now(),
        )
        .await
        .unwrap();
    let loan = h.stores.store.loans(borrower).await.unwrap()[0].id;
    let plan = h
        .stores
        .selfservice
        .add_plan_request(borrower, loan, "extension", "我下个月才发工资", Utc::now())
        .await
        .unwrap();

    let ops = operator_session(&h, "ops", "operator").await;
    let audit = operator_session(&h, "audit", "auditor").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |cookie: &str| {
        http.get(format!("{}/queue", h.base))
            .header("cookie", cookie.to_string())
            .send()
    };
    let html = get(&ops).await.unwrap().text().await.unwrap();
    // The overview shows this node's providers and their state; so does /metrics.
    let overview = http
        .get(format!("{}/", h.base))
        .header("cookie", ops.clone())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        overview.contains("Providers on this node") && overview.contains("<td>sms</td><td>smsc</td><td>up</td>"),
        "{overview}"
    );
    let (_, metrics) = h.metrics().await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"reachline_gateway_provider_state{channel="sms",provider="smsc",state="up"} 1"#),
        "{metrics}"
    );
    assert!(
        html.contains("Changes held for review") && html.contains("sim_swap"),
        "{html}"
    );
    assert!(
        html.contains("+86139****5678") && !html.contains("13912345678"),
        "masked"
    );
    assert!(html.contains("<td>B1</td>"), "the lender's borrower id: {html}");
    assert!(
        !html.contains("发工资"),
        "the borrower's words stay behind the logged API"
    );
    assert!(html.contains(&format!("/queue/changes/{id}")) && html.contains(&format!("/queue/plans/{plan}")));
    // An auditor sees the queue but gets no forms, and may not post one.
    let audit_html = get(&audit).await.unwrap().text().await.unwrap();
    assert!(
        audit_html.contains("sim_swap") && !audit_html.contains("/queue/changes/"),
        "{audit_html}"
    );
    let post = |cookie: &str, path: String, form: Vec<(&'static str, String)>| {
        http.post(format!("{}{path}", h.base))
            .header("cookie", cookie.to_string())
            .form(&form)
            .send()
    };
    let token = csrf(&html);
    let audit_token = csrf(&audit_html);
    let decision = |csrf: &str, d: &'static str| {
        vec![
            ("csrf", csrf.to_string()),
            ("decision", d.to_string()),
            ("reason", "called_borrower".to_string()),
        ]
    };
    let r = post(
        &audit,
        format!("/queue/changes/{id}"),
        decision(&audit_token, "approve"),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = post(&ops, format!("/queue/changes/{id}"), decision("00", "approve"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "the session's CSRF token is needed");
    let mut bad_reason = decision(&token, "approve");
    bad_reason[2].1 = "Called her!".into();
    let r = post(&ops, format!("/queue/changes/{id}"), bad_reason).await.unwrap();
    assert_eq!(r.status().as_u16(), 422, "a reason is a short code");
    let (_, change) = h
        .call(Role::Operator, "GET", &format!("/v1/contact-changes/{id}"), None)
        .await;
    assert_eq!(change["state"], "review", "nothing was decided yet");

    let r = post(&ops, format!("/queue/changes/{id}"), decision(&token, "approve"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let (_, change) = h
        .call(Role::Operator, "GET", &format!("/v1/contact-changes/{id}"), None)
        .await;
    assert_eq!(
        (
            change["state"].as_str(),
            change["decided_by"].as_str(),
            change["decision_reason"].as_str()
        ),
        (Some("applied"), Some("operator:ops"), Some("called_borrower")),
        "{change}"
    );
    assert!(h
        .stores
        .store
        .contacts(borrower)
        .await
        .unwrap()
        .iter()
        .any(|c| c.is_current() && c.point.address.canonical() == "+8613912345678"));
    // Decided once: a second decision is refused.
    let r = post(&ops, format!("/queue/changes/{id}"), decision(&token, "reject"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);

    let r = post(&ops, format!("/queue/plans/{plan}"), decision(&token, "accepted"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let (_, plans) = h
        .call(Role::Operator, "GET", "/v1/plan-requests?state=accepted", None)
        .await;
    assert_eq!(plans[0]["decided_by"], "operator:ops", "{plans}");
    let html = get(&ops).await.unwrap().text().await.unwrap();
    assert!(!html.contains(&format!("/queue/changes/{id}")) && !html.contains(&format!("/queue/plans/{plan}")));
    h.finish().await;
}
