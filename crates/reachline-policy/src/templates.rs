//! Notice templates: approved, versioned texts per kind and locale, rendered with `minijinja`.
//!
//! Templates are checked when they load, not when one is sent: every template must parse; a
//! template meant for a third party (an emergency contact) may use only the variables of
//! [`THIRD_PARTY_FIELDS`] (the lender's name, a number to call back, a link) and may not say
//! anything of a debt in its fixed text either (a short list of words in both languages); and
//! any variable a template uses must be one the engine provides ([`BORROWER_FIELDS`]), so a
//! typo fails at load instead of rendering an empty amount.

use std::collections::{BTreeMap, BTreeSet};

use reachline_domain::Locale;
use serde::{Deserialize, Serialize};

use crate::cadence::NoticeKind;

/// Who reads a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    Borrower,
    ThirdParty,
}

/// The variables a third-party template may use.
pub const THIRD_PARTY_FIELDS: &[&str] = &["lender_name", "service_phone", "link"];

/// The variables the engine provides to a borrower's template.
pub const BORROWER_FIELDS: &[&str] = &[
    "lender_name",
    "service_phone",
    "link",
    "borrower_name",
    "loan_ref",
    "installment_seq",
    "amount_due",
    "currency",
    "due_date",
    "days_to_due",
    "days_past_due",
    "amount_paid",
    "code",
];

/// The variables a verification message (kind `contact_check`: a link to confirm a number, a
/// one-time code, news of a changed number) may use. Such a message goes to a number not yet
/// proven to be the borrower's — a new one, or an old one that may have been recycled — so it
/// may say nothing of the debt either.
pub const VERIFICATION_FIELDS: &[&str] = &["lender_name", "service_phone", "link", "code"];

/// Words a third-party text may never contain: they would tell a stranger there is a debt.
const DEBT_WORDS: &[&str] = &[
    "欠",
    "债",
    "逾期",
    "还款",
    "贷款",
    "借款",
    "催收",
    "账单",
    "本金",
    "利息",
    "debt",
    "overdue",
    "loan",
    "repay",
    "payment",
    "owe",
    "collection",
    "balance",
    "arrears",
    "due",
];

/// One template as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSource {
    /// Stable id, e.g. `pre_due.sms`.
    pub id: String,
    pub version: u32,
    pub kind: NoticeKind,
    pub locale: Locale,
    pub audience: Audience,
    pub text: String,
}

/// Why a template was refused at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {id} v{version} ({locale}): {problem}")]
pub struct TemplateError {
    pub id: String,
    pub version: u32,
    pub locale: String,
    pub problem: String,
}

/// A rendered notice, with what the ledger records of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub template_id: String,
    pub version: u32,
    pub text: String,
}

/// The loaded, checked templates.
pub struct Templates {
    env: minijinja::Environment<'static>,
    /// (id, locale) → (version, kind, audience), the newest version of each.
    index: BTreeMap<(String, Locale), (u32, NoticeKind, Audience)>,
}

fn key(id: &str, version: u32, locale: Locale) -> String {
    format!("{id}@{version}/{}", locale.as_str())
}

impl Templates {
    /// Loads and checks every template; all problems are reported together and nothing loads
    /// unless all pass.
    pub fn load(sources: Vec<TemplateSource>) -> Result<Self, Vec<TemplateError>> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let mut index: BTreeMap<(String, Locale), (u32, NoticeKind, Audience)> = BTreeMap::new();
        let mut errors = Vec::new();
        for s in sources {
            let err = |problem: String| TemplateError {
                id: s.id.clone(),
                version: s.version,
                locale: s.locale.as_str().to_string(),
                problem,
            };
            if s.audience == Audience::ThirdParty && s.kind != NoticeKind::ThirdPartyRequest {
                errors.push(err(format!(
                    "a third-party template must be of kind third_party_request, not {}",
                    s.kind
                )));
                continue;
            }
            if s.kind == NoticeKind::ThirdPartyRequest && s.audience != Audience::ThirdParty {
                errors.push(err(
                    "a third_party_request template must have audience third_party".into()
                ));
                continue;
            }
            let name = key(&s.id, s.version, s.locale);
            if let Err(e) = env.add_template_owned(name.clone(), s.text.clone()) {
                errors.push(err(format!("does not parse: {e}")));
                continue;
            }
            let used: BTreeSet<String> = match env.get_template(&name) {
                Ok(t) => t.undeclared_variables(false).into_iter().collect(),
                Err(e) => {
                    errors.push(err(format!("does not parse: {e}")));
                    continue;
                }
            };
            let verification = s.kind == NoticeKind::ContactCheck;
            let allowed = match s.audience {
                Audience::Borrower if verification => VERIFICATION_FIELDS,
                Audience::Borrower => BORROWER_FIELDS,
                Audience::ThirdParty => THIRD_PARTY_FIELDS,
            };
            let bad: Vec<&String> = used.iter().filter(|v| !allowed.contains(&v.as_str())).collect();
            if !bad.is_empty() {
                let list = bad.iter().map(|b| b.as_str()).collect::<Vec<_>>().join(", ");
                errors.push(err(match s.audience {
                    Audience::ThirdParty => format!(
                        "a third-party template may not use {list} (only {}): a third party must learn nothing of the debt",
                        THIRD_PARTY_FIELDS.join(", ")
                    ),
                    Audience::Borrower if verification => format!(
                        "a verification template may not use {list} (only {}): it goes to a number not yet proven to be the borrower's",
                        VERIFICATION_FIELDS.join(", ")
                    ),
                    Audience::Borrower => format!("uses {list}, which the engine does not provide"),
                }));
                continue;
            }
            if s.audience == Audience::ThirdParty || verification {
                let lower = s.text.to_lowercase();
                if let Some(w) = DEBT_WORDS.iter().find(|w| lower.contains(*w)) {
                    errors.push(err(if verification {
                        format!(
                            "a verification template may not say {w:?}: it may reach someone who is not the borrower"
                        )
                    } else {
                        format!(
                            "a third-party template may not say {w:?}: a third party must learn nothing of the debt"
                        )
                    }));
                    continue;
                }
            }
            let slot = index
                .entry((s.id.clone(), s.locale))
                .or_insert((s.version, s.kind, s.audience));
            if s.version >= slot.0 {
                *slot = (s.version, s.kind, s.audience);
            }
        }
        if errors.is_empty() {
            Ok(Self { env, index })
        } else {
            Err(errors)
        }
    }

    /// The built-in templates (zh-CN and en, SMS-length), for the demo and as a starting point.
    pub fn builtin_sources() -> Vec<TemplateSource> {
        let t = |id: &str, kind, locale, audience, text: &str| TemplateSource {
            id: id.to_string(),
            version: 1,
            kind,
            locale,
            audience,
            text: text.to_string(),
        };
        use Audience::*;
        use Locale::*;
        use NoticeKind::*;
        vec![
            t("pre_due", PreDue, ZhCn, Borrower, "【{{ lender_name }}】您尾号{{ loan_ref }}的借款第{{ installment_seq }}期应还{{ amount_due }}{{ currency }}，将于{{ due_date }}到期（还有{{ days_to_due }}天）。还款：{{ link }}"),
            t("pre_due", PreDue, En, Borrower, "{{ lender_name }}: installment {{ installment_seq }} of loan {{ loan_ref }}, {{ amount_due }} {{ currency }}, is due on {{ due_date }} (in {{ days_to_due }} days). Pay: {{ link }}"),
            t("due_today", DueToday, ZhCn, Borrower, "【{{ lender_name }}】您的借款第{{ installment_seq }}期{{ amount_due }}{{ currency }}今日到期，请及时还款：{{ link }}"),
            t("due_today", DueToday, En, Borrower, "{{ lender_name }}: {{ amount_due }} {{ currency }} (installment {{ installment_seq }}) is due today. Pay: {{ link }}"),
            t("overdue", Overdue, ZhCn, Borrower, "【{{ lender_name }}】您的借款第{{ installment_seq }}期已逾期{{ days_past_due }}天，应还{{ amount_due }}{{ currency }}。如已还款请忽略。还款或申请延期：{{ link }} 客服{{ service_phone }}"),
            t("overdue", Overdue, En, Borrower, "{{ lender_name }}: installment {{ installment_seq }} is {{ days_past_due }} days overdue, {{ amount_due }} {{ currency }}. Ignore if paid. Pay or ask for more time: {{ link }} Help: {{ service_phone }}"),
            t("disbursement", Disbursement, ZhCn, Borrower, "【{{ lender_name }}】您的借款已放款。还款计划：{{ link }}"),
            t("disbursement", Disbursement, En, Borrower, "{{ lender_name }}: your loan has been paid out. Schedule: {{ link }}"),
            t("payment_received", PaymentReceived, ZhCn, Borrower, "【{{ lender_name }}】已收到您的还款{{ amount_paid }}{{ currency }}，谢谢。"),
            t("payment_received", PaymentReceived, En, Borrower, "{{ lender_name }}: we received your payment of {{ amount_paid }} {{ currency }}. Thank you."),
            t("contact_check", ContactCheck, ZhCn, Borrower, "【{{ lender_name }}】请确认这是否仍是您的号码：{{ link }}"),
            t("contact_check", ContactCheck, En, Borrower, "{{ lender_name }}: is this still your number? Please confirm: {{ link }}"),
            t("contact_check_other", ContactCheck, ZhCn, Borrower, "【{{ lender_name }}】我们无法通过您登记的手机号联系到您。请打开链接确认或更新您的号码（72小时内有效，仅可使用一次）：{{ link }}"),
            t("contact_check_other", ContactCheck, En, Borrower, "{{ lender_name }}: we cannot reach you on the mobile number we hold. Open this link to confirm or update it (valid 72 hours, once): {{ link }}"),
            t("verification_code", ContactCheck, ZhCn, Borrower, "【{{ lender_name }}】您的验证码是{{ code }}，10分钟内有效。请勿告诉他人。如非本人操作，请致电{{ service_phone }}。"),
            t("verification_code", ContactCheck, En, Borrower, "{{ lender_name }}: your code is {{ code }}, valid 10 minutes. Do not share it. Not you? Call {{ service_phone }}."),
            t("confirm_new_number", ContactCheck, ZhCn, Borrower, "【{{ lender_name }}】有人请求将此号码登记为您的联系号码。如是本人，请打开链接确认：{{ link }} 如非本人，请忽略。"),
            t("confirm_new_number", ContactCheck, En, Borrower, "{{ lender_name }}: someone asked to make this number their contact number with us. If it was you, confirm: {{ link }} If not, ignore this."),
            t("number_changed", ContactCheck, ZhCn, Borrower, "【{{ lender_name }}】您在我司登记的手机号已更换。如非本人操作，请立即致电{{ service_phone }}。"),
            t("number_changed", ContactCheck, En, Borrower, "{{ lender_name }}: the mobile number on your account with us was changed. If this was not you, call {{ service_phone }} now."),
            t("contact_added", ContactCheck, ZhCn, Borrower, "【{{ lender_name }}】您在我司的账户新增了一个联系方式。如非本人操作，请立即致电{{ service_phone }}。"),
            t("contact_added", ContactCheck, En, Borrower, "{{ lender_name }}: a new way to reach you was added to your account with us. If this was not you, call {{ service_phone }} now."),
            t("third_party", ThirdPartyRequest, ZhCn, ThirdParty, "【{{ lender_name }}】您好，我们有事需联系您的亲友，烦请转告其致电{{ service_phone }}。如不便，回复“拒绝”，我们将不再联系您。"),
            t("third_party", ThirdPartyRequest, En, ThirdParty, "{{ lender_name }}: we are trying to reach someone who named you as a contact. Please ask them to call {{ service_phone }}. Reply REFUSE and we will not contact you again."),
        ]
    }

    /// The newest version of a template id for a locale.
    pub fn latest(&self, id: &str, locale: Locale) -> Option<(u32, NoticeKind, Audience)> {
        self.index.get(&(id.to_string(), locale)).copied()
    }

    /// Renders the newest version of `id` in `locale`, falling back to the other locale.
    pub fn render(&self, id: &str, locale: Locale, ctx: &impl Serialize) -> Result<Rendered, String> {
        let (locale, (version, _, _)) = [locale, Locale::ZhCn, Locale::En]
            .into_iter()
            .find_map(|l| self.latest(id, l).map(|v| (l, v)))
            .ok_or_else(|| format!("no template {id}"))?;
        let t = self
            .env
            .get_template(&key(id, version, locale))
            .map_err(|e| e.to_string())?;
        let text = t.render(ctx).map_err(|e| format!("template {id} v{version}: {e}"))?;
        Ok(Rendered {
            template_id: id.to_string(),
            version,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(id: &str, audience: Audience, kind: NoticeKind, text: &str) -> TemplateSource {
        TemplateSource {
            id: id.into(),
            version: 1,
            kind,
            locale: Locale::ZhCn,
            audience,
            text: text.into(),
        }
    }

    #[test]
    fn the_builtin_templates_load_and_render() {
        let t = Templates::load(Templates::builtin_sources()).unwrap();
        let ctx = serde_json::json!({
            "lender_name": "示例金融", "service_phone": "95500", "link": "https://r.example/x",
            "borrower_name": "", "loan_ref": "1234", "installment_seq": 3, "amount_due": "1,250.00",
            "currency": "CNY", "due_date": "2024-05-20", "days_to_due": 3, "days_past_due": 0,
            "amount_paid": "0", "code": "",
        });
        let r = t.render("pre_due", Locale::ZhCn, &ctx).unwrap();
        assert!(
            r.text.contains("1,250.00CNY") && r.text.contains("还有3天"),
            "{}",
            r.text
        );
        assert_eq!((r.template_id.as_str(), r.version), ("pre_due", 1));
        let r = t.render("third_party", Locale::En, &ctx).unwrap();
        assert!(r.text.contains("95500") && !r.text.contains("1,250"), "{}", r.text);
    }

    #[test]
    fn a_verification_template_that_names_the_debt_is_refused_at_load() {
        let errs = Templates::load(vec![
            src(
                "v1",
                Audience::Borrower,
                NoticeKind::ContactCheck,
                "您的验证码{{ code }}，应还{{ amount_due }}",
            ),
            src(
                "v2",
                Audience::Borrower,
                NoticeKind::ContactCheck,
                "Your code {{ code }} for your overdue loan",
            ),
            src(
                "ok",
                Audience::Borrower,
                NoticeKind::ContactCheck,
                "验证码{{ code }}，{{ link }}",
            ),
        ])
        .err()
        .unwrap();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].to_string().contains("may not use amount_due"), "{}", errs[0]);
        assert!(errs[1].to_string().contains("not the borrower"), "{}", errs[1]);
    }

    #[test]
    fn a_third_party_template_that_names_the_debt_is_refused_at_load() {
        let errs = Templates::load(vec![
            src(
                "tp1",
                Audience::ThirdParty,
                NoticeKind::ThirdPartyRequest,
                "请转告他还款 {{ amount_due }}",
            ),
            src(
                "tp2",
                Audience::ThirdParty,
                NoticeKind::ThirdPartyRequest,
                "请转告他联系我们，他已逾期",
            ),
            src(
                "tp3",
                Audience::ThirdParty,
                NoticeKind::ThirdPartyRequest,
                "Please ask {{ borrower_name }} to call {{ service_phone }}",
            ),
            src(
                "tp4",
                Audience::ThirdParty,
                NoticeKind::ThirdPartyRequest,
                "{% if days_past_due > 3 %}urgent{% endif %} call us",
            ),
            src(
                "ok",
                Audience::ThirdParty,
                NoticeKind::ThirdPartyRequest,
                "请转告其致电{{ service_phone }}",
            ),
        ])
        .err()
        .unwrap();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].to_string().contains("may not use amount_due"), "{}", errs[0]);
        assert!(errs[1].to_string().contains("\"逾期\""), "{}", errs[1]);
        assert!(errs[2].to_string().contains("borrower_name"), "{}", errs[2]);
        assert!(errs[3].to_string().contains("days_past_due"), "{}", errs[3]);
    }

    #[test]
    fn unknown_fields_and_broken_syntax_are_refused_at_load() {
        let errs = Templates::load(vec![
            src("a", Audience::Borrower, NoticeKind::PreDue, "due {{ amount_du }}"),
            src("b", Audience::Borrower, NoticeKind::PreDue, "due {{ amount_due "),
            src("c", Audience::Borrower, NoticeKind::ThirdPartyRequest, "call us"),
        ])
        .err()
        .unwrap();
        assert_eq!(errs.len(), 3);
        assert!(errs[0].problem.contains("amount_du"));
        assert!(errs[1].problem.contains("does not parse"));
        assert!(errs[2].problem.contains("audience third_party"));
    }

    #[test]
    fn the_newest_version_renders() {
        let mut v2 = src("x", Audience::Borrower, NoticeKind::PreDue, "v2 {{ amount_due }}");
        v2.version = 2;
        let t = Templates::load(vec![
            v2,
            src("x", Audience::Borrower, NoticeKind::PreDue, "v1 {{ amount_due }}"),
        ])
        .unwrap();
        let r = t
            .render("x", Locale::En, &serde_json::json!({"amount_due": "5"}))
            .unwrap();
        assert_eq!((r.version, r.text.as_str()), (2, "v2 5"));
    }
}
