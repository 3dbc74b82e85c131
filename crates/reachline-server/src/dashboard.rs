//! The operator dashboard: server-rendered pages, no JavaScript, no CDN. Operators log in with a
//! password (argon2) and get a session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` when the
//! server says it is behind TLS); every form carries a CSRF token (the session's, or before
//! login a double-submit cookie). Numbers are aggregates; nothing personal is shown.

use std::fmt::Write;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{Duration, NaiveDate};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::{allows, verify_secret, Permission, Role};
use crate::charts::{bars, esc, lines};
use crate::AppState;

const SESSION: &str = "rl_session";
const LOGIN_CSRF: &str = "rl_login_csrf";
/// How long a session lasts.
const SESSION_HOURS: i64 = 8;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/verify", get(verify_page))
}

pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(s: &crate::Server, name: &str, value: &str, max_age: i64) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if s.config.secure_cookies || s.config.tls_cert.is_some() {
            "; Secure"
        } else {
            ""
        }
    )
}

pub(crate) fn digest(session: &str) -> [u8; 32] {
    Sha256::digest(session.as_bytes()).into()
}

/// The logged-in operator, or where to send the browser instead.
pub(crate) struct Operator {
    pub(crate) login: String,
    pub(crate) role: Role,
    pub(crate) csrf: String,
}

/// Whether a form's token is the session's (compared in constant time).
pub(crate) fn csrf_matches(op: &Operator, given: &str) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(op.csrf.as_bytes(), given.as_bytes()))
}

pub(crate) async fn operator(s: &crate::Server, headers: &HeaderMap) -> Result<Operator, Response> {
    let to_login = || Redirect::to("/login").into_response();
    let Some(c) = cookie(headers, SESSION) else {
        return Err(to_login());
    };
    let rec = s
        .stores
        .server
        .session(digest(&c), s.now())
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE.into_response())?
        .ok_or_else(to_login)?;
    let role = Role::parse(&rec.role).ok_or_else(to_login)?;
    if !allows(role, Permission::ReadReport) {
        return Err((
            StatusCode::FORBIDDEN,
            page("Not allowed", "", "<p>This role does not see the dashboard.</p>"),
        )
            .into_response());
    }
    Ok(Operator {
        login: rec.login,
        role,
        csrf: rec.csrf,
    })
}

pub(crate) fn page(title: &str, nav: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t} · Reachline</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; margin: 0; color: #111; background: #fafafa; }}
header {{ background: #10324a; color: #fff; padding: .6rem 1rem; display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }}
header a, header button {{ color: #fff; }}
main {{ padding: 1rem; max-width: 1200px; margin: auto; display: grid; gap: 1rem; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); }}
section {{ background: #fff; border: 1px solid #ccc; border-radius: 6px; padding: .8rem; }}
h1 {{ font-size: 1.2rem; margin: 0; }} h2 {{ font-size: 1.05rem; margin: 0 0 .5rem; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9rem; }} td, th {{ border-bottom: 1px solid #ddd; padding: .25rem .4rem; text-align: left; }}
td.n, th.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
svg.chart text {{ font-size: 12px; fill: #222; }} svg .empty {{ fill: #666; }}
label {{ display: block; margin: .5rem 0 .2rem; font-weight: 600; }}
input, button {{ font-size: 1rem; padding: .6rem; min-height: 44px; box-sizing: border-box; }}
input {{ width: 100%; border: 1px solid #555; border-radius: 4px; }}
button {{ background: #10324a; color: #fff; border: 0; border-radius: 4px; cursor: pointer; }}
header button {{ background: transparent; border: 1px solid #fff; min-height: 36px; padding: .2rem .6rem; }}
pre {{ white-space: pre-wrap; word-break: break-all; font-size: .8rem; }}
.ok {{ color: #006400; font-weight: 600; }} .bad {{ color: #a00000; font-weight: 600; }}
.login {{ max-width: 380px; margin: 3rem auto; display: block; }}
</style></head>
<body><header><h1>Reachline</h1>{nav}</header>
{body}
</body></html>"#,
        t = esc(title)
    ))
}

pub(crate) fn nav(op: &Operator) -> String {
    format!(
        r#"<nav><a href="/">Overview</a> · <a href="/queue">Work queue</a> · <a href="/verify">Verify a notice</a> · <a href="/docs/">API</a></nav>
<form method="post" action="/logout" style="margin-left:auto"><span>{} ({})</span> <input type="hidden" name="csrf" value="{}"><button>Log out</button></form>"#,
        esc(&op.login),
        op.role.as_str(),
        esc(&op.csrf)
    )
}

async fn login_page(State(s): State<AppState>) -> Response {
    let csrf = random_hex(16);
    login_form(&s, &csrf, None)
}

fn login_form(s: &crate::Server, csrf: &str, error: Option<&str>) -> Response {
    let err = error
        .map(|e| format!(r#"<p class="bad" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let body = format!(
        r#"<main><section class="login"><h2>Operator login</h2>{err}
<form method="post" action="/login">
<label for="login">Login</label><input id="login" name="login" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="csrf" value="{csrf}">
<p><button type="submit">Log in</button></p></form></section></main>"#
    );
    (
        if error.is_some() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        },
        [(header::SET_COOKIE, set_cookie(s, LOGIN_CSRF, csrf, 600))],
        page("Log in", "", &body),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    login: String,
    password: String,
    csrf: String,
}

async fn login(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<LoginForm>) -> Response {
    let fresh = random_hex(16);
    let expected = cookie(&headers, LOGIN_CSRF).unwrap_or_default();
    if expected.is_empty() || !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), f.csrf.as_bytes())) {
        return login_form(&s, &fresh, Some("The form expired; please log in again."));
    }
    let op = match s.stores.server.operator(&f.login).await {
        Ok(op) => op,
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    // An unknown login costs the same argon2 verification as a wrong password.
    const DUMMY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$Ue3XBeqM1J9C8O0MhF6m0Hl6l3m0Yh2mX2mYwYx8xZQ";
    let (hash, live) = match &op {
        Some(o) => (o.hash.clone(), o.disabled_at.is_none()),
        None => (DUMMY.to_string(), false),
    };
    let password = f.password.clone();
    let ok = tokio::task::spawn_blocking(move || verify_secret(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(op) = op.filter(|_| ok && live) else {
        tracing::info!("a dashboard login failed");
        return login_form(&s, &fresh, Some("Wrong login or password."));
    };
    let session = random_hex(32);
    let now = s.now();
    if s.stores
        .server
        .create_session(
            digest(&session),
            &op.login,
            &random_hex(16),
            now,
            now + Duration::hours(SESSION_HOURS),
        )
        .await
        .is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut r = Redirect::to("/").into_response();
    let h = r.headers_mut();
    for c in [
        set_cookie(&s, SESSION, &session, SESSION_HOURS * 3600),
        set_cookie(&s, LOGIN_CSRF, "", 0),
    ] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let op = match operator(&s, &headers).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    if !csrf_matches(&op, &f.csrf) {
        return (
            StatusCode::FORBIDDEN,
            "the form's CSRF token does not match the session",
        )
            .into_response();
    }
    if let Some(c) = cookie(&headers, SESSION) {
        let _ = s.stores.server.end_session(digest(&c)).await;
    }
    (
        [(header::SET_COOKIE, set_cookie(&s, SESSION, "", 0))],
        Redirect::to("/login"),
    )
        .into_response()
}

fn money(minor: i64, currency: &str) -> String {
    match currency.parse::<reachline_domain::Currency>() {
        Ok(c) => reachline_domain::Money::from_minor(minor, c).to_string(),
        Err(_) => format!("{minor} {currency}"),
    }
}

/// Sums counts by key, keys in the order they first appear (the rows come sorted by week or
/// product; the chart keeps that order).
fn totals(items: impl Iterator<Item = (String, u64)>) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for (k, n) in items {
        match out.iter_mut().find(|(o, _)| *o == k) {
            Some(t) => t.1 += n,
            None => out.push((k, n)),
        }
    }
    out
}

pub(crate) fn table(head: &[&str], rows: &[Vec<String>], numeric_from: usize) -> String {
    let mut s = String::from("<table><thead><tr>");
    for (i, h) in head.iter().enumerate() {
        let _ = write!(
            s,
            r#"<th{}>{}</th>"#,
            if i >= numeric_from { r#" class="n""# } else { "" },
            esc(h)
        );
    }
    s.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(s, r#"<tr><td colspan="{}">nothing yet</td></tr>"#, head.len());
    }
    for r in rows {
        s.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let _ = write!(
                s,
                r#"<td{}>{}</td>"#,
                if i >= numeric_from { r#" class="n""# } else { "" },
                esc(c)
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

async fn overview(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let op = match operator(&s, &headers).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let today = s.now().date_naive();
    let (d, decisions) = match (
        s.stores.engine.dashboard(today).await,
        s.stores.engine.decision_counts().await,
    ) {
        (Ok(d), Ok(c)) => (d, c),
        _ => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
    };
    let mut body = String::from("<main>");

    // Reach rate by channel and day.
    let mut channels: Vec<String> = d.reach.iter().map(|r| r.channel.clone()).collect();
    channels.dedup();
    let series: Vec<(String, Vec<(NaiveDate, f64)>)> = channels
        .iter()
        .map(|ch| {
            (
                ch.clone(),
                d.reach
                    .iter()
                    .filter(|r| &r.channel == ch && r.attempted > 0)
                    .map(|r| (r.day, r.reached as f64 / r.attempted as f64))
                    .collect(),
            )
        })
        .collect();
    let (attempted, reached) = d
        .reach
        .iter()
        .fold((0u64, 0u64), |(a, r), x| (a + x.attempted, r + x.reached));
    let _ = write!(
        body,
        r#"<section><h2>Reach rate by channel</h2><p>{reached} of {attempted} attempts delivered or engaged ({:.1}%).</p>{}</section>"#,
        if attempted > 0 {
            100.0 * reached as f64 / attempted as f64
        } else {
            0.0
        },
        lines(
            "reach",
            "Share of attempts delivered or engaged, per day and channel",
            &series,
            1.0,
            &|v| format!("{:.0}%", v * 100.0)
        )
    );

    // Notices by outcome.
    let _ = write!(
        body,
        r#"<section><h2>Attempts by outcome</h2>{}</section>"#,
        bars("outcomes", "Attempts by outcome and failure class", &d.outcomes)
    );

    // Numbers found not working, and retired.
    let found_totals = totals(d.found.iter().map(|(_, what, n)| (what.clone(), *n)));
    let found_rows: Vec<Vec<String>> = d
        .found
        .iter()
        .map(|(w, k, n)| vec![w.to_string(), k.clone(), n.to_string()])
        .collect();
    let retired_rows: Vec<Vec<String>> = d
        .retired
        .iter()
        .map(|(w, k, n)| {
            vec![
                w.to_string(),
                if k.is_empty() { "-".into() } else { k.clone() },
                n.to_string(),
            ]
        })
        .collect();
    let detect = match d.detect_seconds.len() {
        0 => "<p>No lost number has been found after a delivery yet.</p>".to_string(),
        n => {
            let at = |q: f64| d.detect_seconds[((n - 1) as f64 * q).round() as usize] as f64 / 86_400.0;
            format!(
                r#"<p id="detect">Time to detect, at most (from a point's last delivery or engagement to the first sign it stopped working): median <strong>{:.1} days</strong>, 90th percentile {:.1} days, over {n} contact points.</p>"#,
                at(0.5),
                at(0.9)
            )
        }
    };
    let _ = write!(
        body,
        r#"<section><h2>Numbers found not working</h2>{detect}{}<details><summary>By week</summary>{}</details><h2>Contact points retired</h2>{}</section>"#,
        bars(
            "found",
            "Contact points found dead, suspended, recycled or with a wrong party",
            &found_totals
        ),
        table(&["week of", "found", "contact points"], &found_rows, 2),
        table(&["week of", "reason", "retired"], &retired_rows, 2),
    );

    // Unreachable exposure.
    let by_bucket = totals(d.exposure.iter().map(|x| (x.bucket.clone(), x.borrowers)));
    let exposure_rows: Vec<Vec<String>> = d
        .exposure
        .iter()
        .map(|x| {
            vec![
                x.product.clone(),
                x.bucket.clone(),
                x.borrowers.to_string(),
                money(x.outstanding_minor, &x.currency),
            ]
        })
        .collect();
    let _ = write!(
        body,
        r#"<section><h2>Unreachable exposure</h2><p>Borrowers no channel reaches now (the ladder is exhausted, or they must prove a number), and what they still owe.</p>{}{}</section>"#,
        bars("exposure", "Unreachable borrowers by days past due", &by_bucket),
        table(
            &["product", "days past due", "borrowers", "outstanding"],
            &exposure_rows,
            2
        )
    );

    // Deferrals and suppressions by rule.
    let rules: Vec<(String, u64)> = decisions
        .iter()
        .filter(|c| matches!(c.keys.first().map(String::as_str), Some("defer" | "suppress")))
        // A notice whose step is done is suppressed because it succeeded, not by a rule.
        .filter(|c| c.keys.get(1).map(String::as_str) != Some("done"))
        .map(|c| {
            let gate = c.keys.get(2).filter(|g| !g.is_empty()).cloned();
            (
                format!(
                    "{} · {}",
                    c.keys[0],
                    gate.unwrap_or_else(|| c.keys.get(1).cloned().unwrap_or_default())
                ),
                c.count,
            )
        })
        .collect();
    let _ = write!(
        body,
        r#"<section><h2>Deferrals and suppressions by rule</h2>{}</section>"#,
        bars(
            "rules",
            "Decisions that deferred or suppressed a notice, by rule",
            &rules
        )
    );

    // Gateway and queue.
    use std::sync::atomic::Ordering::Relaxed;
    let c = &s.engine.counters;
    let gateways: Vec<Vec<String>> = s
        .engine
        .provider_status()
        .into_iter()
        .map(|(ch, st)| vec![ch.as_str().to_string(), st.provider, st.state.as_str().to_string()])
        .collect();
    let _ = write!(
        body,
        r#"<section><h2>Outbox and gateways</h2>{}<p>Since this node started: {} sends accepted, {} receipts recorded, {} receipts matched no send on arrival (kept; one that beat its send's record is matched when the record is written).</p><h3>Providers on this node</h3><div id="gateways">{}</div><p>open: the circuit breaker took the provider out after failures (a trial send follows); down: not connected.</p></section>"#,
        bars("queue", "Outbox rows by state", &d.queue),
        c.sent.load(Relaxed),
        c.receipts.load(Relaxed),
        c.receipts_unmatched.load(Relaxed),
        table(&["channel", "provider", "state"], &gateways, 9),
    );

    // Ledger.
    let checkpoint = match &s.ledger {
        Some(l) => match l.latest_checkpoint().await {
            Ok(Some(c)) => format!("<pre id=\"checkpoint\">{}</pre>", esc(&c.note)),
            _ => "<p>No checkpoint yet.</p>".into(),
        },
        None => "<p>This node serves no ledger.</p>".into(),
    };
    let _ = write!(
        body,
        r#"<section><h2>Ledger</h2><p>The latest signed checkpoint; <a href="/verify">verify a notice</a> against it.</p>{checkpoint}</section>"#
    );
    body.push_str("</main>");
    page("Overview", &nav(&op), &body).into_response()
}

#[derive(Deserialize)]
struct VerifyQuery {
    notice: Option<String>,
}

async fn verify_page(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<VerifyQuery>) -> Response {
    let op = match operator(&s, &headers).await {
        Ok(op) => op,
        Err(r) => return r,
    };
    let notice = q.notice.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let mut result = String::new();
    if let Some(n) = notice {
        result = match (n.parse::<i64>(), &s.ledger, s.ledger_key.get()) {
            (Err(_), _, _) => r#"<p class="bad">A notice id is a number.</p>"#.into(),
            (_, None, _) | (_, _, None) => r#"<p class="bad">This node serves no ledger.</p>"#.into(),
            (Ok(id), Some(l), Some(key)) => match reachline_store::ledger::bundle(l.as_ref(), id).await {
                Err(reachline_store::StoreError::NotFound { .. }) => {
                    format!(r#"<p class="bad">No ledger leaf names notice {id}.</p>"#)
                }
                Err(_) => r#"<p class="bad">The bundle could not be built.</p>"#.into(),
                Ok(file) => {
                    let text = file.to_text();
                    match reachline_ledger::proof_file::verify(&text, key) {
                        Ok(v) => {
                            let rows: Vec<Vec<String>> = v
                                .leaves
                                .iter()
                                .map(|(i, leaf)| {
                                    vec![
                                        i.0.to_string(),
                                        leaf.kind.describe(),
                                        chrono::DateTime::from_timestamp_micros(leaf.time_micros)
                                            .map(|t| t.to_rfc3339())
                                            .unwrap_or_default(),
                                        leaf.channel.map(|c| c.as_str().to_string()).unwrap_or_default(),
                                    ]
                                })
                                .collect();
                            format!(
                                r#"<p class="ok" id="verdict">Verified: {} leaves about notice {id} are in the log {} at size {}, signed by {}.</p>{}<p><a href="/v1/notices/{id}/evidence">Download the bundle</a> (API token needed) and check it offline with <code>reachline ledger verify</code>.</p>"#,
                                v.leaves.len(),
                                esc(&v.checkpoint.origin),
                                v.checkpoint.size.0,
                                esc(&key.to_string()),
                                table(&["leaf", "what", "when", "channel"], &rows, 9)
                            )
                        }
                        Err(e) => format!(
                            r#"<p class="bad" id="verdict">Does not verify: {}</p>"#,
                            esc(&e.to_string())
                        ),
                    }
                }
            },
        };
    }
    let body = format!(
        r#"<main><section><h2>Verify a notice</h2>
<form method="get" action="/verify"><label for="notice">Notice id</label><input id="notice" name="notice" inputmode="numeric" value="{}"><p><button>Verify</button></p></form>
{result}</section></main>"#,
        esc(notice.unwrap_or_default())
    );
    page("Verify a notice", &nav(&op), &body).into_response()
}
