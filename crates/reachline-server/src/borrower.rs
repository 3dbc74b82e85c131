//! The borrower's pages: server-rendered, mobile-first, zh-CN and en, no JavaScript.
//!
//! - `/n/<token>` — a notice's link: opening it confirms receipt (engagement evidence). It shows
//!   what the notice said and nothing more, since a recycled number's new holder may open it;
//!   "not my number" records a wrong-party report; the account needs the borrower's name and
//!   ID number (compared with the lender's record; failures count toward the code lock).
//! - `/c/<token>` — a signed, expiring, single-use link sent by a contact check (to another
//!   channel) or to a new number after a reply. `GET` only shows a button (mail scanners open
//!   links); `POST` spends the nonce and opens a session whose factor is that channel.
//! - `/me` — the account: loans and schedule, contact points (masked), consents (withdraw per
//!   purpose), a number change, a repayment-plan request.
//!
//! Sessions: an `HttpOnly`, `SameSite=Strict` cookie (`Secure` under TLS), 30 minutes, the
//! SHA-256 stored; every form carries the session's CSRF token.

use std::fmt::Write;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use chrono::{Duration, Timelike};
use reachline_domain::{
    BorrowerId, Channel, ConsentSource, ConsentState, ContactAddress, ContactId, Locale, NationalId, PersonName,
    Preferences, Purpose, QuietHours,
};
use reachline_policy::change::{ChangeState, ChangeTarget, Factor};
use reachline_policy::codes::{verify_link, verify_notice_token};
use reachline_store::selfservice::BorrowerSession;
use serde::Deserialize;

use crate::change::{self, ChangeError, Source};
use crate::charts::esc;
use crate::dashboard::{digest, random_hex};
use crate::identity::Verdict;
use crate::AppState;

const COOKIE: &str = "rl_b";
const SESSION_MINUTES: i64 = 30;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/n/{token}", get(notice_page))
        .route("/n/{token}/wrong", post(wrong_number))
        .route("/n/{token}/identify", post(identify))
        .route("/c/{token}", get(link_page).post(link_open))
        .route("/me", get(home))
        .route("/me/number", post(number_start))
        .route("/me/number/{id}", get(number_page))
        .route("/me/number/{id}/code", post(number_code))
        .route("/me/number/{id}/resend", post(number_resend))
        .route("/me/number/{id}/factor", post(number_factor))
        // A phone's camera photo is larger than any form: this route alone takes up to 8 MiB.
        .route(
            "/me/number/{id}/face",
            post(number_face).layer(axum::extract::DefaultBodyLimit::max(FACE_MAX_BYTES)),
        )
        .route("/me/consent", post(consent))
        .route("/me/preferences", post(preferences))
        .route("/me/contact", post(contact_report))
        .route("/me/plan", post(plan_request))
        .route("/me/logout", post(logout))
}

/// The words of the pages, per language.
struct T {
    lang: &'static str,
    other_lang: (&'static str, &'static str),
    title: &'static str,
    notice_received: &'static str,
    notice_shows: &'static str,
    due: &'static str,
    not_mine: &'static str,
    not_mine_done: &'static str,
    manage: &'static str,
    name: &'static str,
    national_id: &'static str,
    continue_: &'static str,
    identify_failed: &'static str,
    link_intro: &'static str,
    link_used: &'static str,
    link_bad: &'static str,
    session_needed: &'static str,
    loans: &'static str,
    seq: &'static str,
    due_date: &'static str,
    amount: &'static str,
    paid: &'static str,
    contacts: &'static str,
    change_number: &'static str,
    new_number: &'static str,
    send_code: &'static str,
    add_backup: &'static str,
    backup_number: &'static str,
    add_email: &'static str,
    email: &'static str,
    send_code_email: &'static str,
    added: &'static str,
    code_sent: &'static str,
    code: &'static str,
    confirm: &'static str,
    resend: &'static str,
    applied: &'static str,
    review: &'static str,
    awaiting_factor: &'static str,
    factor_intro: &'static str,
    send_code_to: &'static str,
    factor_code: &'static str,
    face: &'static str,
    face_photo: &'static str,
    face_failed: &'static str,
    consents: &'static str,
    still_mine: &'static str,
    no_longer_mine: &'static str,
    prefs: &'static str,
    first_channel: &'static str,
    second_channel: &'static str,
    no_preference: &'static str,
    channel_names: [(&'static str, &'static str); 5],
    quiet_from: &'static str,
    quiet_to: &'static str,
    no_quiet: &'static str,
    quiet_note: &'static str,
    save: &'static str,
    saved: &'static str,
    withdraw: &'static str,
    withdrawn: &'static str,
    granted: &'static str,
    plan: &'static str,
    plan_kind: &'static str,
    extension: &'static str,
    split: &'static str,
    due_day: &'static str,
    reason: &'static str,
    plan_sent: &'static str,
    logout: &'static str,
    purposes: [(&'static str, &'static str); 4],
    back: &'static str,
}

const ZH: T = T {
    lang: "zh-CN",
    other_lang: ("en", "English"),
    title: "我的账户",
    notice_received: "已确认收到通知，谢谢。",
    notice_shows: "通知内容",
    due: "应还",
    not_mine: "这不是我的号码 / 我不认识此人",
    not_mine_done: "已记录。我们不会再向此号码发送此人的通知。",
    manage: "管理我的账户（需验证身份）",
    name: "姓名",
    national_id: "身份证号码",
    continue_: "继续",
    identify_failed: "信息不符，未做任何更改。",
    link_intro: "请点击继续，确认这是您本人。",
    link_used: "此链接已使用过，不能再次使用。如需帮助请联系客服。",
    link_bad: "此链接无效或已过期，未做任何更改。",
    session_needed: "请通过我们发送给您的链接进入。",
    loans: "借款与还款计划",
    seq: "期数",
    due_date: "到期日",
    amount: "应还金额",
    paid: "已还",
    contacts: "联系方式",
    change_number: "更换手机号码",
    new_number: "新手机号码",
    send_code: "发送验证码到新号码",
    add_backup: "添加备用手机号码",
    backup_number: "备用手机号码",
    add_email: "添加电子邮箱",
    email: "电子邮箱",
    send_code_email: "发送验证码到此邮箱",
    added: "已添加。今后我们也可以通过它联系您。",
    code_sent: "验证码已发送，10分钟内有效。",
    code: "验证码",
    confirm: "确认",
    resend: "重新发送验证码",
    applied: "号码已更换。之后的通知将发送到新号码。",
    review: "为保护您的账户，此次更换需人工审核，我们会尽快处理。",
    awaiting_factor: "新号码已确认。我们还需确认是您本人。",
    factor_intro: "请用您的其他联系方式确认是您本人（或前往网点办理）：",
    send_code_to: "发送验证码到",
    factor_code: "其他联系方式收到的验证码",
    face: "或：人脸识别（拍摄一张本人正面照片）",
    face_photo: "本人照片",
    face_failed: "人脸识别未通过，未做任何更改。",
    consents: "授权",
    still_mine: "仍是我的",
    no_longer_mine: "已不是我的",
    prefs: "联系偏好",
    first_channel: "首选联系方式",
    second_channel: "其次",
    no_preference: "无偏好",
    channel_names: [
        ("sms", "短信"),
        ("email", "电子邮件"),
        ("push", "App 通知"),
        ("im", "微信"),
        ("voice", "电话"),
    ],
    quiet_from: "勿扰时段：从",
    quiet_to: "到",
    no_quiet: "不设",
    quiet_note: "勿扰时段最长16小时，且只在法规允许的时段内起作用。",
    save: "保存",
    saved: "已保存。",
    withdraw: "撤回",
    withdrawn: "已撤回",
    granted: "已授权",
    plan: "申请调整还款计划",
    plan_kind: "类型",
    extension: "延期",
    split: "分期",
    due_day: "更改还款日",
    reason: "原因",
    plan_sent: "申请已提交，工作人员会与您联系。",
    logout: "退出",
    purposes: [
        ("service", "服务通知"),
        ("collection", "催收通知"),
        ("verification", "验证消息"),
        ("third_party", "联系紧急联系人"),
    ],
    back: "返回",
};

const EN: T = T {
    lang: "en",
    other_lang: ("zh", "中文"),
    title: "My account",
    notice_received: "Thank you: your receipt of this notice is recorded.",
    notice_shows: "The notice",
    due: "Due",
    not_mine: "This is not my number / I do not know this person",
    not_mine_done: "Recorded. We will not send this person's notices to this number again.",
    manage: "Manage my account (identity check)",
    name: "Full name",
    national_id: "ID number",
    continue_: "Continue",
    identify_failed: "The details do not match. Nothing was changed.",
    link_intro: "Press continue to confirm it is you.",
    link_used: "This link was already used and cannot be used again. Contact us if you need help.",
    link_bad: "This link is not valid or has expired. Nothing was changed.",
    session_needed: "Please come in through a link we sent you.",
    loans: "Loans and schedule",
    seq: "No.",
    due_date: "Due date",
    amount: "Amount due",
    paid: "Paid",
    contacts: "Contact details",
    change_number: "Change my mobile number",
    new_number: "New mobile number",
    send_code: "Send a code to the new number",
    add_backup: "Add a backup mobile number",
    backup_number: "Backup mobile number",
    add_email: "Add an email address",
    email: "Email address",
    send_code_email: "Send a code to this address",
    added: "Added. We can reach you there too from now on.",
    code_sent: "A code was sent; it is valid for 10 minutes.",
    code: "Code",
    confirm: "Confirm",
    resend: "Send the code again",
    applied: "Your number was changed. Notices will go to the new number.",
    review: "To protect your account, this change will be reviewed by our staff first.",
    awaiting_factor: "The new number is confirmed. We still need to know it is you.",
    factor_intro: "Confirm it is you with another of your contact details (or visit a branch):",
    send_code_to: "Send a code to",
    factor_code: "Code sent to your other contact",
    face: "Or: a face check (take a photo of your face)",
    face_photo: "Photo of your face",
    face_failed: "The face check did not pass. Nothing was changed.",
    consents: "Consents",
    still_mine: "Still mine",
    no_longer_mine: "No longer mine",
    prefs: "How to reach me",
    first_channel: "First choice",
    second_channel: "Second choice",
    no_preference: "No preference",
    channel_names: [
        ("sms", "Text message"),
        ("email", "Email"),
        ("push", "App notification"),
        ("im", "WeChat"),
        ("voice", "Phone call"),
    ],
    quiet_from: "Do not disturb from",
    quiet_to: "to",
    no_quiet: "none",
    quiet_note: "Quiet hours may last up to 16 hours and only narrow the hours the law allows.",
    save: "Save",
    saved: "Saved.",
    withdraw: "Withdraw",
    withdrawn: "withdrawn",
    granted: "granted",
    plan: "Ask for a different repayment plan",
    plan_kind: "Kind",
    extension: "More time",
    split: "Split the payment",
    due_day: "Change the due day",
    reason: "Why",
    plan_sent: "Your request was sent; our staff will contact you.",
    logout: "Log out",
    purposes: [
        ("service", "Service notices"),
        ("collection", "Collection notices"),
        ("verification", "Verification messages"),
        ("third_party", "Contacting my emergency contacts"),
    ],
    back: "Back",
};

#[derive(Debug, Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
    /// Set after a form saved (the page says so).
    saved: Option<String>,
}

fn words(lang: Option<&str>, locale: Locale) -> &'static T {
    match lang {
        Some("en") => &EN,
        Some("zh") | Some("zh-CN") => &ZH,
        _ => match locale {
            Locale::En => &EN,
            Locale::ZhCn => &ZH,
        },
    }
}

fn kind_word(t: &T, k: reachline_domain::ContactKind) -> &'static str {
    use reachline_domain::ContactKind::*;
    match (t.lang, k) {
        ("en", Mobile) => "Mobile",
        ("en", Landline) => "Landline",
        ("en", Email) => "Email",
        ("en", PushToken) => "App",
        ("en", ImAccount) => "Messaging app",
        (_, Mobile) => "手机",
        (_, Landline) => "固定电话",
        (_, Email) => "电子邮箱",
        (_, PushToken) => "手机应用",
        (_, ImAccount) => "即时通讯",
    }
}

fn lang_param(t: &T) -> &'static str {
    if t.lang == "en" {
        "en"
    } else {
        "zh"
    }
}

fn page(t: &T, title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 18px/1.5 system-ui, sans-serif; margin: 0; color: #111; background: #fff; }}
header {{ background: #0b3954; color: #fff; padding: .75rem 1rem; display: flex; justify-content: space-between; align-items: center; }}
header a {{ color: #fff; }}
main {{ padding: 1rem; max-width: 36rem; margin: auto; }}
section {{ border: 1px solid #767676; border-radius: 8px; padding: 1rem; margin: 0 0 1rem; }}
h1 {{ font-size: 1.3rem; margin: 0; }} h2 {{ font-size: 1.1rem; margin: 0 0 .5rem; }}
label {{ display: block; margin: .75rem 0 .25rem; font-weight: 600; }}
input, select, textarea, button {{ font: inherit; width: 100%; min-height: 48px; box-sizing: border-box; padding: .5rem; border: 1px solid #333; border-radius: 6px; }}
button {{ background: #0b3954; color: #fff; border: 0; margin-top: .75rem; cursor: pointer; }}
button.secondary {{ background: #fff; color: #0b3954; border: 2px solid #0b3954; }}
table {{ width: 100%; border-collapse: collapse; }} td, th {{ text-align: left; padding: .4rem .2rem; border-bottom: 1px solid #ccc; }}
.ok {{ background: #e6f4ea; border-color: #1e6b34; }} .bad {{ background: #fdecea; border-color: #a00000; }}
:focus {{ outline: 3px solid #f9a03f; outline-offset: 2px; }}
</style></head>
<body><header><h1>{title}</h1><a href="?lang={other}" lang="{other}">{other_name}</a></header>
<main>{body}</main></body></html>"#,
        lang = t.lang,
        title = esc(title),
        other = t.other_lang.0,
        other_name = t.other_lang.1,
    ))
}

fn message(class: &str, text: &str) -> String {
    format!(
        r#"<section class="{class}" role="status"><p>{}</p></section>"#,
        esc(text)
    )
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    crate::dashboard::cookie(headers, COOKIE)
}

/// A borrower's live session.
struct Session {
    borrower: BorrowerId,
    factors: Vec<Factor>,
    csrf: String,
}

async fn session(s: &crate::Server, headers: &HeaderMap) -> Option<Session> {
    let c = cookie(headers)?;
    let rec = s
        .stores
        .selfservice
        .borrower_session(digest(&c), s.now())
        .await
        .ok()??;
    Some(Session {
        borrower: rec.borrower,
        factors: serde_json::from_str(&rec.factors).unwrap_or_default(),
        csrf: rec.csrf,
    })
}

/// Opens a session and answers with its cookie and a redirect to `to`.
async fn open_session(s: &crate::Server, borrower: BorrowerId, factors: Vec<Factor>, to: &str) -> Response {
    let value = random_hex(32);
    let now = s.now();
    let rec = BorrowerSession {
        borrower,
        factors: serde_json::to_string(&factors).unwrap_or_else(|_| "[]".into()),
        csrf: random_hex(16),
        expires_at: now + Duration::minutes(SESSION_MINUTES),
    };
    if s.stores
        .selfservice
        .create_borrower_session(digest(&value), &rec, now)
        .await
        .is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let secure = if s.config.secure_cookies || s.config.tls_cert.is_some() {
        "; Secure"
    } else {
        ""
    };
    (
        [(
            header::SET_COOKIE,
            format!(
                "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
                SESSION_MINUTES * 60
            ),
        )],
        Redirect::to(to),
    )
        .into_response()
}

/// The locale of a borrower (their record's).
async fn locale_of(s: &crate::Server, borrower: BorrowerId) -> Locale {
    let today = s.now().date_naive();
    match s.stores.engine.views(&[borrower], today, today).await {
        Ok(v) => v.first().map_or(Locale::ZhCn, |v| v.locale),
        Err(_) => Locale::ZhCn,
    }
}

async fn record(s: &crate::Server, borrower: BorrowerId, name: &str, detail: serde_json::Value) {
    let step = change::step(borrower, None, s.now(), name, "borrower", detail);
    if let Err(e) = s.engine.record_step(&step).await {
        tracing::error!(error = %e, "recording a borrower's step failed");
    }
}

/// A form refused (422) with a message in the page's language.
fn refused(t: &T, en: &str, zh: &str) -> Response {
    let text = if t.lang == "en" { en } else { zh };
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        page(t, t.title, &message("bad", text)),
    )
        .into_response()
}

fn unavailable() -> Response {
    StatusCode::SERVICE_UNAVAILABLE.into_response()
}

fn too_many(t: &T) -> Response {
    let text = if t.lang == "en" {
        "Too many attempts from this network; wait a minute."
    } else {
        "操作过于频繁，请稍后再试。"
    };
    (StatusCode::TOO_MANY_REQUESTS, page(t, t.title, &message("bad", text))).into_response()
}

// ---------------------------------------------------------------------------------------------
// /n/<token>: a notice's link

/// The notice a token names: (row id, borrower, contact, installment).
async fn notice_of(
    s: &crate::Server,
    token: &str,
) -> Option<(i64, BorrowerId, ContactId, reachline_domain::InstallmentId)> {
    let id = verify_notice_token(&s.engine.config().link_key, token).ok()? as i64;
    let rows = s
        .stores
        .engine
        .attempts(&reachline_store::engine::AttemptFilter {
            after: Some(id - 1),
            limit: 1,
            ..Default::default()
        })
        .await
        .ok()?;
    let row = rows.into_iter().find(|r| r.id == id)?;
    Some((row.id, row.borrower, row.contact, row.installment))
}

async fn notice_page(State(s): State<AppState>, Path(token): Path<String>, Query(q): Query<LangQuery>) -> Response {
    let Some((id, borrower, _, installment)) = notice_of(&s, &token).await else {
        let t = words(q.lang.as_deref(), Locale::ZhCn);
        return (StatusCode::NOT_FOUND, page(t, t.title, &message("bad", t.link_bad))).into_response();
    };
    let now = s.now();
    if let Err(e) = s.engine.click(id, now).await {
        tracing::error!(error = %e, "recording a click failed");
        return unavailable();
    }
    let locale = locale_of(&s, borrower).await;
    let t = words(q.lang.as_deref(), locale);
    let today = now.date_naive();
    let inst = s
        .stores
        .engine
        .views(&[borrower], today - Duration::days(400), today + Duration::days(400))
        .await
        .ok()
        .and_then(|v| v.into_iter().next())
        .and_then(|v| v.installments.into_iter().find(|i| i.id == installment));
    let mut body = message("ok", t.notice_received);
    if let Some(i) = inst {
        let left = (i.amount_due_minor - i.amount_paid_minor).max(0);
        let _ = write!(
            body,
            "<section><h2>{}</h2><p>{}: {}.{:02} {} · {}: {}</p></section>",
            t.notice_shows,
            t.due,
            left / 100,
            left % 100,
            esc(i.currency.as_str()),
            t.due_date,
            i.due_date
        );
    }
    let lang = lang_param(t);
    let _ = write!(
        body,
        r#"<section><form method="post" action="/n/{tok}/identify?lang={lang}"><h2>{manage}</h2>
<label for="name">{name}</label><input id="name" name="name" autocomplete="name" required>
<label for="national_id">{nid}</label><input id="national_id" name="national_id" autocomplete="off" required>
<button>{cont}</button></form></section>
<section><form method="post" action="/n/{tok}/wrong?lang={lang}"><button class="secondary">{not_mine}</button></form></section>"#,
        tok = esc(&token),
        manage = t.manage,
        name = t.name,
        nid = t.national_id,
        cont = t.continue_,
        not_mine = t.not_mine,
    );
    page(t, t.title, &body).into_response()
}

/// "Not my number": the holder of the number says it is not the borrower's — evidence about
/// the contact, which health reads as a wrong party.
async fn wrong_number(State(s): State<AppState>, Path(token): Path<String>, Query(q): Query<LangQuery>) -> Response {
    let Some((_, borrower, contact, _)) = notice_of(&s, &token).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let now = s.now();
    let kind = serde_json::to_string(&reachline_policy::EvidenceKind::Reply {
        channel: Channel::Sms,
        class: reachline_policy::ReplyClass::WrongNumber,
    })
    .unwrap_or_default();
    let source = serde_json::to_string(&reachline_policy::evidence::Source::Holder).unwrap_or_default();
    if s.stores
        .engine
        .add_evidence(borrower, Some(contact), now, &source, &kind)
        .await
        .is_err()
    {
        return unavailable();
    }
    record(
        &s,
        borrower,
        "wrong_party_reported",
        serde_json::json!({"contact": contact.0}),
    )
    .await;
    let t = words(q.lang.as_deref(), Locale::ZhCn);
    page(t, t.title, &message("ok", t.not_mine_done)).into_response()
}

#[derive(Debug, Deserialize)]
struct IdentifyForm {
    name: String,
    national_id: String,
}

/// The lender's record of a borrower (name, national ID), opened.
async fn borrower_record(s: &crate::Server, borrower: BorrowerId) -> Option<reachline_domain::Borrower> {
    let today = s.now().date_naive();
    let view = s
        .stores
        .engine
        .views(&[borrower], today, today)
        .await
        .ok()?
        .into_iter()
        .next()?;
    let ext = reachline_domain::ExternalId::parse(&view.external_id).ok()?;
    Some(s.stores.store.borrower_by_external_id(&ext).await.ok()??.borrower)
}

/// The name and ID number on a notice's page: compared with the lender's record (a failure
/// counts toward the borrower's lock, like a wrong code), then a session without a factor.
async fn identify(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    Query(q): Query<LangQuery>,
    Form(f): Form<IdentifyForm>,
) -> Response {
    let Some((_, borrower, _, _)) = notice_of(&s, &token).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let t = words(q.lang.as_deref(), locale_of(&s, borrower).await);
    if s.borrower_ip_limiter.check_key(&peer.ip()).is_err() {
        return too_many(t);
    }
    let now = s.now();
    let Ok(failures) = s.stores.selfservice.code_failures(borrower).await else {
        return unavailable();
    };
    let ok = failures < s.config.self_service.codes.max_consecutive_failures
        && match borrower_record(&s, borrower).await {
            Some(b) => {
                let name_ok = PersonName::parse(&f.name).is_ok_and(|n| n == b.name);
                let id_ok = b
                    .national_id
                    .as_ref()
                    .is_some_and(|id| NationalId::parse(id.scheme(), &f.national_id).is_ok_and(|given| &given == id));
                name_ok && id_ok
            }
            None => false,
        };
    if !ok {
        let _ = s
            .stores
            .selfservice
            .set_code_failures(borrower, failures + 1, now)
            .await;
        record(&s, borrower, "identify_failed", serde_json::json!({})).await;
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            page(t, t.title, &message("bad", t.identify_failed)),
        )
            .into_response();
    }
    let _ = s.stores.selfservice.set_code_failures(borrower, 0, now).await;
    record(&s, borrower, "identified", serde_json::json!({"by": "name_and_id"})).await;
    open_session(&s, borrower, Vec::new(), &format!("/me?lang={}", lang_param(t))).await
}

// ---------------------------------------------------------------------------------------------
// /c/<token>: signed single-use links

async fn link_page(State(s): State<AppState>, Path(token): Path<String>, Query(q): Query<LangQuery>) -> Response {
    let claims = verify_link(&s.engine.config().link_key, &token, s.now());
    let locale = match &claims {
        Ok(c) => locale_of(&s, BorrowerId(c.borrower)).await,
        Err(_) => Locale::ZhCn,
    };
    let t = words(q.lang.as_deref(), locale);
    if claims.is_err() {
        return (StatusCode::NOT_FOUND, page(t, t.title, &message("bad", t.link_bad))).into_response();
    }
    let body = format!(
        r#"<section><p>{}</p><form method="post" action="/c/{}?lang={}"><button>{}</button></form></section>"#,
        t.link_intro,
        esc(&token),
        lang_param(t),
        t.continue_
    );
    page(t, t.title, &body).into_response()
}

async fn link_open(State(s): State<AppState>, Path(token): Path<String>, Query(q): Query<LangQuery>) -> Response {
    let now = s.now();
    let Ok(claims) = verify_link(&s.engine.config().link_key, &token, now) else {
        let t = words(q.lang.as_deref(), Locale::ZhCn);
        return (StatusCode::NOT_FOUND, page(t, t.title, &message("bad", t.link_bad))).into_response();
    };
    let borrower = BorrowerId(claims.borrower);
    let t = words(q.lang.as_deref(), locale_of(&s, borrower).await);
    match s.stores.selfservice.use_nonce(claims.nonce as i64, now).await {
        Ok(true) => {}
        Ok(false) => {
            record(
                &s,
                borrower,
                "link_reused",
                serde_json::json!({"action": claims.action}),
            )
            .await;
            return (StatusCode::GONE, page(t, t.title, &message("bad", t.link_used))).into_response();
        }
        Err(_) => return unavailable(),
    }
    let lang = lang_param(t);
    if let Some(check) = claims.action.strip_prefix("check:") {
        let contact = claims.contact.unwrap_or_default();
        let detail = serde_json::json!({"check": check, "contact": contact});
        record(&s, borrower, "link_opened", detail).await;
        if change::close_checks(&s, borrower, "confirmed", "borrower", now)
            .await
            .is_err()
        {
            return unavailable();
        }
        // Opening a link sent to another channel proves that channel still reaches the borrower.
        if let Some(c) = claims.contact {
            let kind = serde_json::to_string(&reachline_policy::EvidenceKind::LinkClick {
                channel: Channel::Email,
            })
            .unwrap_or_default();
            let source = serde_json::to_string(&reachline_policy::evidence::Source::Holder).unwrap_or_default();
            let _ = s
                .stores
                .engine
                .add_evidence(borrower, Some(ContactId(c)), now, &source, &kind)
                .await;
        }
        return open_session(
            &s,
            borrower,
            vec![Factor::Link { contact }],
            &format!("/me?lang={lang}"),
        )
        .await;
    }
    if let Some(id) = claims
        .action
        .strip_prefix("change:")
        .and_then(|x| x.parse::<i64>().ok())
    {
        let rec = match change::own_change(&s, borrower, id, now).await {
            Ok(r) => r,
            Err(_) => return (StatusCode::NOT_FOUND, page(t, t.title, &message("bad", t.link_bad))).into_response(),
        };
        if let Err(e) = change::link_opened(&s, rec, now).await {
            return change_error(t, e);
        }
        return open_session(&s, borrower, Vec::new(), &format!("/me/number/{id}?lang={lang}")).await;
    }
    (StatusCode::NOT_FOUND, page(t, t.title, &message("bad", t.link_bad))).into_response()
}

fn change_error(t: &T, e: ChangeError) -> Response {
    let status = match &e {
        ChangeError::NotFound => StatusCode::NOT_FOUND,
        ChangeError::Api(_) => StatusCode::SERVICE_UNAVAILABLE,
        ChangeError::NotSent(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let text = match (&e, t.lang) {
        (ChangeError::Code(reachline_policy::codes::CodeError::Wrong), "zh-CN") => {
            "验证码错误，未做任何更改。".to_string()
        }
        (ChangeError::Code(reachline_policy::codes::CodeError::Expired), "zh-CN") => {
            "验证码已过期，请重新发送。".to_string()
        }
        (ChangeError::Code(reachline_policy::codes::CodeError::TooManyGuesses), "zh-CN") => {
            "错误次数过多，请重新发送验证码。".to_string()
        }
        (ChangeError::Refused(reachline_policy::change::Refusal::CoolingPeriod { until }), "zh-CN") => {
            format!(
                "号码刚更换过，{} 之后才能再次更换。",
                until.format("%Y-%m-%d %H:%M UTC")
            )
        }
        (ChangeError::Refused(reachline_policy::change::Refusal::Voip), "zh-CN") => {
            "不接受网络电话号码，请填写手机号码。".to_string()
        }
        (ChangeError::NotPending, "zh-CN") => "此次更换已结束，未做任何更改。".to_string(),
        _ => e.to_string(),
    };
    (status, page(t, t.title, &message("bad", &text))).into_response()
}

// ---------------------------------------------------------------------------------------------
// /me: the account

async fn require(s: &crate::Server, headers: &HeaderMap, q: &LangQuery) -> Result<(Session, &'static T), Response> {
    match session(s, headers).await {
        Some(sess) => {
            let t = words(q.lang.as_deref(), locale_of(s, sess.borrower).await);
            Ok((sess, t))
        }
        None => {
            let t = words(q.lang.as_deref(), Locale::ZhCn);
            Err((
                StatusCode::UNAUTHORIZED,
                page(t, t.title, &message("bad", t.session_needed)),
            )
                .into_response())
        }
    }
}

/// A form's session: signed in, and the form carries the session's CSRF token.
async fn require_form(
    s: &crate::Server,
    headers: &HeaderMap,
    q: &LangQuery,
    csrf: &str,
) -> Result<(Session, &'static T), Response> {
    let (sess, t) = require(s, headers, q).await?;
    if !csrf_ok(&sess, csrf) {
        return Err(forbidden());
    }
    Ok((sess, t))
}

fn csrf_ok(sess: &Session, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(sess.csrf.as_bytes().ct_eq(given.as_bytes()))
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "the form's token does not match this session").into_response()
}

async fn home(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<LangQuery>) -> Response {
    let (sess, t) = match require(&s, &headers, &q).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let store = &s.stores.store;
    let (Ok(loans), Ok(contacts), Ok(consents), Ok(prefs)) = (
        store.loans(sess.borrower).await,
        store.contacts(sess.borrower).await,
        store.consents(sess.borrower).await,
        s.stores.selfservice.preferences(sess.borrower).await,
    ) else {
        return unavailable();
    };
    let lang = lang_param(t);
    let csrf = esc(&sess.csrf);
    let mut body = String::new();
    if q.saved.is_some() {
        body.push_str(&message("ok", t.saved));
    }
    let _ = write!(body, "<section><h2>{}</h2>", t.loans);
    let mut loan_options = String::new();
    for l in &loans {
        let _ = write!(
            loan_options,
            r#"<option value="{}">{}</option>"#,
            l.id.0,
            esc(l.loan.external_id.as_str())
        );
        let _ = write!(
            body,
            "<h3>{}</h3><table><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            esc(l.loan.external_id.as_str()),
            t.seq,
            t.due_date,
            t.amount,
            t.paid
        );
        for i in store.installments(l.id).await.unwrap_or_default() {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                i.installment.seq,
                i.installment.due_date,
                esc(&i.installment.amount_due.to_string()),
                esc(&i.installment.amount_paid.to_string())
            );
        }
        body.push_str("</table>");
    }
    body.push_str("</section>");
    let _ = write!(body, "<section><h2>{}</h2><ul>", t.contacts);
    for c in contacts
        .iter()
        .filter(|c| c.is_current() && !c.point.role.is_third_party())
    {
        let masked = esc(&c.point.address.masked());
        let _ = write!(
            body,
            "<li>{} · {masked}{}",
            kind_word(t, c.point.kind),
            if c.point.verified_at.is_some() { " ✓" } else { "" }
        );
        // Only a session with a factor may speak for the borrower's contact points.
        if !sess.factors.is_empty() {
            for (report, label) in [("still_mine", t.still_mine), ("not_mine", t.no_longer_mine)] {
                let _ = write!(
                    body,
                    r#"<form method="post" action="/me/contact?lang={lang}"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="contact" value="{cid}"><input type="hidden" name="report" value="{report}"><button class="secondary" aria-label="{label}: {masked}">{label}</button></form>"#,
                    cid = c.id.0,
                );
            }
        }
        body.push_str("</li>");
    }
    body.push_str("</ul></section>");
    let _ = write!(
        body,
        r#"<section><form method="post" action="/me/number?lang={lang}"><h2>{h}</h2><input type="hidden" name="csrf" value="{csrf}">
<label for="number">{label}</label><input id="number" name="number" type="tel" inputmode="tel" autocomplete="tel" required>
<button>{send}</button></form></section>"#,
        h = t.change_number,
        label = t.new_number,
        send = t.send_code
    );
    let _ = write!(
        body,
        r#"<section><form method="post" action="/me/number?lang={lang}"><h2>{h}</h2><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="target" value="add_backup">
<label for="backup">{label}</label><input id="backup" name="number" type="tel" inputmode="tel" autocomplete="tel" required>
<button>{send}</button></form>
<form method="post" action="/me/number?lang={lang}"><h2>{he}</h2><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="target" value="add_email">
<label for="email">{le}</label><input id="email" name="email" type="email" inputmode="email" autocomplete="email" required>
<button>{sende}</button></form></section>"#,
        h = t.add_backup,
        label = t.backup_number,
        send = t.send_code,
        he = t.add_email,
        le = t.email,
        sende = t.send_code_email
    );
    body.push_str(&preferences_form(t, &csrf, &prefs));
    let _ = write!(body, "<section><h2>{}</h2>", t.consents);
    for (code, label) in t.purposes {
        let Ok(purpose) = code.parse::<Purpose>() else { continue };
        let granted = reachline_domain::consent::permits(&consents, purpose, Channel::Sms);
        let _ = write!(
            body,
            r#"<form method="post" action="/me/consent?lang={lang}"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="purpose" value="{code}"><p>{label}: <strong>{state}</strong></p>{button}</form>"#,
            state = if granted { t.granted } else { t.withdrawn },
            button = if granted {
                format!(
                    r#"<button class="secondary" aria-label="{} {}">{}</button>"#,
                    t.withdraw, label, t.withdraw
                )
            } else {
                String::new()
            }
        );
    }
    body.push_str("</section>");
    let _ = write!(
        body,
        r#"<section><form method="post" action="/me/plan?lang={lang}"><h2>{h}</h2><input type="hidden" name="csrf" value="{csrf}">
<label for="loan">{loans}</label><select id="loan" name="loan">{loan_options}</select>
<label for="kind">{kind}</label><select id="kind" name="kind"><option value="extension">{ext}</option><option value="split">{split}</option><option value="due_day">{dd}</option></select>
<label for="reason">{reason}</label><textarea id="reason" name="reason" rows="3" maxlength="500" required></textarea>
<button>{send}</button></form></section>
<form method="post" action="/me/logout?lang={lang}"><input type="hidden" name="csrf" value="{csrf}"><button class="secondary">{logout}</button></form>"#,
        h = t.plan,
        loans = t.loans,
        kind = t.plan_kind,
        ext = t.extension,
        split = t.split,
        dd = t.due_day,
        reason = t.reason,
        send = t.confirm,
        logout = t.logout
    );
    page(t, t.title, &body).into_response()
}

#[derive(Debug, Deserialize)]
struct NumberForm {
    csrf: String,
    /// `replace` (the default), `add_backup`, `add_email`.
    target: Option<String>,
    number: Option<String>,
    email: Option<String>,
}

async fn number_start(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<NumberForm>,
) -> Response {
    let (sess, t) = match require_form(&s, &headers, &q, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if s.borrower_ip_limiter.check_key(&peer.ip()).is_err() {
        return too_many(t);
    }
    let bad = |en: &str, zh: &str| refused(t, en, zh);
    let target = match f.target.as_deref().unwrap_or("replace") {
        "replace" => ChangeTarget::Replace,
        "add_backup" => ChangeTarget::AddBackup,
        "add_email" => ChangeTarget::AddEmail,
        _ => return bad("Unknown request.", "请求无效。"),
    };
    let address = if target == ChangeTarget::AddEmail {
        match f.email.as_deref().map(reachline_domain::Email::parse) {
            Some(Ok(e)) => ContactAddress::Email(e),
            _ => return bad("That is not an email address.", "邮箱格式不正确。"),
        }
    } else {
        match f.number.as_deref().map(|n| s.phones.parse(n)) {
            Some(Ok(n)) => ContactAddress::Phone(n),
            _ => return bad("That is not a phone number.", "号码格式不正确。"),
        }
    };
    let now = s.now();
    let mut factor = sess.factors.first().cloned();
    if let (None, ContactAddress::Phone(number)) = (&factor, &address) {
        factor = identity_factor(&s, sess.borrower, number).await;
    }
    match change::start(
        &s,
        sess.borrower,
        &address,
        target,
        Source::Page,
        factor,
        "borrower",
        now,
    )
    .await
    {
        Ok(id) => Redirect::to(&format!("/me/number/{id}?lang={}&sent=1", lang_param(t))).into_response(),
        Err(e) => change_error(t, e),
    }
}

/// The provider's three-factor check of the new number against the lender's record of the
/// borrower: a match authorises the change.
async fn identity_factor(
    s: &crate::Server,
    borrower: BorrowerId,
    number: &reachline_domain::PhoneNumber,
) -> Option<Factor> {
    let provider = s.identity.get()?;
    let b = borrower_record(s, borrower).await?;
    let id = b.national_id.as_ref()?;
    let verdict = provider.three_factor(&b.name, id, number).await;
    let detail = serde_json::json!({"provider": provider.name(), "verdict": format!("{verdict:?}").to_lowercase()});
    record(s, borrower, "identity_checked", detail).await;
    (verdict == Verdict::Match).then(|| Factor::Identity {
        provider: provider.name().to_string(),
        method: "three_factor".into(),
    })
}

#[derive(Debug, Deserialize, Default)]
struct NumberQuery {
    lang: Option<String>,
    sent: Option<String>,
}

async fn number_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(nq): Query<NumberQuery>,
) -> Response {
    let q = LangQuery {
        lang: nq.lang.clone(),
        saved: None,
    };
    let (sess, t) = match require(&s, &headers, &q).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rec = match change::own_change(&s, sess.borrower, id, s.now()).await {
        Ok(r) => r,
        Err(e) => return change_error(t, e),
    };
    let lang = lang_param(t);
    let csrf = esc(&sess.csrf);
    let flow: Option<reachline_policy::change::Flow> = serde_json::from_str(&rec.flow).ok();
    let proven = flow.as_ref().is_some_and(|f| f.new_number_proven);
    let authorised = flow.as_ref().is_some_and(|f| f.authorised_by.is_some());
    let target = flow.as_ref().map(|f| f.target).unwrap_or_default();
    let heading = match target {
        ChangeTarget::Replace => t.change_number,
        ChangeTarget::AddBackup => t.add_backup,
        ChangeTarget::AddEmail => t.add_email,
    };
    let body = match rec.state.parse::<ChangeState>() {
        Ok(ChangeState::Applied) if target == ChangeTarget::Replace => message("ok", t.applied),
        Ok(ChangeState::Applied) => message("ok", t.added),
        Ok(ChangeState::Review) => message("ok", t.review),
        Ok(ChangeState::Pending) => {
            let mut body = String::new();
            if nq.sent.is_some() {
                body.push_str(&message("ok", t.code_sent));
            }
            if proven {
                body.push_str(&message("ok", t.awaiting_factor));
            } else {
                let _ = write!(
                    body,
                    r#"<section><form method="post" action="/me/number/{id}/code?lang={lang}"><h2>{h}</h2><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="which" value="new">
<label for="code">{code}</label><input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" required>
<button>{confirm}</button></form>
<form method="post" action="/me/number/{id}/resend?lang={lang}"><input type="hidden" name="csrf" value="{csrf}"><button class="secondary">{resend}</button></form></section>"#,
                    h = heading,
                    code = t.code,
                    confirm = t.confirm,
                    resend = t.resend
                );
            }
            if !authorised {
                body.push_str(&factor_section(&s, &rec, flow.as_ref(), t, &csrf).await);
            }
            body
        }
        _ => message(
            "bad",
            if t.lang == "en" {
                "This change has ended; nothing was changed."
            } else {
                "此次更换已结束，未做任何更改。"
            },
        ),
    };
    let body = format!(r#"{body}<p><a href="/me?lang={lang}">{}</a></p>"#, t.back);
    page(t, t.title, &body).into_response()
}

/// The existing-factor part of a change's page: a code to another of the borrower's contacts.
async fn factor_section(
    s: &crate::Server,
    rec: &reachline_store::selfservice::ChangeRecord,
    flow: Option<&reachline_policy::change::Flow>,
    t: &T,
    csrf: &str,
) -> String {
    let (id, lang) = (rec.id, lang_param(t));
    let mut out = format!("<section><p>{}</p>", t.factor_intro);
    if flow.is_some_and(|f| f.factor_code.is_some()) {
        let _ = write!(
            out,
            r#"<form method="post" action="/me/number/{id}/code?lang={lang}"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="which" value="factor">
<label for="factor_code">{label}</label><input id="factor_code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" required>
<button>{confirm}</button></form>"#,
            label = t.factor_code,
            confirm = t.confirm
        );
    }
    for c in change::factor_contacts(s, rec).await.unwrap_or_default() {
        let _ = write!(
            out,
            r#"<form method="post" action="/me/number/{id}/factor?lang={lang}"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="contact" value="{cid}"><button class="secondary">{send} {to}</button></form>"#,
            cid = c.id.0,
            send = t.send_code_to,
            to = esc(&c.point.address.masked())
        );
    }
    if s.identity.get().is_some() {
        let _ = write!(
            out,
            r#"<form method="post" action="/me/number/{id}/face?lang={lang}" enctype="multipart/form-data"><h3>{h}</h3><input type="hidden" name="csrf" value="{csrf}">
<label for="photo">{label}</label><input id="photo" name="photo" type="file" accept="image/jpeg,image/png" capture="user" required>
<button class="secondary">{confirm}</button></form>"#,
            h = t.face,
            label = t.face_photo,
            confirm = t.confirm
        );
    }
    out.push_str("</section>");
    out
}

/// The largest photo a face check takes.
const FACE_MAX_BYTES: usize = 8 << 20;

/// A face check for a pending change: the photo goes to the identity provider with the
/// lender's record of the borrower's name and ID, and is dropped; a match authorises the
/// change, anything else counts as a failed code (the 100-failure lock) and changes nothing.
async fn number_face(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<LangQuery>,
    mut form: axum::extract::Multipart,
) -> Response {
    let (mut csrf, mut photo) = (String::new(), Vec::new());
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                let Ok(bytes) = field.bytes().await else {
                    return StatusCode::PAYLOAD_TOO_LARGE.into_response();
                };
                match name.as_str() {
                    "csrf" => csrf = String::from_utf8_lossy(&bytes).into_owned(),
                    "photo" => photo = bytes.to_vec(),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => return (e.status(), e.body_text()).into_response(),
        }
    }
    let (rec, t) = match own_change_form(&s, &headers, &q, &csrf, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if s.borrower_ip_limiter.check_key(&peer.ip()).is_err() {
        return too_many(t);
    }
    let (Some(provider), Some(b)) = (s.identity.get(), borrower_record(&s, rec.borrower).await) else {
        return forbidden();
    };
    let now = s.now();
    let Ok(failures) = s.stores.selfservice.code_failures(rec.borrower).await else {
        return unavailable();
    };
    let verdict = match &b.national_id {
        Some(nid) if failures < s.config.self_service.codes.max_consecutive_failures => {
            provider.face_match(&b.name, nid, &photo).await
        }
        _ => Verdict::Unknown,
    };
    drop(photo);
    let detail = serde_json::json!({
        "provider": provider.name(),
        "method": "face",
        "verdict": format!("{verdict:?}").to_lowercase(),
    });
    let step = change::step(rec.borrower, Some(rec.id), now, "identity_checked", "borrower", detail);
    if let Err(e) = s.engine.record_step(&step).await {
        tracing::error!(error = %e, "recording a face check failed");
        return unavailable();
    }
    if verdict != Verdict::Match {
        let _ = s
            .stores
            .selfservice
            .set_code_failures(rec.borrower, failures + 1, now)
            .await;
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            page(t, t.title, &message("bad", t.face_failed)),
        )
            .into_response();
    }
    let _ = s.stores.selfservice.set_code_failures(rec.borrower, 0, now).await;
    let factor = Factor::Identity {
        provider: provider.name().to_string(),
        method: "face".into(),
    };
    match change::authorise(&s, rec, factor, now).await {
        Ok(_) => Redirect::to(&format!("/me/number/{id}?lang={}", lang_param(t))).into_response(),
        Err(e) => change_error(t, e),
    }
}

#[derive(Debug, Deserialize)]
struct FactorForm {
    csrf: String,
    contact: i64,
}

/// A form about one of the session's own changes: signed in, the CSRF token matches, and the
/// change is the borrower's (another's is "not found", and recorded).
async fn own_change_form(
    s: &crate::Server,
    headers: &HeaderMap,
    q: &LangQuery,
    csrf: &str,
    id: i64,
) -> Result<(reachline_store::selfservice::ChangeRecord, &'static T), Response> {
    let (sess, t) = require_form(s, headers, q, csrf).await?;
    match change::own_change(s, sess.borrower, id, s.now()).await {
        Ok(rec) => Ok((rec, t)),
        Err(e) => Err(change_error(t, e)),
    }
}

async fn number_factor(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<LangQuery>,
    Form(f): Form<FactorForm>,
) -> Response {
    let (rec, t) = match own_change_form(&s, &headers, &q, &f.csrf, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = s.now();
    match change::send_factor_code(&s, rec, ContactId(f.contact), now).await {
        Ok(()) => Redirect::to(&format!("/me/number/{id}?lang={}&sent=1", lang_param(t))).into_response(),
        Err(e) => change_error(t, e),
    }
}

#[derive(Debug, Deserialize)]
struct CodeForm {
    csrf: String,
    code: String,
    /// `new` (the new number's code, the default) or `factor`.
    #[serde(default)]
    which: Option<String>,
}

async fn number_code(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<LangQuery>,
    Form(f): Form<CodeForm>,
) -> Response {
    let (rec, t) = match own_change_form(&s, &headers, &q, &f.csrf, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = s.now();
    let which = match f.which.as_deref() {
        Some("factor") => change::Which::Factor,
        _ => change::Which::NewNumber,
    };
    match change::enter_code(&s, rec, which, &f.code, now).await {
        Ok(_) => Redirect::to(&format!("/me/number/{id}?lang={}", lang_param(t))).into_response(),
        Err(e) => change_error(t, e),
    }
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn number_resend(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<LangQuery>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (rec, t) = match own_change_form(&s, &headers, &q, &f.csrf, id).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let now = s.now();
    match change::resend(&s, rec, now).await {
        Ok(()) => Redirect::to(&format!("/me/number/{id}?lang={}&sent=1", lang_param(t))).into_response(),
        Err(e) => change_error(t, e),
    }
}

/// The preferences form: two preferred channels and quiet hours, as selects (no script).
fn preferences_form(t: &T, csrf: &str, prefs: &Preferences) -> String {
    let lang = lang_param(t);
    let channel_select = |id: &str, label: &str, chosen: Option<Channel>| {
        let mut out = format!(
            r#"<label for="{id}">{label}</label><select id="{id}" name="{id}"><option value="">{}</option>"#,
            t.no_preference
        );
        for (code, name) in t.channel_names {
            let sel = if chosen.map(|c| c.as_str()) == Some(code) {
                " selected"
            } else {
                ""
            };
            let _ = write!(out, r#"<option value="{code}"{sel}>{name}</option>"#);
        }
        out.push_str("</select>");
        out
    };
    let hour_select = |id: &str, label: &str, chosen: Option<chrono::NaiveTime>| {
        let mut out = format!(
            r#"<label for="{id}">{label}</label><select id="{id}" name="{id}"><option value="">{}</option>"#,
            t.no_quiet
        );
        for h in 0..24u32 {
            let sel = if chosen.map(|c| c.hour()) == Some(h) {
                " selected"
            } else {
                ""
            };
            let _ = write!(out, r#"<option value="{h}"{sel}>{h:02}:00</option>"#);
        }
        out.push_str("</select>");
        out
    };
    format!(
        r#"<section><form method="post" action="/me/preferences?lang={lang}"><h2>{h}</h2><input type="hidden" name="csrf" value="{csrf}">
{first}{second}{from}{to}<p class="note">{note}</p><button>{save}</button></form></section>"#,
        h = t.prefs,
        first = channel_select("first", t.first_channel, prefs.channels.first().copied()),
        second = channel_select("second", t.second_channel, prefs.channels.get(1).copied()),
        from = hour_select("quiet_from", t.quiet_from, prefs.quiet.map(|q| q.start)),
        to = hour_select("quiet_to", t.quiet_to, prefs.quiet.map(|q| q.end)),
        note = t.quiet_note,
        save = t.save
    )
}

#[derive(Debug, Deserialize)]
struct PreferencesForm {
    csrf: String,
    #[serde(default)]
    first: String,
    #[serde(default)]
    second: String,
    #[serde(default)]
    quiet_from: String,
    #[serde(default)]
    quiet_to: String,
}

/// Sets the borrower's preferred channels and quiet hours; they take effect at the borrower's
/// next decision, made now.
async fn preferences(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<PreferencesForm>,
) -> Response {
    let (sess, t) = match require_form(&s, &headers, &q, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let bad = |en: &str, zh: &str| refused(t, en, zh);
    let mut channels = Vec::new();
    for c in [&f.first, &f.second].into_iter().filter(|c| !c.is_empty()) {
        match c.parse::<Channel>() {
            Ok(c) if !channels.contains(&c) => channels.push(c),
            Ok(_) => {}
            Err(_) => return bad("Unknown channel.", "联系方式无效。"),
        }
    }
    let hour = |h: &str| {
        h.parse::<u32>()
            .ok()
            .and_then(|h| chrono::NaiveTime::from_hms_opt(h, 0, 0))
    };
    let quiet = match (f.quiet_from.as_str(), f.quiet_to.as_str()) {
        ("", "") => None,
        (a, b) => match (hour(a), hour(b)) {
            (Some(a), Some(b)) => match QuietHours::new(a, b) {
                Ok(q) => Some(q),
                Err(_) => return bad(t.quiet_note, t.quiet_note),
            },
            _ => return bad("Choose both hours, or none.", "请同时选择开始和结束时间，或都不设。"),
        },
    };
    let Ok(prefs) = Preferences::new(channels, quiet) else {
        return bad("Unknown channel.", "联系方式无效。");
    };
    let now = s.now();
    if s.stores
        .selfservice
        .set_preferences(sess.borrower, &prefs, now)
        .await
        .is_err()
        || s.stores.engine.wake_now(sess.borrower, now).await.is_err()
    {
        return unavailable();
    }
    let channels: Vec<&str> = prefs.channels.iter().map(|c| c.as_str()).collect();
    let quiet = prefs
        .quiet
        .map(|q| format!("{}-{}", q.start.format("%H:%M"), q.end.format("%H:%M")));
    record(
        &s,
        sess.borrower,
        "preferences_set",
        serde_json::json!({"channels": channels, "quiet": quiet}),
    )
    .await;
    Redirect::to(&format!("/me?lang={}&saved=1", lang_param(t))).into_response()
}

#[derive(Debug, Deserialize)]
struct ContactForm {
    csrf: String,
    contact: i64,
    /// `still_mine` or `not_mine`.
    report: String,
}

/// The borrower says one of their contact points is still theirs, or no longer: evidence for
/// health (`SelfReport`), taken only from a session opened with a factor (a link to one of
/// their contact points, a code, an identity check) — name and ID alone cannot silence a
/// number or vouch for a recycled one.
async fn contact_report(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<ContactForm>,
) -> Response {
    let (sess, t) = match require_form(&s, &headers, &q, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if sess.factors.is_empty() {
        return forbidden();
    }
    let Ok(report) = f.report.parse::<reachline_policy::SelfReport>() else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    if report == reachline_policy::SelfReport::ChangedNumber {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    let Ok(contacts) = s.stores.store.contacts(sess.borrower).await else {
        return unavailable();
    };
    let Some(contact) = contacts
        .iter()
        .find(|c| c.id.0 == f.contact && c.is_current() && !c.point.role.is_third_party())
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let now = s.now();
    let source = serde_json::to_string(&reachline_policy::Source::Borrower).unwrap_or_default();
    let kind = serde_json::to_string(&reachline_policy::EvidenceKind::SelfReport { report }).unwrap_or_default();
    if s.stores
        .engine
        .add_evidence(sess.borrower, Some(contact.id), now, &source, &kind)
        .await
        .is_err()
    {
        return unavailable();
    }
    record(
        &s,
        sess.borrower,
        "self_report",
        serde_json::json!({"contact": contact.id.0, "report": report.as_str()}),
    )
    .await;
    Redirect::to(&format!("/me?lang={}&saved=1", lang_param(t))).into_response()
}

#[derive(Debug, Deserialize)]
struct ConsentForm {
    csrf: String,
    purpose: String,
}

/// Withdraws the consent for one purpose on every channel; it takes effect before the next
/// send (the borrower's next decision is made now).
async fn consent(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<ConsentForm>,
) -> Response {
    let (sess, t) = match require_form(&s, &headers, &q, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Ok(purpose) = f.purpose.parse::<Purpose>() else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    let now = s.now();
    let c = reachline_domain::Consent {
        purpose,
        channel: None,
        state: ConsentState::Withdrawn,
        at: now,
        source: ConsentSource::Page,
        text_version: "self-service-v1".into(),
    };
    if s.stores.store.record_consent(sess.borrower, &c).await.is_err()
        || s.stores.engine.wake_now(sess.borrower, now).await.is_err()
    {
        return unavailable();
    }
    record(
        &s,
        sess.borrower,
        "consent_withdrawn",
        serde_json::json!({"purpose": purpose.as_str()}),
    )
    .await;
    Redirect::to(&format!("/me?lang={}", lang_param(t))).into_response()
}

#[derive(Debug, Deserialize)]
struct PlanForm {
    csrf: String,
    loan: i64,
    kind: String,
    reason: String,
}

async fn plan_request(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
    Form(f): Form<PlanForm>,
) -> Response {
    let (sess, t) = match require_form(&s, &headers, &q, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let owns = s
        .stores
        .store
        .loans(sess.borrower)
        .await
        .is_ok_and(|l| l.iter().any(|l| l.id.0 == f.loan));
    let reason = f.reason.trim();
    if !owns
        || !["extension", "split", "due_day"].contains(&f.kind.as_str())
        || reason.is_empty()
        || reason.chars().count() > 500
    {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    let now = s.now();
    let Ok(id) = s
        .stores
        .selfservice
        .add_plan_request(sess.borrower, reachline_domain::LoanId(f.loan), &f.kind, reason, now)
        .await
    else {
        return unavailable();
    };
    record(
        &s,
        sess.borrower,
        "plan_requested",
        serde_json::json!({"request": id, "kind": f.kind}),
    )
    .await;
    page(
        t,
        t.title,
        &format!(
            "{}<p><a href=\"/me?lang={}\">{}</a></p>",
            message("ok", t.plan_sent),
            lang_param(t),
            t.back
        ),
    )
    .into_response()
}

async fn logout(State(s): State<AppState>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    let Some(sess) = session(&s, &headers).await else {
        return Redirect::to("/").into_response();
    };
    if !csrf_ok(&sess, &f.csrf) {
        return forbidden();
    }
    if let Some(c) = cookie(&headers) {
        if s.stores.selfservice.end_borrower_session(digest(&c)).await.is_err() {
            return unavailable();
        }
    }
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        )],
        Redirect::to("/me"),
    )
        .into_response()
}
