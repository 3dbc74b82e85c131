//! The store's part of privacy (PIPL): erasure by crypto-shredding, erasure requests that wait
//! for the retention floors, the retention rules and their purge, key check values and the
//! re-wrapping of data keys under a new master key. Both back ends implement [`PrivacyStore`].
//!
//! Erasure destroys the borrower's wrapped data key and ledger commitment key, blanks every
//! ciphertext and blind index of theirs (so nothing is left to decrypt and no lookup can find
//! them), blanks the raw receipts of their messages (a provider's receipt can carry the
//! destination number), ends their sessions and cancels their queued sends. What remains is
//! what the retention floors keep and holds no personal data: ids, codes, times, amounts — and
//! the erasure's own record.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use reachline_domain::{BorrowerId, ExternalId};

use crate::Result;

/// Retention, in days, per class of record. The floors are the law's (`rules.md`): records of
/// collection contact at least 2 years; records of processing at least 3 years.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionRules {
    /// Attempts, receipts (raw), decisions, evidence: kept at least this long…
    pub collection_min_days: u32,
    /// …and deleted after this long.
    pub collection_max_days: u32,
    /// Access log, contact history, superseded consent events, change and check steps.
    pub processing_min_days: u32,
    pub processing_max_days: u32,
    /// A borrower with nothing unpaid and no activity for this long is shredded.
    pub personal_data_max_days: u32,
    /// Sessions, one-time-link nonces, code-failure counters, webhook replay digests.
    pub operational_max_days: u32,
}

/// Collection records: credit-card business rules art. 68 (summary in `rules.md`).
pub const COLLECTION_FLOOR_DAYS: u32 = 730;
/// Processing records: PIPL arts. 55–56 (`rules.md`).
pub const PROCESSING_FLOOR_DAYS: u32 = 1095;

impl Default for RetentionRules {
    fn default() -> Self {
        Self {
            collection_min_days: COLLECTION_FLOOR_DAYS,
            collection_max_days: 1825,
            processing_min_days: PROCESSING_FLOOR_DAYS,
            processing_max_days: 1825,
            personal_data_max_days: 1825,
            operational_max_days: 30,
        }
    }
}

impl RetentionRules {
    /// Refuses rules below the legal floors or whose maximum is below their minimum, naming the
    /// key (as in `[retention]`).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let floor = |key: &str, v: u32, floor: u32, why: &str| {
            if v < floor {
                Err(format!(
                    "retention.{key} = {v} is below the legal floor of {floor} days ({why})"
                ))
            } else {
                Ok(())
            }
        };
        floor(
            "collection_min_days",
            self.collection_min_days,
            COLLECTION_FLOOR_DAYS,
            "collection records: credit-card business rules art. 68",
        )?;
        floor(
            "processing_min_days",
            self.processing_min_days,
            PROCESSING_FLOOR_DAYS,
            "processing records: PIPL arts. 55-56",
        )?;
        let order = |max_key: &str, max: u32, min_key: &str, min: u32| {
            if max < min {
                Err(format!(
                    "retention.{max_key} = {max} is below retention.{min_key} = {min}"
                ))
            } else {
                Ok(())
            }
        };
        order(
            "collection_max_days",
            self.collection_max_days,
            "collection_min_days",
            self.collection_min_days,
        )?;
        order(
            "processing_max_days",
            self.processing_max_days,
            "processing_min_days",
            self.processing_min_days,
        )?;
        // A borrower's contact points are part of the collection record: not shredded before
        // it may go.
        order(
            "personal_data_max_days",
            self.personal_data_max_days,
            "collection_min_days",
            self.collection_min_days,
        )?;
        if self.operational_max_days == 0 {
            return Err("retention.operational_max_days must be at least 1".into());
        }
        Ok(())
    }

    /// The earliest moment a borrower last contacted at `last_contact` may be erased.
    pub fn erasable_from(&self, last_contact: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        last_contact.map(|t| t + Duration::days(self.collection_min_days.into()))
    }
}

/// An erasure that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureRow {
    pub at: DateTime<Utc>,
    pub actor: String,
    /// `borrower_request` or `retention`.
    pub basis: String,
    pub reason: String,
    /// The ledger leaf that records it, once appended.
    pub ledger_index: Option<u64>,
}

/// An erasure waiting for the retention floors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureRequest {
    pub requested_at: DateTime<Utc>,
    pub not_before: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
}

/// What decides whether a borrower may be erased now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureFacts {
    /// Installments not fully paid: the contract still needs the data (PIPL art. 13(2)).
    pub unpaid_installments: u64,
    /// The borrower's last notice attempt (a collection record).
    pub last_contact: Option<DateTime<Utc>>,
    pub erased: Option<ErasureRow>,
    pub requested: Option<ErasureRequest>,
}

/// What an erasure destroyed or blanked, by count.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Shredded {
    pub contact_points: u64,
    pub number_changes: u64,
    pub plan_requests: u64,
    pub raw_receipts: u64,
    pub sessions: u64,
    pub sends_cancelled: u64,
}

/// One line of a retention report: a class of record, its rule, and how many records it
/// reaches now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RetentionLine {
    pub class: &'static str,
    /// The table (or what) it counts.
    pub what: &'static str,
    pub keep_at_least_days: Option<u32>,
    pub delete_after_days: Option<u32>,
    pub action: &'static str,
    pub count: u64,
}

#[async_trait]
pub trait PrivacyStore: Send + Sync {
    /// The borrower with the lender's id `external`, erased or not (no key is needed).
    async fn borrower_id(&self, external: &ExternalId) -> Result<Option<BorrowerId>>;

    async fn erasure_facts(&self, borrower: BorrowerId) -> Result<ErasureFacts>;

    /// Shreds the borrower (see the module) and records the erasure, in one transaction.
    /// Erasing an erased borrower changes nothing and returns zero counts.
    async fn erase(
        &self,
        borrower: BorrowerId,
        at: DateTime<Utc>,
        actor: &str,
        basis: &str,
        reason: &str,
    ) -> Result<Shredded>;

    /// Notes the ledger leaf that records an erasure.
    async fn erasure_logged(&self, borrower: BorrowerId, ledger_index: u64) -> Result<()>;

    /// Every erasure, oldest first (to repeat them in backups).
    async fn erasures(&self) -> Result<Vec<(BorrowerId, ErasureRow)>>;

    /// Records (or replaces) an erasure request to carry out from `not_before`.
    async fn request_erasure(&self, borrower: BorrowerId, request: &ErasureRequest) -> Result<()>;

    /// Borrowers whose erasure request is due at `now`.
    async fn due_erasure_requests(&self, now: DateTime<Utc>) -> Result<Vec<BorrowerId>>;

    /// Borrowers the personal-data rule reaches at `now`: nothing unpaid, no attempt, payment
    /// or change to their record for `personal_data_max_days`, not erased.
    async fn expired_borrowers(&self, rules: &RetentionRules, now: DateTime<Utc>) -> Result<Vec<BorrowerId>>;

    /// Counts (`apply` false) or deletes (`apply` true) the records past their class's
    /// maximum, one line per table.
    async fn purge(&self, rules: &RetentionRules, now: DateTime<Utc>, apply: bool) -> Result<Vec<RetentionLine>>;

    /// Checks the keyring against the key check values stored with the data — every master
    /// key the data keys are wrapped under must be in it, and the blind-index key must be the
    /// one the indexes were made with — and stores the values missing (a new database, or one
    /// from before key checks). Fails with [`crate::StoreError::Keys`] before writing
    /// anything else.
    async fn check_keys(&self) -> Result<()>;

    /// Checks only the master keys (as [`PrivacyStore::check_keys`]): what a blind-index
    /// rotation needs, since the indexes are mid-way between two keys.
    async fn check_master_keys(&self) -> Result<()>;

    /// Starts (or finds started) a blind-index rotation to the keyring's blind-index key, from
    /// the key whose check value is `old_check` (refused if the indexes were made with another).
    /// Until it finishes, [`PrivacyStore::check_keys`] refuses every other use of the database.
    async fn begin_blind_rotation(&self, old_check: [u8; 32]) -> Result<()>;

    /// Re-indexes the next `limit` borrowers (their numbers, email addresses, ID number and the
    /// new addresses of their changes) under the keyring's blind-index key, in one transaction
    /// with the rotation's cursor. Returns how many it did (0: all done) and how many are left.
    async fn reindex_batch(&self, limit: usize) -> Result<(u64, u64)>;

    /// Ends the rotation: the blind-index key check becomes the new key's. The disconnection
    /// registry (numbers kept only as their index, so not re-indexable) is emptied; returns how
    /// many records it held, to be loaded again from the registry's file.
    async fn finish_blind_rotation(&self) -> Result<u64>;

    /// Data keys per master key id (live ones: not shredded).
    async fn wrapped_key_counts(&self) -> Result<Vec<(String, u64)>>;

    /// Re-wraps up to `limit` data keys not under the keyring's current master key, each batch
    /// one transaction; returns how many it re-wrapped (0: done).
    async fn rewrap_batch(&self, limit: usize) -> Result<u64>;

    /// Forgets the key check value of a retired master key once no data key is under it;
    /// refuses while some are.
    async fn retire_master_check(&self, key_id: &str) -> Result<()>;
}

/// Which cutoff a purge compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Collection,
    Processing,
    Operational,
}

impl Class {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Collection => "collection records",
            Class::Processing => "processing records",
            Class::Operational => "operational",
        }
    }

    pub(crate) fn days(self, r: &RetentionRules) -> (Option<u32>, u32) {
        match self {
            Class::Collection => (Some(r.collection_min_days), r.collection_max_days),
            Class::Processing => (Some(r.processing_min_days), r.processing_max_days),
            Class::Operational => (None, r.operational_max_days),
        }
    }
}

/// One purge: the rows of `table` matching `filter` (with `{cut}` standing for the class's
/// cutoff, the back end's placeholder). In order: rows that refer to others go first.
pub(crate) struct Purge {
    pub class: Class,
    pub table: &'static str,
    pub filter: &'static str,
}

pub(crate) const PURGES: &[Purge] = &[
    Purge {
        class: Class::Collection,
        table: "receipts",
        filter: "at < {cut}",
    },
    Purge {
        class: Class::Collection,
        table: "outbox_provider_ids",
        filter: "outbox_id IN (SELECT id FROM outbox WHERE created_at < {cut} \
                 AND state IN ('sent', 'failed', 'cancelled', 'in_doubt'))",
    },
    Purge {
        class: Class::Collection,
        table: "outbox",
        filter: "created_at < {cut} AND state IN ('sent', 'failed', 'cancelled', 'in_doubt')",
    },
    Purge {
        class: Class::Collection,
        table: "decisions",
        filter: "at < {cut}",
    },
    Purge {
        class: Class::Collection,
        table: "evidence",
        filter: "at < {cut}",
    },
    Purge {
        class: Class::Collection,
        table: "verification_provider_ids",
        filter: "message_id IN (SELECT id FROM verification_messages WHERE sent_at < {cut})",
    },
    Purge {
        class: Class::Collection,
        table: "verification_messages",
        filter: "sent_at < {cut}",
    },
    Purge {
        class: Class::Processing,
        table: "access_log",
        filter: "at < {cut}",
    },
    Purge {
        class: Class::Processing,
        table: "contact_events",
        filter: "at < {cut}",
    },
    // A consent event goes only once a later event for the same purpose and channel replaced
    // it: the standing consent is never purged.
    Purge {
        class: Class::Processing,
        table: "consents",
        filter: "at < {cut} AND EXISTS (SELECT 1 FROM consents d WHERE d.borrower_id = consents.borrower_id \
                 AND d.purpose = consents.purpose AND d.channel = consents.channel AND d.at > consents.at)",
    },
    Purge {
        class: Class::Processing,
        table: "contact_change_steps",
        filter: "at < {cut}",
    },
    Purge {
        class: Class::Processing,
        table: "contact_checks",
        filter: "updated_at < {cut} AND state IN ('confirmed', 'closed')",
    },
    Purge {
        class: Class::Processing,
        table: "contact_changes",
        filter: "updated_at < {cut} AND state IN ('applied', 'rejected', 'lapsed')",
    },
    Purge {
        class: Class::Processing,
        table: "plan_requests",
        filter: "COALESCE(decided_at, created_at) < {cut} AND state <> 'open'",
    },
    Purge {
        class: Class::Operational,
        table: "borrower_sessions",
        filter: "expires_at < {cut}",
    },
    Purge {
        class: Class::Operational,
        table: "sessions",
        filter: "expires_at < {cut}",
    },
    Purge {
        class: Class::Operational,
        table: "link_nonces",
        filter: "used_at < {cut}",
    },
    Purge {
        class: Class::Operational,
        table: "code_failures",
        filter: "updated_at < {cut}",
    },
    Purge {
        class: Class::Operational,
        table: "webhook_seen",
        filter: "expires_at < {cut}",
    },
];

/// The cutoff of `class` at `now`.
pub(crate) fn cutoff(class: Class, rules: &RetentionRules, now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::days(class.days(rules).1.into())
}

/// The report line of one purge.
pub(crate) fn line(p: &Purge, rules: &RetentionRules, count: u64, apply: bool) -> RetentionLine {
    let (min, max) = p.class.days(rules);
    RetentionLine {
        class: p.class.name(),
        what: p.table,
        keep_at_least_days: min,
        delete_after_days: Some(max),
        action: if apply { "deleted" } else { "would delete" },
        count,
    }
}

/// The message for a master key the keyring lacks.
pub(crate) fn missing_master(key_id: &str, count: u64, keys: &crate::Keyring) -> String {
    format!(
        "the data keys of {count} borrower(s) are wrapped under master key {key_id:?}, which the keys \
         given do not hold (current {:?}, retired {:?}): use the key file this database was written \
         with, or finish the rotation with the file that holds both keys; nothing was written",
        keys.key_id(),
        keys.previous_key_ids()
    )
}

pub(crate) fn wrong_master(key_id: &str) -> String {
    format!(
        "the master key named {key_id:?} in the keys given is not the one this database's data keys \
         were wrapped with (its key check does not open): wrong key file? nothing was written"
    )
}

pub(crate) const ROTATING_BLIND: &str = "a blind-index key rotation is in progress: finish it with \
     `reachline keys rotate-blind-index` (lookups by number would miss the borrowers not re-indexed yet); \
     nothing was written";

/// The cursor row of a blind-index rotation in `key_checks`: the last borrower id re-indexed.
pub(crate) const BLIND_ROTATION: &str = "blind_rotation";

/// A change's new address from its canonical text (E.164 or an email address).
pub(crate) fn change_address(text: &str) -> Result<reachline_domain::ContactAddress> {
    use reachline_domain::{ContactAddress, ContactKind};
    let kind = if text.contains('@') {
        ContactKind::Email
    } else {
        ContactKind::Mobile
    };
    ContactAddress::from_canonical(kind, text, None).map_err(|e| crate::StoreError::Corrupt(e.to_string()))
}

pub(crate) const WRONG_BLIND: &str = "the blind-index key given is not the one this database's \
     lookup indexes were made with (its key check differs): wrong key file? nothing was written";
