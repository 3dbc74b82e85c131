//! Channels over real protocols: the `Channel` trait every adapter implements, the SMPP
//! adapter and its sandbox SMSC, failover across providers, and the pure tables that turn each
//! protocol's outcomes into a `DeliveryClass`.

pub mod classify;
pub mod failover;
pub mod http;
pub mod http_sandbox;
pub mod matching;
pub mod peers;
pub mod smpp;
pub mod smtp;
pub mod smtp_sandbox;
pub mod tls;
pub mod webhook;
pub mod wechat;

use std::pin::Pin;

use futures::Stream;
use reachline_domain::{ContactAddress, DeliveryClass};

/// Our reference for one message (a notice attempt); receipts come back with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageRef(pub String);

impl std::fmt::Display for MessageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A rendered message, ready to go.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub reference: MessageRef,
    pub to: ContactAddress,
    pub text: String,
}

/// What a provider said when it took a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The provider that took it (its configured name).
    pub provider: String,
    /// The provider's ids, one per part (SMS concatenation) or one for the message.
    pub provider_ids: Vec<String>,
}

/// Whether trying the same message again later can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permanence {
    Transient,
    Permanent,
    /// The message went out to the provider and no answer came (the connection dropped, or the
    /// answer was too late): the provider may have taken it. Trying again, here or with another
    /// provider, could send it twice, so nobody does; the engine records the send in doubt and
    /// its ladder climbs on the silence, as after a crash mid-send.
    InDoubt,
}

/// Who the error is about: the provider (down, slow, throttling us), so another provider may
/// take the message; or the message or address, which another provider would refuse too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Provider,
    Message,
}

/// A failed send, classed. Retry logic reads `permanence` and `scope`, never the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider}: {class} ({code}): {detail}")]
pub struct SendError {
    pub provider: String,
    pub class: DeliveryClass,
    pub permanence: Permanence,
    pub scope: Scope,
    /// The provider's code as it sent it (`0x0000000b`, `550 5.1.1`, `UNREGISTERED`).
    pub code: String,
    /// Never holds the address.
    pub detail: String,
}

impl SendError {
    pub fn is_transient(&self) -> bool {
        self.permanence == Permanence::Transient
    }

    pub fn is_permanent(&self) -> bool {
        self.permanence == Permanence::Permanent
    }

    pub fn is_in_doubt(&self) -> bool {
        self.permanence == Permanence::InDoubt
    }

    /// The message was handed to the provider, which did not answer: it may have taken it
    /// (see [`Permanence::InDoubt`]). The breaker counts it against the provider.
    pub fn in_doubt(provider: &str, detail: impl Into<String>) -> Self {
        SendError {
            provider: provider.to_string(),
            class: DeliveryClass::Unknown,
            permanence: Permanence::InDoubt,
            scope: Scope::Provider,
            code: "in_doubt".into(),
            detail: detail.into(),
        }
    }

    /// The provider could not be reached or did not answer in time.
    pub fn unavailable(provider: &str, detail: impl Into<String>) -> Self {
        SendError {
            provider: provider.to_string(),
            class: DeliveryClass::Transient,
            permanence: Permanence::Transient,
            scope: Scope::Provider,
            code: "unavailable".into(),
            detail: detail.into(),
        }
    }

    /// The provider answered that it is failing or throttling us (5xx, 429, busy, quota spent):
    /// transient, and about the provider, so another provider may take the message and the
    /// address is not blamed.
    pub fn provider_failed(provider: &str, code: impl Into<String>, detail: impl Into<String>) -> Self {
        SendError {
            scope: Scope::Provider,
            ..SendError::rejected(provider, DeliveryClass::Transient, code, detail)
        }
    }

    /// The provider answered with a code, classed; transient classes may be retried.
    pub fn rejected(provider: &str, class: DeliveryClass, code: impl Into<String>, detail: impl Into<String>) -> Self {
        SendError {
            provider: provider.to_string(),
            class,
            permanence: if class == DeliveryClass::Transient {
                Permanence::Transient
            } else {
                Permanence::Permanent
            },
            scope: Scope::Message,
            code: code.into(),
            detail: detail.into(),
        }
    }
}

/// A receipt, matched to the message it answers, classed, with the raw receipt kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub provider: String,
    /// `None` when no sent message had this id within the hold window.
    pub reference: Option<MessageRef>,
    /// The provider's id as it issued it (for a matched receipt) or as the receipt gave it.
    pub provider_id: String,
    /// Which part of a concatenated message (0-based), if the channel splits messages.
    pub part: Option<u8>,
    pub class: DeliveryClass,
    /// The code the class was read from (`err:001`, `stat:DELIVRD`, `5.1.1`, `43004`).
    pub code: String,
    /// Whether the message will not change state again.
    pub is_final: bool,
    /// The receipt as it came, for the record.
    pub raw: Vec<u8>,
    /// Whether the provider still waits for our answer to this receipt (see [`Unanswered`]).
    pub unanswered: Unanswered,
}

impl Receipt {
    /// A receipt that could not be read (it names no message, or its body does not parse):
    /// kept and flagged — no reference, `Unknown`, code `malformed`, the raw bytes as they came
    /// — and recorded among the receipts that matched nothing.
    pub fn malformed(provider: &str, raw: Vec<u8>, unanswered: Unanswered) -> Receipt {
        Receipt {
            provider: provider.to_string(),
            reference: None,
            provider_id: String::new(),
            part: None,
            class: reachline_domain::DeliveryClass::Unknown,
            code: "malformed".into(),
            is_final: false,
            raw,
            unanswered,
        }
    }
}

/// Keeps a provider's receipt unanswered while any copy of its [`Receipt`] lives. SMPP answers a
/// `deliver_sm` only then: the engine holds each batch of receipts until it is recorded, so a
/// crash before that leaves the receipt unanswered and the SMSC delivers it again, where
/// answering on arrival would have lost it. A consumer that records nothing (a test, a
/// benchmark) answers simply by dropping what it read. Providers that need no answer, or were
/// answered by the HTTP response already, use [`Unanswered::none`].
#[derive(Clone, Default)]
pub struct Unanswered(Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl Unanswered {
    pub fn none() -> Self {
        Self(None)
    }

    /// Answers by dropping `answer` once the last copy of the receipt is dropped.
    pub fn until_dropped(answer: impl std::any::Any + Send + Sync) -> Self {
        Self(Some(std::sync::Arc::new(answer)))
    }
}

impl std::fmt::Debug for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Unanswered" } else { "Answered" })
    }
}

/// Receipts compare by what they say; whether one is answered yet is not part of that.
impl PartialEq for Unanswered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Unanswered {}

/// Receipts as they arrive.
pub type ReceiptStream = Pin<Box<dyn Stream<Item = Receipt> + Send>>;

/// One provider of one channel (or a failover group of them).
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// Which channel this sends on.
    fn kind(&self) -> reachline_domain::Channel;
    /// The configured name of the provider.
    fn provider(&self) -> &str;
    /// Sends a message; returns the provider's ids or a classed failure.
    async fn send(&self, msg: &Outbound) -> Result<Accepted, SendError>;
    /// The receipts; can be taken once.
    fn take_receipts(&self) -> Option<ReceiptStream>;
    /// Each provider behind this channel and how it stands now (for the dashboard and
    /// `/metrics`): one entry for a single provider, one per member of a failover group.
    fn status(&self) -> Vec<ProviderStatus> {
        vec![ProviderStatus {
            provider: self.provider().to_string(),
            state: ProviderState::Up,
        }]
    }
}

/// How a provider stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderState {
    /// Taking sends (a breaker closed, a session bound).
    Up,
    /// Its breaker opened after failures: skipped until a trial send.
    Open,
    /// One trial send is out.
    HalfOpen,
    /// Not connected (an SMSC not bound).
    Down,
}

impl ProviderState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Up => "up",
            ProviderState::Open => "open",
            ProviderState::HalfOpen => "half_open",
            ProviderState::Down => "down",
        }
    }
}

/// A provider's name and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStatus {
    pub provider: String,
    pub state: ProviderState,
}
