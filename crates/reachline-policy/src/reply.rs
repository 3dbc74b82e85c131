//! The reply classifier: what a borrower's (or a stranger's) SMS/IM reply or call transcript says.
//!
//! A rule-based, explainable classifier for Chinese and English replies. Every decision names
//! the cue that made it ([`Classification::rule`]), so an operator can see why a contact was
//! stopped.
//!
//! # Classes
//!
//! | class | meaning | example cues |
//! |---|---|---|
//! | `opt_out` | stop contacting me (any channel, this purpose) | 退订, TD, 取消, 别再发了, 不要打了, 拉黑, 投诉, STOP, UNSUBSCRIBE, QUIT, END, REVOKE, OPT OUT, CANCEL, "stop texting me", "remove me", "don't contact me again", "leave me alone" |
//! | `wrong_number` | the person reached is not the borrower / the number changed hands | 打错了, 发错人, 不是本人, 我不认识, 查无此人, 号码换人了, 新办的号, "wrong number", "not me", "I just got this number", "no one named … here" |
//! | `dispute` | the debt or its amount is denied | 不是我借的, 我没借过, 没贷过款, 不欠, 被冒用, 金额不对, "not my loan", "I never borrowed", "I don't owe", "identity theft" |
//! | `new_number` | a phone number is stated, or "I changed my number" with a number | 我的新号码是13912345678, "call me at +1 415 555 2671" |
//! | `paid` | says it is paid | 已还, 已经还了, 还清了, 转过去了, "paid", "payment sent" |
//! | `will_pay` | promises to pay | 马上还, 明天还, 发工资就还, 会尽快处理, "I'll pay tomorrow", "paying this weekend" |
//! | `acknowledged` | receipt or assent, nothing more | 收到, 好的, 知道了, 1, 是我, OK, received, got it, 👍 |
//! | `other` | anything else: questions ("what loan?", "你是谁", "how much?"), hardship ("还不了", "can't pay"), scam accusations, spam, chat | — |
//!
//! Decisions for ambiguous forms: "what loan?" / 什么贷款? is `other` (a question, said by
//! borrowers and strangers alike; the engine may follow up, it must not stop the contact on it);
//! "I never borrowed" is `dispute` even if a stranger wrote it (both stop the contact for the
//! purpose). 搞错了 alone is not a wrong-number cue (people say it of amounts and debts);
//! 搞错人 / 打错 / 发错 are. "I'm not the borrower" / 我不是他 is `wrong_number` (it denies
//! the identity, not the debt). Inability or refusal to pay (还不了, 不会还, "can't pay") is
//! `other`, not `will_pay` and not `dispute`.
//!
//! # Precedence
//!
//! When cues of several classes survive, the first class in this order wins:
//!
//! `opt_out` > `wrong_number` > `dispute` > `new_number` > `paid` > `will_pay` > `acknowledged` > `other`
//!
//! Why: an opt-out binds by law (Regulation F, TCPA) whatever else the message says ("paid, now
//! stop texting me" must stop), so it wins everything. A wrong-number reply is the strongest
//! evidence the number was reassigned and stops the contact; a dispute also stops it but says
//! the number reaches the right person. A stated number is actionable news about the borrower's
//! reach. A payment claim is stronger than a promise, and both say more than an acknowledgement.
//! Every class whose cues survived is kept in [`Classification::signals`], so the engine can see
//! that a wrong-number reply also carried a dispute.
//!
//! "Number changed" cues (换号了, 新号码, "changed my number", "my new number") yield to a
//! stated number: with a number they give `new_number`, without one `wrong_number`. Cues that say
//! the number now belongs to someone else (换人了, 原机主, 新办的号, "I just got this number")
//! stay `wrong_number` even with a number. A stated number is carried in
//! [`Classification::new_number`] whatever the class ("打错了，他的新号码是139…" is
//! `wrong_number` with the number).
//!
//! # How it works
//!
//! 1. [`normalise`]: Unicode NFKC (full-width letters, digits and punctuation become ASCII),
//!    a small traditional-to-simplified table (號碼 打錯 退訂 還 …), lower case, emoji dropped
//!    (👍 👌 🙏 ✅ become `ok`), curly quotes straightened, CJK punctuation mapped to ASCII,
//!    repeated punctuation and whitespace collapsed; a space is put between Latin letters or
//!    digits and CJK (so `td退订` has the word `td`), and dropped between two CJK characters (ASR
//!    transcripts that space every character).
//! 2. Every cue pattern in the table is run over the normalised text. Overlapping matches are
//!    resolved: a *blocker* (a negated form such as 没打错, 没收到, 还不了, "don't stop",
//!    "not a wrong number", "get paid", "can't pay") removes the cues of its target classes it
//!    overlaps; otherwise the longer match wins (不是我本人借的 is a dispute, not 不是本人).
//! 3. Short commands and one-word replies (`1`, `OK`, `好`, `END`, `QUIT`, `取消`) count only
//!    as the whole message (after dropping punctuation, fillers such as 嗯 啊 uh um and "please"),
//!    or as the first word for END / QUIT / CANCEL; STOP, UNSUBSCRIBE, REVOKE, OPT OUT and TD
//!    count anywhere as whole words (`stopped`, `endless` never match).
//! 4. A phone number is looked for in runs of digits and separators (space, `-`, `.`, brackets,
//!    a leading `+` or `00`), parsed with the domain's [`PhoneParser`]; runs shorter than ten
//!    digits without a `+` are ignored (amounts, dates, codes), and a run that does not parse as
//!    a whole is tried piece by piece ("还了1000 13912345678").
//!
//! # Known limits
//!
//! - Numbers spoken as words (一三九…, "one three nine") are not read; nor are letters typed for
//!   digits (`O` for `0`).
//! - Sarcasm and rhetorical questions are read literally; negation is handled only where the
//!   table has a blocker for it.
//! - Typos are covered only where listed (打措, 退定, wrnog/worng number, stpo); unseen typos of
//!   rarer cues fall to `other`.
//! - Traditional characters are mapped only for the cue vocabulary; Cantonese wording (唔係我,
//!   打錯咗) is partly covered through the shared characters.
//! - The first number that parses is taken; a message naming two numbers (old and new) may pick
//!   the old one. The engine should compare it with the number the reply came from.
//! - Pinyin replies (dacuole, tuiding) are not read.
//! - Soft refusals are not opt-outs: 不需要, 不用了, "not interested" fall to `other` (or
//!   `acknowledged` with a "thank you"). "I'm not <name>" is `wrong_number` only when the name ends
//!   the sentence and is not a listed adjective ("I'm not sure" is not).

use std::fmt;

use reachline_domain::{PhoneNumber, PhoneParser};
use regex::Regex;
use serde::{Deserialize, Serialize, Serializer};
use unicode_normalization::UnicodeNormalization;

/// What a reply says, for contact decisions. The order of the variants is the precedence order
/// (first wins), see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyClass {
    OptOut,
    WrongNumber,
    Dispute,
    NewNumber,
    Paid,
    WillPay,
    Acknowledged,
    Other,
}

reachline_domain::named_enum!(ReplyClass, "reply class", {
    OptOut => "opt_out",
    WrongNumber => "wrong_number",
    Dispute => "dispute",
    NewNumber => "new_number",
    Paid => "paid",
    WillPay => "will_pay",
    Acknowledged => "acknowledged",
    Other => "other",
});

impl ReplyClass {
    /// Whether a reply of this class stops contacting that number for that purpose.
    pub fn stops_contact(self) -> bool {
        matches!(self, ReplyClass::OptOut | ReplyClass::WrongNumber | ReplyClass::Dispute)
    }
}

/// The classifier's answer for one reply.
///
/// Serialises with the number masked (`+86139****5678`); [`Classification::revealed`] gives a
/// form that serialises the full E.164 number, for callers that must store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub class: ReplyClass,
    /// A phone number the text states, whatever the class.
    pub new_number: Option<PhoneNumber>,
    /// The stable id of the cue that decided the class (`no_cue` for `other` without a cue).
    pub rule: &'static str,
    /// Every class with a surviving cue, in precedence order (the class itself first, unless
    /// `other`).
    pub signals: Vec<ReplyClass>,
}

#[derive(Serialize)]
struct View<'a> {
    class: ReplyClass,
    new_number: Option<String>,
    rule: &'a str,
    signals: &'a [ReplyClass],
}

impl Classification {
    fn view(&self, reveal: bool) -> View<'_> {
        View {
            class: self.class,
            new_number: self
                .new_number
                .as_ref()
                .map(|n| if reveal { n.e164().to_string() } else { n.masked() }),
            rule: self.rule,
            signals: &self.signals,
        }
    }

    /// A form whose serialisation carries the full E.164 number. Personal data: do not log it.
    pub fn revealed(&self) -> Revealed<'_> {
        Revealed(self)
    }
}

impl Serialize for Classification {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.view(false).serialize(s)
    }
}

/// A [`Classification`] that serialises its number in full (see [`Classification::revealed`]).
#[derive(Debug, Clone, Copy)]
pub struct Revealed<'a>(&'a Classification);

impl Serialize for Revealed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.view(true).serialize(s)
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.class, self.rule)?;
        if let Some(n) = &self.new_number {
            write!(f, " number {n}")?;
        }
        Ok(())
    }
}

/// What a cue says when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Says {
    /// This class.
    Class(ReplyClass),
    /// "The number changed": `new_number` when a number is stated, `wrong_number` otherwise.
    Changed,
    /// A negated form: removes the overlapping cues of these classes.
    Block(&'static [ReplyClass]),
}

/// Where a cue is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Anywhere in the normalised text.
    Anywhere,
    /// The whole message, after dropping punctuation (and, in a second try, fillers and "please").
    Whole,
}

use ReplyClass as C;
use Says::{Block, Changed, Class};
use Scope::{Anywhere, Whole};

const PAY: &[ReplyClass] = &[C::Paid, C::WillPay];

/// The cue table: (rule id, what it says, scope, pattern over the normalised text). Patterns are
/// matched case-insensitively on lower-cased text; `\b` is safe for Latin words because the
/// normaliser puts a space between Latin and CJK characters.
const CUES: &[(&str, Says, Scope, &str)] = &[
    // ---------------------------------------------------------------- opt-out
    (
        "optout.stop",
        Class(C::OptOut),
        Anywhere,
        r"\b(stop|stopp+|sstop|stoop|stpo|sotp|tsop|stahp|stap)\b",
    ),
    (
        "optout.stop.blocked",
        Block(&[C::OptOut]),
        Anywhere,
        r"\b(don'?t|do not|dont|never|pls don'?t|please don'?t|can'?t|cannot|won'?t)( ever)? stop\b|\bbus stop\b|\bstop by\b|\bnon ?-?stop\b|\bstop (worrying|payment)\b",
    ),
    (
        "optout.unsubscribe",
        Class(C::OptOut),
        Anywhere,
        r"\bun ?-?sub\w*|\bunscubscribe\b|\bunsuscribe\b",
    ),
    (
        "optout.opt_out",
        Class(C::OptOut),
        Anywhere,
        r"\bopt(ed|ing)? ?-?out\b|\boptout\b",
    ),
    (
        "optout.revoke",
        Class(C::OptOut),
        Anywhere,
        r"\brevok\w*|\bwithdraw\w* (my )?consent\b|\bcease\b|\bdesist\b",
    ),
    ("optout.td", Class(C::OptOut), Anywhere, r"\btd\b"),
    (
        "optout.td.blocked",
        Block(&[C::OptOut]),
        Anywhere,
        r"\btd (bank|ameritrade)\b",
    ),
    (
        "optout.command_first",
        Class(C::OptOut),
        Anywhere,
        r"^(end|quit|cancel|cancle|cancell|quite texting)\b",
    ),
    (
        "optout.command_first.blocked",
        Block(&[C::OptOut]),
        Anywhere,
        r"^(end of|end (the|this|next) (month|week)|quit (my|the|a|his|her) (job|work)|cancel (my|the|this) (loan|order|application|card|autopay|auto ?pay))\b",
    ),
    (
        "optout.command_verb",
        Class(C::OptOut),
        Anywhere,
        r"\b(quit|end|cancel|cease)( \w+){0,2} (texting|txting|texts|messaging|messages|msgs|calling|calls|contacting|sending|bothering|harassing|spamming|emailing|ringing|notifications|reminders|sms)\b",
    ),
    (
        "optout.remove_me",
        Class(C::OptOut),
        Anywhere,
        r"\b(remove|delete|erase|drop) (me|my (cell |phone )?(number|name|phone|info|information|details|contact))\b|\btake (me|my (number|name|phone number)) off\b|\boff (your|ur|the) (list|mailing list|contact list|database|call list)\b",
    ),
    (
        "optout.dont_contact",
        Class(C::OptOut),
        Anywhere,
        r"\b(don'?t|do not|dont|never|pls don'?t|please don'?t|no)( ever)? (text|txt|message|msg|call|contact|phone|ring|email|bother|harass|spam|sms|reach out to)(ing)?( me| this number| my number| my phone| us)?( again| anymore| any more| ever)?\b",
    ),
    (
        "optout.no_more",
        Class(C::OptOut),
        Anywhere,
        r"\bno more (texts?|messages|msgs?|calls?|sms|txts?|texting|calling|reminders|notifications|contact)\b",
    ),
    (
        "optout.leave_alone",
        Class(C::OptOut),
        Anywhere,
        r"\bleave me alone\b|\bgo away\b|\bharass\w*|\bspamming\b|\bspam me\b|\blose (my|this) number\b|\bdo not disturb\b|\bdnd\b|\bblock(ing)? (you|this number|your number)\b|\b(i'?ll|i will|gonna|going to) block\b|\breport (you|this) (for|as) (spam|harassment)\b",
    ),
    (
        "optout.zh.tuiding",
        Class(C::OptOut),
        Anywhere,
        r"退订|退定|退钉|退掉短信|退出(短信|通知|提醒|服务)|(给我|帮我)?退(了|掉)(吧|呗)",
    ),
    (
        "optout.zh.tuiding.blocked",
        Block(&[C::OptOut]),
        Anywhere,
        r"(别|不要|不用|不想|不会)退订",
    ),
    (
        "optout.zh.dont_send",
        Class(C::OptOut),
        Anywhere,
        r"(别|不要|不用|勿|甭|莫|请勿|不准|不许|禁止|不能)(再|在)?(给我|跟我|向我)?(发|打|联系|骚扰|打扰|来电|短信|推送|通知|提醒|call)",
    ),
    (
        "optout.zh.dont_send.blocked",
        Block(&[C::OptOut]),
        Anywhere,
        r"(别|不要)(再|在)?(发|打)错",
    ),
    (
        "optout.zh.stop_sending",
        Class(C::OptOut),
        Anywhere,
        r"停止(发送|发|联系|打|通知|提醒|推送|骚扰|来电)",
    ),
    (
        "optout.zh.block",
        Class(C::OptOut),
        Anywhere,
        r"拉黑|屏蔽|拒收|报警|拒绝接收|黑名单|骚扰|勿扰|免打扰|投诉|别烦|不要烦|烦不烦|烦死|滚开|滚蛋",
    ),
    (
        "optout.zh.remove",
        Class(C::OptOut),
        Anywhere,
        r"(名单|列表|通讯录|系统|数据库)[^,.!?]{0,4}(删除|删掉|去掉|移除|除名)|(删除|删掉|去掉|移除)(我的?)?(号码?|电话|手机号?|信息|资料|联系方式)",
    ),
    (
        "optout.zh.cancel",
        Class(C::OptOut),
        Anywhere,
        r"^取消|取消(短信|通知|提醒|订阅|推送|发送|联系|服务|消息|信息|息|关注)",
    ),
    (
        "optout.zh.dont_want",
        Class(C::OptOut),
        Anywhere,
        r"(不|别|不要|不想|不愿意?)(再)?(接收|接受|收到?)(任何)?(你们的?)?(短信|信息|消息|通知|提醒|电话)",
    ),
    (
        "optout.whole",
        Class(C::OptOut),
        Whole,
        r"^(stop|end|quit|cancel|cancle|revoke|unsubscribe|optout|opt out|td|t|退订|取消|退|停|停止|停止发送|滚)( (all|it|now|this|that|them|these|messages|texts|msgs|sms|all messages|everything|now))?$",
    ),
    // ---------------------------------------------------------------- wrong number
    (
        "wrong.en.wrong_number",
        Class(C::WrongNumber),
        Anywhere,
        r"\b(wrong|wrnog|worng|wrogn|wong|wromg|wrng|wronge|wrond|wrongg|rong|wrong wrong)( (phone|cell))? (number|numbr|numer|nmber|nunber|numbet|nubmer|no|num|person|persn|guy|girl|lady|man|contact|recipient|people|ppl|individual|one)\b|\b(wrong|wrnog|worng|wong|rong) ?#",
    ),
    (
        "wrong.en.wrong_number.blocked",
        Block(&[C::WrongNumber]),
        Anywhere,
        r"\b(not|isn'?t|is not|never|no|wasn'?t) (a |the )?(wrong|wrnog|worng|wong) (number|no|num|person|#)|\bis this (the |a )?wrong (number|person)\b|\bwrong (number|no|num) (of|for) (payment|payments|days)\b",
    ),
    (
        "wrong.en.not_me",
        Class(C::WrongNumber),
        Anywhere,
        r"(^|[,.!;] ?|\b(this|that|it|thats|its|this's)('s| is)? )not me( ?[.!,;]|$)|^(no|nope),? not me\b",
    ),
    (
        "wrong.en.not_him",
        Class(C::WrongNumber),
        Anywhere,
        r"\b(this|that|it)('s| is|s)? not (him|her|them|he|she)\b|\b(this|it)('s| is)?( not|n'?t) (his|her|their) (number|phone|cell)\b|\b(i'?m|i am|im) not (him|her|the borrower|the person you|who you|that person|mr|mrs|ms|miss)\b|\bnot (the|who) (person|one|guy) you'?re (looking|asking)|\bnot who you think\b|\bnot the (person|guy|lady|borrower) you\b|\b(you|u|ya|you'?ve|youve) (have|got|'ve got|ve got|have got|are texting|are calling|texted|called|reached|r texting|r calling) the wrong\b",
    ),
    (
        "wrong.en.not_name",
        Class(C::WrongNumber),
        Anywhere,
        r"\b(i'?m|i am|im) not [a-z]+( [a-z]+)?( ?[.!,;]|$)",
    ),
    (
        "wrong.en.not_name.blocked",
        Block(&[C::WrongNumber]),
        Anywhere,
        r"\b(i'?m|i am|im) not (sure|able|ready|going|gonna|paying|home|available|interested|working|rich|happy|ok|okay|well|fine|here|free|lying|kidding|joking|done|employed|there|in|at|late|very|really|so|too|yet|certain|aware|allowed|trying|refusing|running|hiding|doing|responsible|liable|mad|angry|upset|sorry)\b",
    ),
    (
        "wrong.en.dont_know",
        Class(C::WrongNumber),
        Anywhere,
        r"\b(don'?t|do not|dont|didn'?t) know (him|her|them|this person|that person|this guy|who (that|this|he|she|you'?re (talking|asking|looking)|they|that person) ?(is|are)?|anyone|anybody|any(one|body)? (named|called|by)|a person|that name|this name|no )|\bno idea who\b|\bnever heard of\b|\bwho the (hell|heck) is\b",
    ),
    (
        "wrong.en.no_one",
        Class(C::WrongNumber),
        Anywhere,
        r"\bno ?(one|body|person) (here |lives here |at this number )?(by|named|called|with)\b|\bno such person\b|\bthere'?s no(body)? [a-z]+( [a-z]+)? (here|at this number)\b|\b(doesn'?t|does not|don'?t) (live|work) here\b|\bnot my name\b|\bmy name (is not|isn'?t)\b",
    ),
    (
        "wrong.en.reassigned",
        Class(C::WrongNumber),
        Anywhere,
        r"\b(just|recently) got (this|the|a new) (number|phone|sim)\b|\bgot this number\b|\bhad this number (for|since)\b|\bnew (owner|user) of this\b|\b(number|phone) (was|has been|got|is|been) (recycled|reassigned|reissued|given to me|transferred|reallocated)\b|\b(previous|former|old|last|prior) (owner|user|holder)\b|\bno longer (has|uses|owns|have|use|his|her) (this|the)? ?number\b|\bthis (number|phone) (is|belongs to) (mine now|me now)\b",
    ),
    (
        "wrong.en.not_their_phone",
        Class(C::WrongNumber),
        Anywhere,
        r"\b(isn'?t|is not|not|no longer) ([a-z]+( [a-z]+)?('s|s|')|my) (phone|number|cell|mobile|cellphone)( number)?( anymore| any more| now)?\b",
    ),
    (
        "wrong.en.changed",
        Changed,
        Anywhere,
        r"\b(changed|change|switched|new) (his |her |my )?(phone )?(number|numbers|no|phone|cell)\b|\bhas a new number\b",
    ),
    (
        "wrong.zh.dacuo",
        Class(C::WrongNumber),
        Anywhere,
        r"(打|发|拨|找|认|发送)(错|措|锗)|(搞|弄)(错|措)(人|号|对象)",
    ),
    (
        "wrong.zh.dacuo.blocked",
        Block(&[C::WrongNumber]),
        Anywhere,
        r"(不是|没有?|并没有?|没|应该没)(打|发|拨|找|认)(错|措)|是不是(你们)?(打|发)错|(打|发)错(钱|金额|款|账)",
    ),
    (
        "wrong.zh.not_self",
        Class(C::WrongNumber),
        Anywhere,
        r"不是(我)?本人|本人不是|非本人|不是(他|她)本人|我不是(他|她|他们|她们|这个人|你(要|们要)?找的人|借款人|当事人|机主)|你(们)?找的(人)?不是我|不是(你|你们)(要|想)?找的(人|那个人|那位)|不是(他|她|他们)的(号|号码|手机|电话)|这(个)?(号码?|电话|手机)?不是(他|她)的|我不姓|(这|这个)?(号码?|电话|手机号?)(已经|早就)?不是(我|他|她)的|不是(我|他|她)的(号码?|电话|手机号?)",
    ),
    (
        "wrong.zh.not_name",
        Class(C::WrongNumber),
        Anywhere,
        r"我(不是|不叫)[^\s不故说要想在很太那这你借本欠还有没会能骗是一都也就只真]\p{Han}{1,2}($|[ ,.!?;]|啊|呀|哦|哈|啦|喔)",
    ),
    (
        "wrong.zh.dont_know",
        Class(C::WrongNumber),
        Anywhere,
        r"不认识|不认得|唔识|不識|没听说过(这个人|他|她|此人)|不知道(是谁|这个人|他是谁|她是谁|你(们)?说的是谁|你(们)?找的是谁|你(们)?找谁)",
    ),
    (
        "wrong.zh.dont_know.blocked",
        Block(&[C::WrongNumber]),
        Anywhere,
        r"不是不认识|怎么会不认识",
    ),
    (
        "wrong.zh.no_such",
        Class(C::WrongNumber),
        Anywhere,
        r"(没有?|无)(这个|此|这|该)人|查无此人|这里没有(叫|姓|这个|这位)|没这人",
    ),
    (
        "wrong.zh.reassigned",
        Class(C::WrongNumber),
        Anywhere,
        r"换人了|号码?(已|已经)?(经)?换人|换(了)?主人|(原|前|以前的?|之前的?|上一?个|旧的?)(机主|号主|主人|用户|持有人)|(新|刚|才|刚刚)(办|买|申请|开|注册)的(号|卡|手机号|电话卡|号码|手机|电话)|(号码?|卡|手机号)[^,.!?]{0,5}(新|刚|才|刚刚)(办|买|申请|开)的|(新|现在的)(号主|机主)|二次放号|号码?(已|已经)?(被)?(回收|重新分配|重新放号)",
    ),
    (
        "wrong.zh.not_here",
        Class(C::WrongNumber),
        Anywhere,
        r"你(们)?(要)?找的(人|那个人|那位)(不在|不是我|不在这|不用这个号)|(号码?|卡|手机号)[^,.!?]{0,4}(我)?(才|刚|刚刚)(用|换|办)",
    ),
    (
        "wrong.zh.changed",
        Changed,
        Anywhere,
        r"换号|换了号|换了(新)?(手机)?(号码?|手机号|电话|手机)|换(新)?(手机号|号码)|改号|号码?改了|新号码?|新手机号|新电话|新的(号码?|手机号|电话)|号码?已?(经)?(停用|不用了|注销)|不用这个号",
    ),
    // ---------------------------------------------------------------- dispute
    (
        "dispute.zh.not_my_loan",
        Class(C::Dispute),
        Anywhere,
        r"(贷款|借款|欠款|这笔钱|这笔账|这笔款|这个账|债务)(也)?不是我的|不是我的(贷款|借款|欠款|债|账)",
    ),
    (
        "dispute.zh.not_mine",
        Class(C::Dispute),
        Anywhere,
        r"不是(我|本人|我本人)(借|贷|申请|欠)|(我|本人)?(从来|从|根本|压根儿?|就|都|也)?(没|没有|未|不曾|从未|从没)(在|跟|向|找)?(你们|你|你们的?)?(这|那|这里|平台|公司|app|网贷)?(借|贷|申请|欠)|(不|没)欠(你们|你|钱|任何|一分)|我不欠",
    ),
    (
        "dispute.zh.not_mine.blocked",
        Block(&[C::Dispute]),
        Anywhere,
        r"没(有)?(借|贷)到(钱)?(也|就|还)",
    ),
    (
        "dispute.zh.identity",
        Class(C::Dispute),
        Anywhere,
        r"冒用|盗用|冒名|冒充我|被人用了?我的(身份|信息|身份证)|身份(证)?(信息)?被(盗|冒|人用|人拿)",
    ),
    (
        "dispute.zh.amount",
        Class(C::Dispute),
        Anywhere,
        r"(金额|数额|钱数|账单|利息|数目|费用|罚息|款项|欠款|数字|余额)[^,.!?]{0,6}(不对|有误|错了|错误|有问题|算错|不符)|算错了|(多收|乱收|多扣|乱扣|多算|乱算)",
    ),
    (
        "dispute.zh.deny",
        Class(C::Dispute),
        Anywhere,
        r"不承认|不认(这|账|此)|我哪(里)?有借|哪来的(贷款|借款|欠款|债)|什么时候借(过|的)|(与|和)我无关",
    ),
    (
        "dispute.en.not_mine",
        Class(C::Dispute),
        Anywhere,
        r"\bnot my (loan|debt|account|bill|balance|credit)\b|\b(this|that|the|this loan|that loan) (loan|debt|account|balance)? ?(is not|isn'?t|ain'?t) (mine|my loan|my debt)\b|\b(loan|debt|account) (is not|isn'?t) mine\b",
    ),
    (
        "dispute.en.never_borrowed",
        Class(C::Dispute),
        Anywhere,
        r"\b(never|didn'?t|did not|didnt|have not|haven'?t|havent) (ever )?(borrow|borrowed|apply|applied|sign up|signed up)\b|\b(never|didn'?t|did not|didnt|have not|haven'?t) (ever )?(take|took|taken|get|got|gotten|receive|received|have|had) (out )?(a |any |this |that |the |your |such a )?(loan|loans|money|credit|debt)\b|\b(don'?t|do not|dont) have (a|any) (loan|loans|debt|account)( with you)?\b",
    ),
    (
        "dispute.en.dont_owe",
        Class(C::Dispute),
        Anywhere,
        r"\b(don'?t|do not|dont) owe\b|\bowe (you |u )?nothing\b|\bowe nobody\b|\bidentity theft\b|\bstolen identity\b|\bsomeone (used|stole) my (name|id|identity|information|info)\b|\bi dispute\b|\bdisputing\b|\bdispute (this|the|it|that)\b|\b(wrong|incorrect) (amount|balance)\b|\bamount is (wrong|incorrect)\b|\boverbill\w*|\bovercharg\w*|\b(wasn'?t|was not) me\b|\bnever had (a|an|any) (loan|account)\b|\bnot mine\b",
    ),
    // ---------------------------------------------------------------- paid
    (
        "paid.zh",
        Class(C::Paid),
        Anywhere,
        r"已(经)?(还|付|支付|转|缴|交|结清|还清|处理|打款|汇|扣款|扣)|还(清|完|过)(了|啦)?|(付|交|转|缴|打|汇|扣)(过|好|完)了|(转|打|汇)过去了|(刚|刚刚|昨天|前天|昨晚|早就|早已|都)(已经)?(还|付|转|交|缴|还款|处理|结清)|(今天|上午|早上|中午)(已经)?(还|付|转|交|缴|还款)(了|完|过|好)|还了|结清了|还款成功|已经还款",
    ),
    (
        "paid.zh.blocked",
        Block(PAY),
        Anywhere,
        r"(没|没有|未|还没|还没有|尚未|不)(有)?(还|付|转|交|缴|结清)(款|钱|上|完|清)?|(还|付|交)不(了|上|起|出)|还了吗|没钱还|不(会|想|打算|准备|能)(再)?(还|付)|(无力|无法|没法|没办法|不能)(偿?还|支付|付)",
    ),
    (
        "paid.en",
        Class(C::Paid),
        Anywhere,
        r"\bpaid\b|\bpayed\b|\b(made|sent|submitted|completed|did|done) (the |my |a |full )?(payment|transfer|repayment)\b|\bpayment (was |has been |is )?(made|sent|done|completed|submitted|went through|received|processed)\b|\b(transferred|wired|sent) (the |it|you |u )?(money|it|payment|amount|funds|the money)\b|\bsettled\b|\balready (sent|transferred|done|took care)\b|\btook care of it\b",
    ),
    (
        "paid.en.blocked",
        Block(PAY),
        Anywhere,
        r"\b(get|gets|getting|got|be|will be|i'?m|am|when i'?m|unpaid|not|haven'?t|hasn'?t|isn'?t|wasn'?t|not yet|havent|never) paid\b|\b(not|haven'?t|hasn'?t|isn'?t|wasn'?t|havent|never) (been )?(paid|settled)\b|\bpaid (on|every) (friday|monday|the|\w+day)s?\b",
    ),
    // ---------------------------------------------------------------- will pay
    (
        "willpay.zh",
        Class(C::WillPay),
        Anywhere,
        r"(马上|立刻|立即|稍后|等下|等一下|等会儿?|一会儿?|待会儿?|晚点|晚些|回头|今天|今晚|明天|明早|后天|下午|晚上|中午|月底|月初|下周[一二三四五六日天]?|下个?月|下个?星期[一二三四五六日天]?|过几天|过两天|这几天|这两天|这周|本周|这个?月|本月|周末|月中|年底|周[一二三四五六日末]|星期[一二三四五六日天]|\d+ ?号|[一二三四五六七八九十]+号|工资到了?|发工资了?|发了工资|尽快|尽量|争取|一定|会|肯定|保证|这就|现在就?|马上就|准备|打算|去|再|就|来)(在|把钱)?(今天|今晚|明天|这周|本周|这个?月|本月|月底|下周|周末|这几天|这两天)?(就|会|去|再|给你们|给你|前|之前|以前|内)?(一定|尽快)?(还|还款|还钱|还上|处理|付|转|交|缴|安排|结清|还清|补上)",
    ),
    (
        "willpay.zh.soon",
        Class(C::WillPay),
        Whole,
        r"^(马上|尽快|这就|马上就|马上去)(办|弄)?$",
    ),
    (
        "willpay.en",
        Class(C::WillPay),
        Anywhere,
        r"\b(i'?ll|ill|i will|will|gonna|going to|i'?m going to|im going to|plan to|planning to|about to|let me|i'?d like to|i want to|trying to|try to|i'?ll try to|promise to|promise i'?ll)\b[^.!?]{0,40}?\b(pay|send (it|the money|the payment|payment|money)|transfer|settle|clear|make (the|a|my) payment|take care of (it|this|that))\b",
    ),
    (
        "willpay.en.when",
        Class(C::WillPay),
        Anywhere,
        r"\b(pay|paying|payment|pay it|pay you|pay u|pay this|pay that|settle it)\b[^.!?]{0,15}?\b(today|tonight|tomorrow|tmr|tmrw|2moro|2morrow|later|soon|asap|now|this (week|weekend|month|evening|afternoon|friday|monday)|next (week|month|monday|tuesday|wednesday|thursday|friday|saturday|sunday)|(on|by) (monday|tuesday|wednesday|thursday|friday|saturday|sunday|the \d+\w*|payday|end|the end|tomorrow|tonight|\d+)|end of|in (a|one|two|three|\d+) (day|days|hour|hours|week|weeks)|after payday|on payday|when i get paid)\b",
    ),
    (
        "willpay.en.blocked",
        Block(PAY),
        Anywhere,
        r"\b(can'?t|cannot|can not|cant|won'?t|will not|unable to|not able to|not going to|not gonna|never|refuse to|no money to|don'?t have (the )?money to|couldn'?t|could not) (pay|afford|settle)\b",
    ),
    // ---------------------------------------------------------------- acknowledged
    (
        "ack.zh",
        Class(C::Acknowledged),
        Anywhere,
        r"收到|好的|好滴|好哒|好嘞|好噠|好呢|好吧|知道了|知道啦|晓得|明白|了解|谢谢|多谢|感谢|谢啦|行吧|可以的|嗯嗯|恩恩|没问题|是我|是本人|我是本人|好好",
    ),
    (
        "ack.zh.blocked",
        Block(&[C::Acknowledged]),
        Anywhere,
        r"(没|没有|未|还没|有没有)收到|收不到|不(知道|明白|了解|清楚)|不(好|行|可以)的?|(不|要|若|如果|可|都|这|那)是(我|本人)|是我的|好的?话",
    ),
    (
        "ack.en",
        Class(C::Acknowledged),
        Anywhere,
        r"\b(ok|okay|okey|okie|oki|okk|received|noted|got it|gotcha|thanks|thank you|thx|thnx|tks|ty|understood|will do|sure thing|roger( that)?|acknowledged|copy that|all good|sounds good|alright|yes it'?s me|this is (him|her|me|he|she))\b",
    ),
    (
        "ack.en.blocked",
        Block(&[C::Acknowledged]),
        Anywhere,
        r"\b(not|never|haven'?t|didn'?t|did not|have not|hasn'?t) (yet )?(received|receive|ok|okay)\b|\bno thanks?\b|\bis (that|this|it) ok(ay)?\b",
    ),
    (
        "ack.whole",
        Class(C::Acknowledged),
        Whole,
        r"^(1|好|行|嗯+|恩+|哦+|噢+|喔+|ok+|okay|okey|oki|okie|k+|yes|yep|yeah|yup|ya|y|sure|fine|alright|noted|roger|understood|ack|收|是|是的|对|对的|对对|ok ok|yes ok|ok thanks|ok thx|嗯好|哦好|好好|好了|行的|可以|了解|yes sir|yes madam|copy)$",
    ),
];

/// Filler words dropped for whole-message matching (also "please").
const FILLERS: &[&str] = &[
    "uh", "um", "umm", "uhh", "er", "erm", "ah", "hmm", "hm", "oh", "please", "pls", "plz", "pl", "plse", "now",
    "just", "嗯", "啊", "呃", "额", "哦", "喔", "呀", "哎", "诶", "唉", "嘛", "吧", "呢", "哈", "喂", "请", "麻烦",
    "谢谢",
];

/// Characters dropped at the ends of CJK words for whole-message matching.
const FILLER_CHARS: &[char] = &[
    '啊', '呃', '额', '呀', '哎', '诶', '唉', '嘛', '吧', '呢', '哈', '喂', '啦', '了', '请',
];

struct Cue {
    id: &'static str,
    says: Says,
    scope: Scope,
    re: Regex,
}

/// The most digits a stated number can have: 15 (E.164), after a `00` prefix 17; the phone
/// parser refuses more.
const MAX_NUMBER_DIGITS: usize = 17;

/// The classifier: the compiled cue table and a phone parser. Build once, share.
pub struct ReplyClassifier {
    parser: PhoneParser,
    cues: Vec<Cue>,
    number_run: Regex,
}

impl fmt::Debug for ReplyClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyClassifier")
            .field("parser", &self.parser)
            .field("cues", &self.cues.len())
            .finish()
    }
}

impl Default for ReplyClassifier {
    /// Numbers without a country code are read as Chinese.
    fn default() -> Self {
        Self::new(PhoneParser::default())
    }
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    cue: usize,
}

impl ReplyClassifier {
    /// A classifier that reads stated numbers with `parser` (its default region applies to
    /// numbers written without a country code).
    pub fn new(parser: PhoneParser) -> Self {
        let cues = CUES
            .iter()
            .map(|&(id, says, scope, pattern)| Cue {
                id,
                says,
                scope,
                re: Regex::new(pattern).unwrap_or_else(|e| panic!("cue {id} has a bad pattern: {e}")),
            })
            .collect();
        let number_run = Regex::new(r"[+(]*\d[\d \-.()+]*\d").expect("the number pattern compiles");
        Self {
            parser,
            cues,
            number_run,
        }
    }

    /// Classifies one reply.
    pub fn classify(&self, text: &str) -> Classification {
        let norm = normalise(text);
        let (strict, loose) = whole_forms(&norm);

        let mut hits: Vec<Hit> = Vec::new();
        let mut whole_hits: Vec<usize> = Vec::new();
        for (i, cue) in self.cues.iter().enumerate() {
            match cue.scope {
                Anywhere => hits.extend(cue.re.find_iter(&norm).map(|m| Hit {
                    start: m.start(),
                    end: m.end(),
                    cue: i,
                })),
                Whole => {
                    if cue.re.is_match(&strict) || cue.re.is_match(&loose) {
                        whole_hits.push(i);
                    }
                }
            }
        }
        let kept = self.resolve(hits);

        let new_number = self.find_number(&norm);
        // (class, rule) for every surviving cue, in text order, whole-message cues last.
        let mut found: Vec<(ReplyClass, &'static str)> = Vec::new();
        for cue in kept.iter().map(|h| h.cue).chain(whole_hits) {
            let cue = &self.cues[cue];
            let class = match cue.says {
                Class(c) => c,
                Changed if new_number.is_some() => C::NewNumber,
                Changed => C::WrongNumber,
                Block(_) => continue,
            };
            found.push((class, cue.id));
        }
        if new_number.is_some() {
            found.push((C::NewNumber, "number.stated"));
        }

        let mut signals: Vec<ReplyClass> = found.iter().map(|(c, _)| *c).collect();
        signals.sort();
        signals.dedup();
        let (class, rule) = match signals.first() {
            Some(&best) => (
                best,
                found
                    .iter()
                    .find(|(c, _)| *c == best)
                    .map(|(_, r)| *r)
                    .unwrap_or("no_cue"),
            ),
            None => (C::Other, "no_cue"),
        };
        Classification {
            class,
            new_number,
            rule,
            signals,
        }
    }

    /// Removes overlapped hits: a blocker removes the hits of its target classes it overlaps;
    /// otherwise the longer hit wins (ties: the earlier cue in the table).
    fn resolve(&self, mut hits: Vec<Hit>) -> Vec<Hit> {
        let overlaps = |a: &Hit, b: &Hit| a.start < b.end && b.start < a.end;
        let blockers: Vec<Hit> = hits
            .iter()
            .copied()
            .filter(|h| matches!(self.cues[h.cue].says, Block(_)))
            .collect();
        hits.retain(|h| {
            let class = match self.cues[h.cue].says {
                Class(c) => c,
                Changed => C::WrongNumber,
                Block(_) => return false,
            };
            !blockers.iter().any(|b| match self.cues[b.cue].says {
                Block(targets) => targets.contains(&class) && overlaps(b, h),
                _ => false,
            })
        });
        hits.sort_by_key(|h| (std::cmp::Reverse(h.end - h.start), h.cue));
        let mut kept: Vec<Hit> = Vec::new();
        for h in hits {
            if !kept.iter().any(|k| overlaps(k, &h)) {
                kept.push(h);
            }
        }
        kept.sort_by_key(|h| (h.start, h.cue));
        kept
    }

    /// The first phone number stated in the (normalised) text.
    fn find_number(&self, norm: &str) -> Option<PhoneNumber> {
        for run in self.number_run.find_iter(norm) {
            let run = run.as_str();
            // Pieces split at separators; each keeps a leading '+'.
            let pieces: Vec<&str> = run
                .split([' ', '-', '.', '(', ')'])
                .filter(|p| !p.is_empty() && p.bytes().any(|b| b.is_ascii_digit()))
                .collect();
            // Longest windows first, leftmost first among equals. Each piece holds a digit, and a
            // window of more digits than a number can have never parses: only windows of at most
            // that many pieces are tried, so a long run of digits costs linear time, not cubic.
            for len in (1..=pieces.len().min(MAX_NUMBER_DIGITS)).rev() {
                for start in 0..=pieces.len() - len {
                    let window = &pieces[start..start + len];
                    if let Some(n) = self.parse_candidate(window) {
                        return Some(n);
                    }
                }
            }
        }
        None
    }

    fn parse_candidate(&self, pieces: &[&str]) -> Option<PhoneNumber> {
        let joined: String = pieces.concat();
        let international = joined.starts_with('+') || joined.starts_with("00");
        if joined.trim_start_matches('+').contains('+') {
            return None;
        }
        let digits = joined.bytes().filter(u8::is_ascii_digit).count();
        if digits < 10 && !(international && digits >= 8) {
            return None;
        }
        self.parser.parse(&joined).ok()
    }
}

/// Normalises a reply for matching: NFKC, traditional-to-simplified for the cue vocabulary,
/// lower case, emoji dropped (a few mapped to `ok`), punctuation mapped to ASCII and collapsed,
/// whitespace collapsed, a space between Latin/digits and CJK, none between two CJK characters.
pub fn normalise(text: &str) -> String {
    let mut mapped = String::with_capacity(text.len() + 8);
    for c in text.nfkc() {
        let c = simplified(c);
        match c {
            '👍' | '👌' | '🙏' | '✅' | '🆗' | '✔' => mapped.push_str(" ok "),
            '。' | '｡' | '…' | '·' => mapped.push('.'),
            '、' | '，' => mapped.push(','),
            '！' => mapped.push('!'),
            '？' => mapped.push('?'),
            '’' | '‘' | 'ʼ' | '`' | '´' | '′' => mapped.push('\''),
            '“' | '”' | '"' | '《' | '》' | '【' | '】' | '「' | '」' | '『' | '』' | '〈' | '〉' | '[' | ']' | '{'
            | '}' | '<' | '>' | '~' | '～' | '*' | '_' | '=' | '|' | '^' => mapped.push(' '),
            '—' | '–' => mapped.push('-'),
            c if c.is_whitespace() => mapped.push(' '),
            c if is_dropped_symbol(c) => mapped.push(' '),
            c => mapped.extend(c.to_lowercase()),
        }
    }
    // Collapse whitespace and repeated punctuation.
    let mut collapsed = String::with_capacity(mapped.len());
    let mut last: Option<char> = None;
    for c in mapped.chars() {
        let punct = matches!(c, '!' | '?' | '.' | ',' | ';' | ':' | '-');
        if c == ' ' {
            if last == Some(' ') || last.is_none() {
                continue;
            }
        } else if punct {
            if let Some(l) = last {
                if matches!(l, '!' | '?' | '.' | ',' | ';' | ':') && l == c {
                    continue;
                }
                // "?!?!" and "!?" keep the first mark.
                if matches!(l, '!' | '?') && matches!(c, '!' | '?') {
                    continue;
                }
            }
        }
        collapsed.push(c);
        last = Some(c);
    }
    // Spaces: between Latin/digit and CJK put one; between two CJK drop it.
    let chars: Vec<char> = collapsed.trim().chars().collect();
    let mut out = String::with_capacity(collapsed.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            if prev.is_some_and(is_cjk) && next.is_some_and(is_cjk) {
                continue;
            }
        }
        if let Some(&p) = out.chars().last().as_ref() {
            if (is_cjk(p) && c.is_ascii_alphanumeric()) || (p.is_ascii_alphanumeric() && is_cjk(c)) {
                out.push(' ');
            }
        }
        out.push(c);
    }
    out
}

/// The whole message without punctuation (strict), and also without fillers and "please"
/// (loose), for whole-message cues.
fn whole_forms(norm: &str) -> (String, String) {
    let strict: String = norm
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' || c == '#' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let loose: Vec<&str> = strict
        .split(' ')
        .map(|w| {
            if w.chars().next().is_some_and(is_cjk) {
                w.trim_matches(|c| FILLER_CHARS.contains(&c))
            } else {
                w
            }
        })
        .filter(|w| !w.is_empty() && !FILLERS.contains(w))
        .collect();
    let mut loose = loose.join(" ");
    for f in FILLERS.iter().filter(|f| !f.is_ascii()) {
        if loose.starts_with(f) && loose.len() > f.len() {
            loose = loose[f.len()..].trim_start().to_string();
        }
    }
    (strict, loose)
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}' | '\u{f900}'..='\u{faff}')
}

/// Emoji, pictographs, dingbats, variation selectors and joiners: dropped.
fn is_dropped_symbol(c: char) -> bool {
    matches!(c,
        '\u{1f000}'..='\u{1faff}'
        | '\u{2600}'..='\u{27bf}'
        | '\u{2b00}'..='\u{2bff}'
        | '\u{2190}'..='\u{21ff}'
        | '\u{2300}'..='\u{23ff}'
        | '\u{25a0}'..='\u{25ff}'
        | '\u{fe00}'..='\u{fe0f}'
        | '\u{200b}'..='\u{200f}'
        | '\u{2060}'
        | '\u{feff}'
        | '\u{e0000}'..='\u{e007f}'
        | '\u{3000}'..='\u{3000}'
    )
}

/// Traditional characters of the cue vocabulary, mapped to simplified.
fn simplified(c: char) -> char {
    match c {
        '號' => '号',
        '您' => '你',
        '碼' => '码',
        '錯' => '错',
        '訂' => '订',
        '認' => '认',
        '識' => '识',
        '還' => '还',
        '貸' => '贷',
        '聯' => '联',
        '繫' => '系',
        '係' => '系',
        '發' => '发',
        '騷' => '骚',
        '擾' => '扰',
        '換' => '换',
        '這' => '这',
        '個' => '个',
        '機' => '机',
        '們' => '们',
        '別' => '别',
        '電' => '电',
        '話' => '话',
        '給' => '给',
        '經' => '经',
        '剛' => '刚',
        '買' => '买',
        '辦' => '办',
        '訊' => '讯',
        '無' => '无',
        '關' => '关',
        '錢' => '钱',
        '帳' | '賬' => '账',
        '馬' => '马',
        '麼' => '么',
        '沒' => '没',
        '會' => '会',
        '過' => '过',
        '對' => '对',
        '謝' => '谢',
        '絡' => '络',
        '訴' => '诉',
        '煩' => '烦',
        '時' => '时',
        '間' => '间',
        '歸' => '归',
        '為' => '为',
        '誰' => '谁',
        '騙' => '骗',
        '詐' => '诈',
        '應' => '应',
        '該' => '该',
        '處' => '处',
        '轉' => '转',
        '頭' => '头',
        '開' => '开',
        '門' => '门',
        '請' => '请',
        '問' => '问',
        '題' => '题',
        '滾' => '滚',
        '蹤' => '踪',
        '撥' => '拨',
        '収' => '收',
        '當' => '当',
        '將' => '将',
        '來' => '来',
        '從' => '从',
        '單' => '单',
        '額' => '额',
        '數' => '数',
        '費' => '费',
        '罰' => '罚',
        '項' => '项',
        '餘' => '余',
        '誤' => '误',
        '曉' => '晓',
        '約' => '约',
        '嗎' => '吗',
        '遲' => '迟',
        '幫' => '帮',
        '後' => '后',
        '盡' => '尽',
        '與' => '与',
        '斷' => '断',
        '讓' => '让',
        '聽' => '听',
        '說' => '说',
        '講' => '讲',
        '親' => '亲',
        '屬' => '属',
        '結' => '结',
        '淸' => '清',
        '筆' => '笔',
        '齊' => '齐',
        '準' => '准',
        '擊' => '击',
        '戶' => '户',
        '卻' => '却',
        '覺' => '觉',
        '點' => '点',
        '週' => '周',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(text: &str) -> Classification {
        thread_local! {
            static C: ReplyClassifier = ReplyClassifier::default();
        }
        C.with(|c| c.classify(text))
    }

    fn class(text: &str) -> ReplyClass {
        classify(text).class
    }

    #[test]
    fn normaliser_folds_width_case_punctuation_and_emoji() {
        assert_eq!(normalise("ＳＴＯＰ！！！"), "stop!");
        assert_eq!(normalise("  Stop.   Now  "), "stop. now");
        assert_eq!(normalise("１３９１２３４５６７８"), "13912345678");
        assert_eq!(normalise("打錯了。。。"), "打错了.");
        assert_eq!(normalise("退訂😡😡"), "退订");
        assert_eq!(normalise("回复TD退订"), "回复 td 退订");
        assert_eq!(normalise("嗯 你 打 错 了"), "嗯你打错了");
        assert_eq!(normalise("don’t text me"), "don't text me");
        assert_eq!(normalise("好的👍"), "好的 ok");
        assert_eq!(normalise("what?!?!"), "what?");
    }

    #[test]
    fn short_english_keywords_match_whole_words_only() {
        assert_eq!(class("STOP!!!"), C::OptOut);
        assert_eq!(class("stop pls"), C::OptOut);
        assert_eq!(class("Stop."), C::OptOut);
        assert_eq!(class("End"), C::OptOut);
        assert_eq!(class("endless reminders, sigh"), C::Other);
        assert_eq!(class("I stopped by the bank"), C::Other);
        assert_eq!(class("I'll stop by the bank tomorrow to pay"), C::WillPay);
        assert_eq!(class("I'll pay at the end of the month"), C::WillPay);
        assert_ne!(class("End of the month I can pay"), C::OptOut);
        assert_eq!(class("1"), C::Acknowledged);
        assert_eq!(class("I owe 1 more payment?"), C::Other);
        assert_eq!(class("td"), C::OptOut);
        assert_eq!(class("quit my job, will pay when I can"), C::WillPay);
        assert_eq!(class("still looking for a job"), C::Other);
        assert_eq!(class("I'm not John"), C::WrongNumber);
        assert_eq!(class("I'm not sure"), C::Other);
    }

    #[test]
    fn negations_block_their_cue() {
        assert_eq!(class("没有打错，是我"), C::Acknowledged);
        assert_eq!(class("不是打错了吗"), C::Other);
        assert_eq!(class("this is not a wrong number, it's me"), C::Other);
        assert_eq!(class("this is not me"), C::WrongNumber);
        assert_eq!(class("is this not me?"), C::Other);
        assert_eq!(class("I did not borrow anything"), C::Dispute);
        assert_eq!(class("please don't stop the reminders"), C::Other);
        assert_eq!(class("没收到账单"), C::Other);
        assert_eq!(class("我还没还"), C::Other);
        assert_eq!(class("I get paid on Friday"), C::Other);
        assert_eq!(class("I can't pay"), C::Other);
        assert_eq!(class("还不了"), C::Other);
    }

    #[test]
    fn precedence_follows_the_documented_order() {
        assert_eq!(class("已还，别再发了"), C::OptOut);
        assert_eq!(class("打错了，我没借过钱"), C::WrongNumber);
        assert_eq!(class("好的，马上还"), C::WillPay);
        assert_eq!(class("不是我本人借的"), C::Dispute);
        let c = classify("打错了，他的新号码是13811112222");
        assert_eq!(c.class, C::WrongNumber);
        assert_eq!(c.new_number.unwrap().e164(), "+8613811112222");
        assert_eq!(c.signals, vec![C::WrongNumber, C::NewNumber]);
    }

    #[test]
    fn changed_number_yields_to_a_stated_number() {
        assert_eq!(class("我换号了"), C::WrongNumber);
        let c = classify("换号了，新号码 18912345678");
        assert_eq!(c.class, C::NewNumber);
        assert_eq!(c.new_number.unwrap().e164(), "+8618912345678");
    }

    #[test]
    fn numbers_in_the_forms_people_type() {
        let n = |t: &str| classify(t).new_number.map(|n| n.e164().to_string());
        assert_eq!(n("我的新号码是13912345678").as_deref(), Some("+8613912345678"));
        assert_eq!(n("新号 １５８ ０１２３ ４５６７").as_deref(), Some("+8615801234567"));
        assert_eq!(n("call 139-1234-5678").as_deref(), Some("+8613912345678"));
        assert_eq!(n("(+86)17712345678").as_deref(), Some("+8617712345678"));
        assert_eq!(n("+1 415 555 2671").as_deref(), Some("+14155552671"));
        assert_eq!(n("已还1000 13912345678").as_deref(), Some("+8613912345678"));
        assert_eq!(n("验证码123456"), None);
        assert_eq!(n("2024-03-15 已还 5000"), None);
        assert_eq!(n("卡号6222021234567890123"), None);
    }

    #[test]
    fn classification_serialises_masked_unless_revealed() {
        let c = classify("my new number is 13912345678");
        let masked = serde_json::to_string(&c).unwrap();
        assert!(!masked.contains("13912345678"), "{masked}");
        assert!(masked.contains("\"class\":\"new_number\""), "{masked}");
        let full = serde_json::to_string(&c.revealed()).unwrap();
        assert!(full.contains("+8613912345678"), "{full}");
        assert!(!format!("{c:?}").contains("13912345678"));
    }

    #[test]
    fn class_names_round_trip() {
        for c in ReplyClass::ALL {
            assert_eq!(c.as_str().parse::<ReplyClass>().unwrap(), *c);
            assert_eq!(serde_json::to_string(c).unwrap(), format!("\"{c}\""));
        }
        assert!(ReplyClass::OptOut.stops_contact());
        assert!(!ReplyClass::NewNumber.stops_contact());
    }

    #[test]
    fn every_rule_id_is_unique() {
        let mut ids: Vec<&str> = CUES.iter().map(|c| c.0).collect();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
}
