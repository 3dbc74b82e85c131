//! The leaves the engine writes: a notice handed to a provider, and each receipt that changed
//! what is known of it. Leaves hold no personal data: ids, times, the channel, the provider's id,
//! the template, a hash of the text and a keyed commitment of the address.

use chrono::{DateTime, Utc};
use reachline_domain::{BorrowerId, ContactAddress, DeliveryClass};
use reachline_ledger::leaf::{content_hash, Code, CommitmentKey, Leaf, LeafKind, TemplateRef};
use reachline_store::engine::{OutboxRow, ReceiptMatch};

use crate::EngineError;

pub(crate) fn code(s: &str) -> Result<Code, EngineError> {
    Code::parse(s).map_err(|e| EngineError::Ledger(format!("{s:?}: {e}")))
}

/// The provider's id as a leaf may hold it (printable ASCII without spaces, at most 255).
pub(crate) fn provider_id(id: &str) -> Option<String> {
    (!id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_graphic())).then(|| id.to_string())
}

/// A notice handed to a provider that took it.
#[allow(clippy::too_many_arguments)]
pub fn sent_leaf(
    row: &OutboxRow,
    key: &CommitmentKey,
    address: &ContactAddress,
    provider_ids: &[String],
    template: (&str, u32),
    text: &str,
    at: DateTime<Utc>,
) -> Result<Leaf, EngineError> {
    Ok(Leaf {
        kind: LeafKind::NoticeSent,
        time_micros: at.timestamp_micros(),
        borrower: row.borrower,
        notice: Some(row.id),
        contact: Some(row.contact),
        channel: Some(row.channel),
        provider_message_id: provider_ids.first().and_then(|p| provider_id(p)),
        template: Some(TemplateRef {
            id: code(template.0)?,
            version: template.1,
        }),
        content_hash: Some(content_hash(text)),
        address_commitment: Some(key.commit(address)),
    })
}

/// A receipt (or a click) that changed what is known of a send.
pub fn receipt_leaf(
    m: &ReceiptMatch,
    class: DeliveryClass,
    provider_id_seen: &str,
    at: DateTime<Utc>,
) -> Result<Leaf, EngineError> {
    Ok(Leaf {
        kind: LeafKind::Receipt {
            status: code(class.as_str())?,
        },
        time_micros: at.timestamp_micros(),
        borrower: m.borrower,
        notice: Some(m.outbox_id),
        contact: Some(m.contact),
        channel: Some(m.channel),
        provider_message_id: provider_id(provider_id_seen),
        template: None,
        content_hash: None,
        address_commitment: None,
    })
}

/// A borrower's erasure (`basis`: `borrower_request`, `retention`): no contact, no commitment.
pub fn erased_leaf(borrower: BorrowerId, at: DateTime<Utc>, basis: &str) -> Result<Leaf, EngineError> {
    Ok(Leaf {
        kind: LeafKind::Erased { basis: code(basis)? },
        time_micros: at.timestamp_micros(),
        borrower,
        notice: None,
        contact: None,
        channel: None,
        provider_message_id: None,
        template: None,
        content_hash: None,
        address_commitment: None,
    })
}
