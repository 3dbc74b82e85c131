//! WeChat official-account events: what WeChat pushes to the account's server URL, and how it
//! signs the push.
//!
//! - `TEMPLATESENDJOBFINISH`: the asynchronous outcome of a template message, matched to the
//!   send by `MsgID` (the `msgid` the send's answer gave, kept as the provider's id).
//! - `unsubscribe`: the user stopped following the account; template messages no longer reach
//!   them on this channel.
//! - `text`: a message the user wrote to the account.
//!
//! WeChat signs the request, not the body: the query carries `signature`, `timestamp` and
//! `nonce`, with `signature = hex(SHA-1(concat(sort([token, timestamp, nonce]))))`, the token
//! being a secret configured on both sides. A `GET` with the same three and `echostr` is WeChat's
//! check of the URL, answered with `echostr`.
//!
//! In "safe mode" (and the compatible mode beside it) WeChat also encrypts the body: the event
//! comes as `<Encrypt>`, AES-256-CBC under the account's `EncodingAESKey`, signed by
//! `msg_signature` over the token, timestamp, nonce and that ciphertext; [`SafeMode::open`]
//! checks and opens it.
//!
//! The XML is read with `quick-xml`, which resolves no DTD or external entity.

use reachline_domain::DeliveryClass;
use serde::Deserialize;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::classify::http::wechat_job_class;
use crate::http::InboundError;
use crate::Receipt;

/// One event or message WeChat pushed, as far as Reachline reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WechatEvent {
    /// `TEMPLATESENDJOBFINISH`: a template message's outcome.
    TemplateJobFinished {
        /// `MsgID`: the id the send's answer gave (`msgid`).
        msg_id: String,
        /// `Status` as sent: `success`, `failed:user block`, `failed: system failed`.
        status: String,
    },
    /// `unsubscribe`: the user (`openid`, personal data) stopped following the account.
    Unsubscribed { openid: String },
    /// A text message from the user (`openid`, personal data).
    Text { openid: String, content: String },
    /// Anything else (a subscribe, a menu click, an image…): taken, and nothing is recorded.
    Other { msg_type: String, event: Option<String> },
}

/// The fields of WeChat's `<xml>` envelope that Reachline reads; others are skipped.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "FromUserName", default)]
    from: Option<String>,
    #[serde(rename = "MsgType")]
    msg_type: String,
    #[serde(rename = "Event", default)]
    event: Option<String>,
    /// Events spell it `MsgID`.
    #[serde(rename = "MsgID", default)]
    msg_id: Option<String>,
    #[serde(rename = "Status", default)]
    status: Option<String>,
    #[serde(rename = "Content", default)]
    content: Option<String>,
}

fn present(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Reads a pushed event or message (plaintext mode). A body that is not WeChat's `<xml>`
/// envelope, or an event that lacks what it must carry, is [`InboundError::Body`].
pub fn parse_event(body: &[u8]) -> Result<WechatEvent, InboundError> {
    let text = std::str::from_utf8(body).map_err(|_| InboundError::Body)?;
    let e: Envelope = quick_xml::de::from_str(text).map_err(|_| InboundError::Body)?;
    let msg_type = e.msg_type.trim().to_ascii_lowercase();
    let event = present(e.event);
    Ok(
        match (
            msg_type.as_str(),
            event.as_deref().map(str::to_ascii_uppercase).as_deref(),
        ) {
            ("event", Some("TEMPLATESENDJOBFINISH")) => WechatEvent::TemplateJobFinished {
                msg_id: present(e.msg_id).ok_or(InboundError::Body)?,
                status: present(e.status).ok_or(InboundError::Body)?,
            },
            ("event", Some("UNSUBSCRIBE")) => WechatEvent::Unsubscribed {
                openid: present(e.from).ok_or(InboundError::Body)?,
            },
            ("text", _) => WechatEvent::Text {
                openid: present(e.from).ok_or(InboundError::Body)?,
                content: e.content.unwrap_or_default(),
            },
            ("", _) => return Err(InboundError::Body),
            _ => WechatEvent::Other { msg_type, event },
        },
    )
}

/// A template message's outcome as a receipt: matched by `MsgID` among the ids `provider` gave,
/// classed by `Status`, with the XML kept as it came.
pub fn job_receipt(provider: &str, msg_id: &str, status: &str, raw: &[u8]) -> Receipt {
    Receipt {
        provider: provider.to_string(),
        reference: None,
        provider_id: msg_id.to_string(),
        part: None,
        class: wechat_job_class(status),
        code: format!("wechat:{}", status.chars().take(48).collect::<String>()),
        is_final: true,
        raw: raw.to_vec(),
        unanswered: crate::Unanswered::none(),
    }
}

/// Reads a `TEMPLATESENDJOBFINISH` body into its receipt; any other event is
/// [`InboundError::Body`] here (the server handles unsubscribes and messages itself).
pub fn parse_job_receipt(provider: &str, body: &[u8]) -> Result<Receipt, InboundError> {
    match parse_event(body)? {
        WechatEvent::TemplateJobFinished { msg_id, status } => Ok(job_receipt(provider, &msg_id, &status, body)),
        _ => Err(InboundError::Body),
    }
}

/// The class of an unsubscribe: the account can no longer message the user, as the send's
/// errcode 43004 (not following) says.
pub const UNSUBSCRIBE_CLASS: DeliveryClass = DeliveryClass::Dead;

/// Why a WeChat push was refused. Each names the query parameter; none says what the right
/// signature would have been.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the `{0}` query parameter is missing")]
    Missing(&'static str),
    #[error("`timestamp` is not a number of seconds")]
    BadTimestamp,
    #[error("`timestamp` is {0} s away from now, outside the {1} s replay window")]
    Stale(i64, i64),
    #[error("`signature` is not hex of a SHA-1")]
    Malformed,
    #[error("`signature` does not match")]
    Mismatch,
}

/// WeChat's signature: hex SHA-1 of the token, timestamp and nonce sorted and concatenated.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    hex::encode(sorted_sha1(&mut [token, timestamp, nonce]))
}

/// WeChat's signing: SHA-1 of the parts sorted and concatenated.
fn sorted_sha1(parts: &mut [&str]) -> [u8; 20] {
    parts.sort_unstable();
    let mut h = Sha1::new();
    for p in parts.iter() {
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// Checks a push's (or a URL check's) query: the signature in constant time, and the timestamp
/// inside `window` seconds of `now` (Unix seconds).
pub fn verify(
    token: &str,
    timestamp: Option<&str>,
    nonce: Option<&str>,
    signature_hex: Option<&str>,
    now: i64,
    window: i64,
) -> Result<(), SignatureError> {
    let sig = signature_hex.ok_or(SignatureError::Missing("signature"))?;
    let ts_text = timestamp.ok_or(SignatureError::Missing("timestamp"))?;
    let nonce = nonce.ok_or(SignatureError::Missing("nonce"))?;
    let ts: i64 = ts_text.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    // As for the HMAC webhooks: saturating, and a skew too large for `abs` is stale.
    let skew = now.saturating_sub(ts);
    if skew.checked_abs().is_none_or(|s| s > window) {
        return Err(SignatureError::Stale(skew, window));
    }
    let given = hex::decode(sig.trim()).map_err(|_| SignatureError::Malformed)?;
    if given.len() != 20 {
        return Err(SignatureError::Malformed);
    }
    // The timestamp as it was sent is what was signed.
    let expected = hex::decode(signature(token, ts_text, nonce)).expect("our own hex");
    if bool::from(expected.ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Why an encrypted push could not be opened. None quotes the body or the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafeModeError {
    #[error("the EncodingAESKey must be 43 characters of base64 (a 32-byte key)")]
    BadKey,
    #[error("the `msg_signature` query parameter is missing")]
    MissingSignature,
    #[error("the body has no `Encrypt` element")]
    MissingCiphertext,
    #[error("`msg_signature` does not match")]
    Mismatch,
    #[error("`Encrypt` is not base64 of whole AES blocks")]
    NotBase64,
    #[error("`Encrypt` does not decrypt under this EncodingAESKey (bad padding or length)")]
    Undecryptable,
    #[error("the decrypted message is for another app id")]
    OtherApp,
}

/// The fields of an encrypted push's envelope: the ciphertext (the plain fields WeChat may put
/// beside it in compatible mode are not trusted).
#[derive(Deserialize)]
struct Sealed {
    #[serde(rename = "Encrypt", default)]
    encrypt: Option<String>,
}

/// One official account's safe mode: its token, its AES key and its app id.
pub struct SafeMode {
    token: String,
    key: [u8; 32],
    app_id: String,
}

impl std::fmt::Debug for SafeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeMode")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl SafeMode {
    /// `encoding_aes_key`: the 43 characters the account's settings show (base64 of the key
    /// without its `=`).
    pub fn new(token: &str, encoding_aes_key: &str, app_id: &str) -> Result<Self, SafeModeError> {
        use base64::Engine as _;
        let k = encoding_aes_key.trim();
        if k.len() != 43 {
            return Err(SafeModeError::BadKey);
        }
        // WeChat makes the key's last character freely (its low bits are not zero), which a
        // strict decoder refuses.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let bytes = lenient.decode(format!("{k}=")).map_err(|_| SafeModeError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SafeModeError::BadKey)?;
        Ok(SafeMode {
            token: token.to_string(),
            key,
            app_id: app_id.to_string(),
        })
    }

    /// Checks `msg_signature` (SHA-1 of the token, timestamp, nonce and ciphertext, sorted and
    /// concatenated; compared in constant time) and opens the body: AES-256-CBC with the key's
    /// first 16 bytes as IV, PKCS#7 padding to 32-byte blocks, then 16 random bytes, the
    /// message's length (4 bytes, big-endian), the message, and the app id it is for. Returns
    /// the message: the event's plaintext XML. The timestamp's window is the caller's check
    /// ([`verify`]).
    pub fn open(
        &self,
        timestamp: &str,
        nonce: &str,
        msg_signature: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<u8>, SafeModeError> {
        let given = msg_signature.ok_or(SafeModeError::MissingSignature)?;
        let text = std::str::from_utf8(body).map_err(|_| SafeModeError::MissingCiphertext)?;
        let sealed: Sealed = quick_xml::de::from_str(text).map_err(|_| SafeModeError::MissingCiphertext)?;
        let cipher_b64 = present(sealed.encrypt).ok_or(SafeModeError::MissingCiphertext)?;
        let expected = sorted_sha1(&mut [self.token.as_str(), timestamp, nonce, cipher_b64.as_str()]);
        let given = hex::decode(given.trim()).map_err(|_| SafeModeError::Mismatch)?;
        if !bool::from(expected.as_slice().ct_eq(&given)) {
            return Err(SafeModeError::Mismatch);
        }
        let content = self.decrypt(&cipher_b64)?;
        let len_bytes: [u8; 4] = content
            .get(16..20)
            .ok_or(SafeModeError::Undecryptable)?
            .try_into()
            .expect("4 bytes");
        let len = u32::from_be_bytes(len_bytes) as usize;
        let msg = content.get(20..20 + len).ok_or(SafeModeError::Undecryptable)?;
        let app_id = &content[20 + len..];
        if !bool::from(app_id.ct_eq(self.app_id.as_bytes())) {
            return Err(SafeModeError::OtherApp);
        }
        Ok(msg.to_vec())
    }

    /// The CBC IV: the key's first 16 bytes.
    fn iv(&self) -> [u8; 16] {
        self.key[..16].try_into().expect("16 of 32 bytes")
    }

    /// Base64 ciphertext to its content: random bytes, length, message, app id (unpadded).
    fn decrypt(&self, cipher_b64: &str) -> Result<Vec<u8>, SafeModeError> {
        use aes::cipher::{BlockDecryptMut, KeyIvInit};
        use base64::Engine as _;
        let mut buf = base64::engine::general_purpose::STANDARD
            .decode(cipher_b64.as_bytes())
            .map_err(|_| SafeModeError::NotBase64)?;
        if buf.is_empty() || buf.len() % 32 != 0 {
            return Err(SafeModeError::NotBase64);
        }
        // WeChat pads to 32-byte blocks (PKCS#7 with a block of 32), which the cipher's own
        // 16-byte PKCS#7 check would refuse: decrypt without padding and check it here.
        let plain = cbc::Decryptor::<aes::Aes256>::new(&self.key.into(), &self.iv().into())
            .decrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf)
            .map_err(|_| SafeModeError::Undecryptable)?;
        let pad = usize::from(*plain.last().ok_or(SafeModeError::Undecryptable)?);
        if !(1..=32).contains(&pad)
            || pad > plain.len()
            || plain[plain.len() - pad..].iter().any(|b| usize::from(*b) != pad)
        {
            return Err(SafeModeError::Undecryptable);
        }
        let n = plain.len() - pad;
        buf.truncate(n);
        Ok(buf)
    }

    /// Seals `msg` as WeChat does (the inverse of [`SafeMode::open`]), with `random` as the 16
    /// leading bytes: the `Encrypt` text and its `msg_signature`. For the sandbox and tests, which
    /// push events as WeChat would.
    pub fn seal(&self, msg: &[u8], timestamp: &str, nonce: &str, random: [u8; 16]) -> (String, String) {
        use aes::cipher::{BlockEncryptMut, KeyIvInit};
        use base64::Engine as _;
        let mut plain = Vec::with_capacity(msg.len() + 64);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        plain.extend_from_slice(msg);
        plain.extend_from_slice(self.app_id.as_bytes());
        let pad = 32 - plain.len() % 32;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let n = plain.len();
        let sealed = cbc::Encryptor::<aes::Aes256>::new(&self.key.into(), &self.iv().into())
            .encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut plain, n)
            .expect("whole blocks");
        let encrypt = base64::engine::general_purpose::STANDARD.encode(sealed);
        let signature = hex::encode(sorted_sha1(&mut [
            self.token.as_str(),
            timestamp,
            nonce,
            encrypt.as_str(),
        ]));
        (encrypt, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// WeChat's own example for the official account's message encryption (its sample code's
    /// token, EncodingAESKey, app id, query and body).
    mod official {
        pub const TOKEN: &str = "spamtest";
        pub const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
        pub const APP_ID: &str = "wx2c2769f8efd9abc2";
        pub const TIMESTAMP: &str = "1409735669";
        pub const NONCE: &str = "1320562132";
        pub const MSG_SIGNATURE: &str = "5d197aaffba7e9b25a30732f161a50dee96bd5fa";
        pub const ENCRYPT: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
    }

    fn sealed_body(encrypt: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        )
    }

    #[test]
    fn safe_mode_opens_wechats_own_example() {
        use official::*;
        let sm = SafeMode::new(TOKEN, KEY, APP_ID).unwrap();
        let msg = sm
            .open(TIMESTAMP, NONCE, Some(MSG_SIGNATURE), sealed_body(ENCRYPT).as_bytes())
            .unwrap();
        let text = String::from_utf8(msg.clone()).unwrap();
        assert!(text.contains("<Content><![CDATA[abcdteT]]></Content>"), "{text}");
        assert_eq!(msg.len(), 280);
        assert_eq!(
            parse_event(&msg).unwrap(),
            WechatEvent::Text {
                openid: "oyORnuP8q7ou2gfYjqLzSIWZf0rs".into(),
                content: "abcdteT".into()
            }
        );
    }

    #[test]
    fn safe_mode_seals_what_it_opens() {
        use official::*;
        let sm = SafeMode::new(TOKEN, KEY, APP_ID).unwrap();
        let msg = job("success");
        let (encrypt, sig) = sm.seal(msg.as_bytes(), "1700000000", "42", [7; 16]);
        let opened = sm
            .open("1700000000", "42", Some(&sig), sealed_body(&encrypt).as_bytes())
            .unwrap();
        assert_eq!(opened, msg.as_bytes());
        // WeChat's example, sealed again with the random bytes it used, is its ciphertext.
        let theirs = sm
            .open(TIMESTAMP, NONCE, Some(MSG_SIGNATURE), sealed_body(ENCRYPT).as_bytes())
            .unwrap();
        let random: [u8; 16] = sm.decrypt(ENCRYPT).unwrap()[..16].try_into().unwrap();
        assert_eq!(
            sm.seal(&theirs, TIMESTAMP, NONCE, random),
            (ENCRYPT.to_string(), MSG_SIGNATURE.to_string())
        );
    }

    #[test]
    fn safe_mode_refuses_what_it_cannot_trust() {
        use official::*;
        let sm = SafeMode::new(TOKEN, KEY, APP_ID).unwrap();
        let body = sealed_body(ENCRYPT);
        let open = |ts: &str, sig: Option<&str>, body: &str| sm.open(ts, NONCE, sig, body.as_bytes());
        assert_eq!(open(TIMESTAMP, None, &body), Err(SafeModeError::MissingSignature));
        assert_eq!(
            open("1409735670", Some(MSG_SIGNATURE), &body),
            Err(SafeModeError::Mismatch)
        );
        assert_eq!(
            open(TIMESTAMP, Some(MSG_SIGNATURE), "<xml><MsgType>text</MsgType></xml>"),
            Err(SafeModeError::MissingCiphertext)
        );
        // One ciphertext character changed: the signature no longer covers it.
        let changed = ENCRYPT.replacen("hyzA", "hyzB", 1);
        assert_eq!(
            open(TIMESTAMP, Some(MSG_SIGNATURE), &sealed_body(&changed)),
            Err(SafeModeError::Mismatch)
        );
        // Signed right, but for another account's app id.
        let other = SafeMode::new(TOKEN, KEY, "wx0000000000000000").unwrap();
        assert_eq!(
            other.open(TIMESTAMP, NONCE, Some(MSG_SIGNATURE), body.as_bytes()),
            Err(SafeModeError::OtherApp)
        );
        // Another key: the padding does not check out, or the app id does not.
        let wrong = SafeMode::new(TOKEN, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg", APP_ID).unwrap();
        assert!(matches!(
            wrong.open(TIMESTAMP, NONCE, Some(MSG_SIGNATURE), body.as_bytes()),
            Err(SafeModeError::Undecryptable | SafeModeError::OtherApp)
        ));
        assert_eq!(
            SafeMode::new(TOKEN, "short", APP_ID).unwrap_err(),
            SafeModeError::BadKey
        );
    }

    const JOB: &str = "<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName>\n\
        <FromUserName><![CDATA[oia2TjuEGTNoeX76QEjQNrcURxG8]]></FromUserName>\n\
        <CreateTime>1395658920</CreateTime><MsgType><![CDATA[event]]></MsgType>\n\
        <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>200163836</MsgID>\n\
        <Status><![CDATA[STATUS]]></Status></xml>";

    fn job(status: &str) -> String {
        JOB.replace("STATUS", status)
    }

    #[test]
    fn template_job_outcomes_are_classed_and_keep_the_xml() {
        for (status, class) in [
            ("success", DeliveryClass::Delivered),
            ("failed:user block", DeliveryClass::Dead),
            ("failed: system failed", DeliveryClass::Unknown),
        ] {
            let body = job(status);
            assert_eq!(
                parse_event(body.as_bytes()).unwrap(),
                WechatEvent::TemplateJobFinished {
                    msg_id: "200163836".into(),
                    status: status.into()
                }
            );
            let r = parse_job_receipt("wx", body.as_bytes()).unwrap();
            assert_eq!((r.provider_id.as_str(), r.class), ("200163836", class), "{status}");
            assert_eq!(r.code, format!("wechat:{status}"));
            assert_eq!((r.reference, r.is_final), (None, true));
            assert_eq!(r.raw, body.as_bytes());
        }
    }

    #[test]
    fn plain_text_elements_read_as_cdata_does() {
        let body = "<xml>\n  <ToUserName>gh_7f083739789a</ToUserName>\n  <FromUserName>oia2Tj</FromUserName>\n  \
                    <CreateTime>1395658920</CreateTime>\n  <MsgType>event</MsgType>\n  \
                    <Event>TEMPLATESENDJOBFINISH</Event>\n  <MsgID> 200163836 </MsgID>\n  \
                    <Status>failed:user block</Status>\n</xml>";
        let r = parse_job_receipt("wx", body.as_bytes()).unwrap();
        assert_eq!((r.provider_id.as_str(), r.class), ("200163836", DeliveryClass::Dead));
    }

    #[test]
    fn an_unsubscribe_and_a_text_message_name_the_follower() {
        let unsub = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName>\
                     <CreateTime>123456789</CreateTime><MsgType><![CDATA[event]]></MsgType>\
                     <Event><![CDATA[unsubscribe]]></Event></xml>";
        assert_eq!(
            parse_event(unsub.as_bytes()).unwrap(),
            WechatEvent::Unsubscribed {
                openid: "oUser1".into()
            }
        );
        assert_eq!(parse_job_receipt("wx", unsub.as_bytes()), Err(InboundError::Body));
        let text = "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName>\
                    <CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]></MsgType>\
                    <Content><![CDATA[你发错了，我不认识这个人]]></Content><MsgId>1234567890123456</MsgId></xml>";
        assert_eq!(
            parse_event(text.as_bytes()).unwrap(),
            WechatEvent::Text {
                openid: "oUser1".into(),
                content: "你发错了，我不认识这个人".into()
            }
        );
        let sub = "<xml><FromUserName>oUser1</FromUserName><MsgType>event</MsgType><Event>subscribe</Event></xml>";
        assert_eq!(
            parse_event(sub.as_bytes()).unwrap(),
            WechatEvent::Other {
                msg_type: "event".into(),
                event: Some("subscribe".into())
            }
        );
    }

    #[test]
    fn a_prolog_is_read_past_and_an_external_entity_is_refused() {
        let body = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{}", job("success"));
        assert_eq!(
            parse_job_receipt("wx", body.as_bytes()).unwrap().class,
            DeliveryClass::Delivered
        );
        let xxe = "<!DOCTYPE xml [<!ENTITY id SYSTEM \"file:///etc/hostname\">]>\
                   <xml><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event>\
                   <MsgID>&id;</MsgID><Status>success</Status></xml>";
        // The entity is not defined for the reader, let alone fetched: the body is refused.
        assert_eq!(parse_job_receipt("wx", xxe.as_bytes()), Err(InboundError::Body));
    }

    #[test]
    fn garbage_and_incomplete_events_are_refused() {
        for body in [
            &b""[..],
            b"not xml at all",
            br#"{"MsgType":"event"}"#,
            b"<xml><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH",
            b"<xml><ToUserName>gh</ToUserName></xml>",
            // A job outcome without its id, or without its status.
            b"<xml><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><Status>success</Status></xml>",
            b"<xml><MsgType>event</MsgType><Event>TEMPLATESENDJOBFINISH</Event><MsgID>1</MsgID></xml>",
            b"<xml><MsgType>event</MsgType><Event>unsubscribe</Event></xml>",
            b"\xff\xfe<xml/>",
        ] {
            assert_eq!(
                parse_event(body),
                Err(InboundError::Body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_signature_is_sha1_of_the_sorted_three() {
        // printf '1395658920583729164reachline-token' | sha1sum
        assert_eq!(
            signature("reachline-token", "1395658920", "583729164"),
            "8d6c0aa9f1a77e5e51a20f948d8db8d0f0b32be0"
        );
        // Sorted, the token comes first here: printf '123abc13956589209' | sha1sum
        assert_eq!(
            signature("123abc", "1395658920", "9"),
            "a8268295b0445ba469b249c0804fc834cf8afda6"
        );
    }

    #[test]
    fn verify_takes_a_fresh_match_and_names_what_is_wrong_otherwise() {
        let (t, ts, n) = ("reachline-token", "1395658920", "583729164");
        let good = "8d6c0aa9f1a77e5e51a20f948d8db8d0f0b32be0";
        let now = 1_395_658_920 + 299;
        assert_eq!(verify(t, Some(ts), Some(n), Some(good), now, 300), Ok(()));
        assert_eq!(
            verify(t, Some(ts), Some(n), Some(&good.to_uppercase()), now, 300),
            Ok(())
        );
        assert_eq!(
            verify(t, Some(ts), Some(n), Some(good), now + 2, 300),
            Err(SignatureError::Stale(301, 300))
        );
        assert_eq!(
            verify("other", Some(ts), Some(n), Some(good), now, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(t, Some(ts), Some("583729165"), Some(good), now, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(t, Some("1395658921"), Some(n), Some(good), now, 300),
            Err(SignatureError::Mismatch),
            "the timestamp is signed"
        );
        assert_eq!(
            verify(t, Some(ts), Some(n), None, now, 300),
            Err(SignatureError::Missing("signature"))
        );
        assert_eq!(
            verify(t, None, Some(n), Some(good), now, 300),
            Err(SignatureError::Missing("timestamp"))
        );
        assert_eq!(
            verify(t, Some(ts), None, Some(good), now, 300),
            Err(SignatureError::Missing("nonce"))
        );
        assert_eq!(
            verify(t, Some("soon"), Some(n), Some(good), now, 300),
            Err(SignatureError::BadTimestamp)
        );
        for bad in ["zz", "8d6c0aa9", &format!("{good}00")] {
            assert_eq!(
                verify(t, Some(ts), Some(n), Some(bad), now, 300),
                Err(SignatureError::Malformed)
            );
        }
        for ts in [i64::MIN, i64::MAX] {
            let ts = ts.to_string();
            let sig = signature(t, &ts, n);
            assert!(matches!(
                verify(t, Some(&ts), Some(n), Some(&sig), now, 300),
                Err(SignatureError::Stale(..))
            ));
        }
    }
}
