//! [`PrivacyStore`] on PostgreSQL: the statements of SQLite's, with PostgreSQL's types.
//!
//! An update leaves the old row version in the table until vacuum reclaims it; an erasure and a
//! re-wrapping batch therefore end with `VACUUM` of the tables they changed, so the replaced
//! wrapped keys and ciphertexts do not stay readable in dead tuples.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reachline_domain::{BorrowerId, ExternalId};
use sqlx::{Connection, Row};

use super::PgStore;
use crate::codec;
use crate::privacy::{
    change_address, cutoff, line, missing_master, wrong_master, ErasureFacts, ErasureRequest, ErasureRow, PrivacyStore,
    RetentionLine, RetentionRules, Shredded, BLIND_ROTATION, PURGES, ROTATING_BLIND, WRONG_BLIND,
};
use crate::{Result, StoreError};

/// The tables an erasure changes (vacuumed after it).
const SHRED_TABLES: &str = "borrower_keys, ledger_commitment_keys, borrowers, contact_points, contact_changes, \
     plan_requests, receipts, borrower_sessions";

fn erasure_row(r: &sqlx::postgres::PgRow) -> std::result::Result<ErasureRow, sqlx::Error> {
    Ok(ErasureRow {
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        basis: r.try_get("basis")?,
        reason: r.try_get("reason")?,
        ledger_index: r.try_get::<Option<i64>, _>("ledger_index")?.map(|i| i as u64),
    })
}

#[async_trait]
impl PrivacyStore for PgStore {
    async fn borrower_id(&self, external: &ExternalId) -> Result<Option<BorrowerId>> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM borrowers WHERE external_id = $1")
            .bind(external.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(id.map(BorrowerId))
    }

    async fn erasure_facts(&self, borrower: BorrowerId) -> Result<ErasureFacts> {
        let unpaid: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM installments i JOIN loans l ON l.id = i.loan_id \
             WHERE l.borrower_id = $1 AND i.amount_paid_minor < i.amount_due_minor",
        )
        .bind(borrower.0)
        .fetch_one(&self.pool)
        .await?;
        let last: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT MAX(COALESCE(sent_at, updated_at)) FROM outbox WHERE borrower_id = $1 \
             AND state NOT IN ('queued', 'leased', 'cancelled')",
        )
        .bind(borrower.0)
        .fetch_one(&self.pool)
        .await?;
        let erased = sqlx::query("SELECT at, actor, basis, reason, ledger_index FROM erasures WHERE borrower_id = $1")
            .bind(borrower.0)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| erasure_row(&r))
            .transpose()?;
        let requested =
            sqlx::query("SELECT requested_at, not_before, actor, reason FROM erasure_requests WHERE borrower_id = $1")
                .bind(borrower.0)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| {
                    Ok::<_, sqlx::Error>(ErasureRequest {
                        requested_at: r.try_get("requested_at")?,
                        not_before: r.try_get("not_before")?,
                        actor: r.try_get("actor")?,
                        reason: r.try_get("reason")?,
                    })
                })
                .transpose()?;
        Ok(ErasureFacts {
            unpaid_installments: unpaid as u64,
            last_contact: last,
            erased,
            requested,
        })
    }

    async fn erase(
        &self,
        borrower: BorrowerId,
        at: DateTime<Utc>,
        actor: &str,
        basis: &str,
        reason: &str,
    ) -> Result<Shredded> {
        let b = borrower.0;
        let mut tx = self.pool.begin().await?;
        // Serialises two erasures of one borrower.
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM borrowers WHERE id = $1 FOR UPDATE")
            .bind(b)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                what: "borrower",
                id: borrower.to_string(),
            });
        }
        let erased: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM erasures WHERE borrower_id = $1)")
            .bind(b)
            .fetch_one(&mut *tx)
            .await?;
        if erased {
            return Ok(Shredded::default());
        }
        macro_rules! at_ {
            ($sql:expr) => {
                sqlx::query($sql)
                    .bind(b)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            };
        }
        macro_rules! of {
            ($sql:expr) => {
                sqlx::query($sql).bind(b).execute(&mut *tx).await?.rows_affected()
            };
        }
        at_!("UPDATE borrower_keys SET wrapped_key = NULL, destroyed_at = COALESCE(destroyed_at, $2) WHERE borrower_id = $1");
        of!("DELETE FROM ledger_commitment_keys WHERE borrower_id = $1");
        at_!(
            "UPDATE borrowers SET name_enc = ''::bytea, national_id_enc = NULL, national_id_bidx = NULL, \
             updated_at = $2 WHERE id = $1"
        );
        let out = Shredded {
            contact_points: at_!(
                "UPDATE contact_points SET address_enc = ''::bytea, address_bidx = ''::bytea, holder_name_enc = NULL, \
                 retired_at = COALESCE(retired_at, $2), retire_reason = COALESCE(retire_reason, 'erased') \
                 WHERE borrower_id = $1"
            ),
            number_changes: at_!(
                "UPDATE contact_changes SET new_address_enc = ''::bytea, new_address_bidx = ''::bytea, updated_at = $2, \
                 state = CASE WHEN state IN ('pending', 'review') THEN 'lapsed' ELSE state END WHERE borrower_id = $1"
            ),
            plan_requests: of!("UPDATE plan_requests SET reason_enc = ''::bytea WHERE borrower_id = $1"),
            raw_receipts: of!(
                "UPDATE receipts SET raw = ''::bytea WHERE length(raw) > 0 AND \
                 (outbox_id IN (SELECT id FROM outbox WHERE borrower_id = $1) OR (outbox_id IS NULL AND EXISTS \
                 (SELECT 1 FROM verification_provider_ids v JOIN verification_messages m ON m.id = v.message_id \
                 WHERE m.borrower_id = $1 AND v.provider = receipts.provider AND v.provider_id = receipts.provider_id)))"
            ),
            sessions: of!("DELETE FROM borrower_sessions WHERE borrower_id = $1"),
            sends_cancelled: at_!(
                "UPDATE outbox SET state = 'cancelled', detail = 'borrower erased', lease_owner = NULL, \
                 lease_until = NULL, updated_at = $2 WHERE borrower_id = $1 AND state IN ('queued', 'leased')"
            ),
        };
        of!("DELETE FROM code_failures WHERE borrower_id = $1");
        of!("DELETE FROM borrower_preferences WHERE borrower_id = $1");
        of!("DELETE FROM engine_wake WHERE borrower_id = $1");
        at_!(
            "UPDATE contact_checks SET state = 'closed', updated_at = $2 WHERE borrower_id = $1 \
             AND state IN ('open', 'operator_task')"
        );
        of!("DELETE FROM erasure_requests WHERE borrower_id = $1");
        sqlx::query("INSERT INTO erasures (borrower_id, at, actor, basis, reason) VALUES ($1, $2, $3, $4, $5)")
            .bind(b)
            .bind(at)
            .bind(actor)
            .bind(basis)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        sqlx::query(&format!("VACUUM {SHRED_TABLES}"))
            .execute(&self.pool)
            .await?;
        Ok(out)
    }

    async fn erasures(&self) -> Result<Vec<(BorrowerId, ErasureRow)>> {
        let rows = sqlx::query(
            "SELECT borrower_id, at, actor, basis, reason, ledger_index FROM erasures ORDER BY at, borrower_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Ok::<_, sqlx::Error>((BorrowerId(r.try_get("borrower_id")?), erasure_row(r)?)))
            .collect::<std::result::Result<_, _>>()?)
    }

    async fn erasure_logged(&self, borrower: BorrowerId, ledger_index: u64) -> Result<()> {
        sqlx::query("UPDATE erasures SET ledger_index = $2 WHERE borrower_id = $1")
            .bind(borrower.0)
            .bind(ledger_index as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn request_erasure(&self, borrower: BorrowerId, r: &ErasureRequest) -> Result<()> {
        sqlx::query(
            "INSERT INTO erasure_requests (borrower_id, requested_at, not_before, actor, reason) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (borrower_id) DO UPDATE SET requested_at = excluded.requested_at, \
             not_before = excluded.not_before, actor = excluded.actor, reason = excluded.reason",
        )
        .bind(borrower.0)
        .bind(r.requested_at)
        .bind(r.not_before)
        .bind(&r.actor)
        .bind(&r.reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn due_erasure_requests(&self, now: DateTime<Utc>) -> Result<Vec<BorrowerId>> {
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT borrower_id FROM erasure_requests WHERE not_before <= $1 ORDER BY borrower_id")
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
        Ok(ids.into_iter().map(BorrowerId).collect())
    }

    async fn expired_borrowers(&self, rules: &RetentionRules, now: DateTime<Utc>) -> Result<Vec<BorrowerId>> {
        let cut = now - chrono::Duration::days(rules.personal_data_max_days.into());
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT b.id FROM borrowers b WHERE b.updated_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM erasures e WHERE e.borrower_id = b.id) \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.borrower_id = b.id AND o.updated_at >= $1) \
             AND NOT EXISTS (SELECT 1 FROM loans l JOIN installments i ON i.loan_id = l.id \
               WHERE l.borrower_id = b.id AND (i.amount_paid_minor < i.amount_due_minor OR i.updated_at >= $1)) \
             ORDER BY b.id",
        )
        .bind(cut)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(BorrowerId).collect())
    }

    async fn purge(&self, rules: &RetentionRules, now: DateTime<Utc>, apply: bool) -> Result<Vec<RetentionLine>> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(PURGES.len());
        for p in PURGES {
            let filter = p.filter.replace("{cut}", "$1");
            let cut = cutoff(p.class, rules, now);
            let n = if apply {
                sqlx::query(&format!("DELETE FROM {} WHERE {filter}", p.table))
                    .bind(cut)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            } else {
                sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {} WHERE {filter}", p.table))
                    .bind(cut)
                    .fetch_one(&mut *tx)
                    .await? as u64
            };
            out.push(line(p, rules, n, apply));
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn check_keys(&self) -> Result<()> {
        self.check(true).await
    }

    async fn check_master_keys(&self) -> Result<()> {
        self.check(false).await
    }

    async fn begin_blind_rotation(&self, old_check: [u8; 32]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE key_checks IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let started: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM key_checks WHERE name = $1)")
            .bind(BLIND_ROTATION)
            .fetch_one(&mut *tx)
            .await?;
        if !started {
            let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM key_checks WHERE name = 'blind_index'")
                .fetch_optional(&mut *tx)
                .await?;
            if stored.is_some_and(|v| v.as_slice() != old_check.as_slice()) {
                return Err(StoreError::Keys(WRONG_BLIND.into()));
            }
            sqlx::query("INSERT INTO key_checks (name, value) VALUES ($1, $2)")
                .bind(BLIND_ROTATION)
                .bind(0i64.to_be_bytes().to_vec())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn reindex_batch(&self, limit: usize) -> Result<(u64, u64)> {
        let keys = &self.keys;
        let mut tx = self.pool.begin().await?;
        let cursor = rotation_cursor(&mut tx).await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT b.id FROM borrowers b JOIN borrower_keys k ON k.borrower_id = b.id \
             WHERE b.id > $1 AND k.wrapped_key IS NOT NULL ORDER BY b.id LIMIT $2",
        )
        .bind(cursor)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        for &id in &ids {
            let sealer = super::data_key_for(&mut tx, keys, BorrowerId(id)).await?.sealer();
            let row = sqlx::query(
                "SELECT external_id, name_enc, national_id_scheme, national_id_enc, national_id_bidx, locale, \
                 time_zone, jurisdiction FROM borrowers WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if let Some(nid) = super::borrower_row(&row)?.open(&sealer)?.national_id {
                sqlx::query("UPDATE borrowers SET national_id_bidx = $2 WHERE id = $1")
                    .bind(id)
                    .bind(codec::national_id_bidx(keys, &nid).to_vec())
                    .execute(&mut *tx)
                    .await?;
            }
            let contacts = sqlx::query(&format!(
                "SELECT {} FROM contact_points WHERE borrower_id = $1 AND length(address_enc) > 0",
                super::CONTACT_COLS
            ))
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for r in &contacts {
                let stored = super::contact_row(r)?;
                let open = stored.row.open(&sealer)?;
                sqlx::query("UPDATE contact_points SET address_bidx = $2 WHERE id = $1")
                    .bind(stored.id.0)
                    .bind(codec::address_bidx(keys, &open.address).to_vec())
                    .execute(&mut *tx)
                    .await?;
            }
            let changes: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT id, new_address_enc FROM contact_changes WHERE borrower_id = $1 AND length(new_address_enc) > 0",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for (change, enc) in changes {
                let address = change_address(&sealer.open(super::selfservice::NEW_ADDRESS, &enc)?)?;
                sqlx::query("UPDATE contact_changes SET new_address_bidx = $2 WHERE id = $1")
                    .bind(change)
                    .bind(codec::address_bidx(keys, &address).to_vec())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let last = ids.last().copied().unwrap_or(cursor);
        sqlx::query("UPDATE key_checks SET value = $2 WHERE name = $1")
            .bind(BLIND_ROTATION)
            .bind(last.to_be_bytes().to_vec())
            .execute(&mut *tx)
            .await?;
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM borrowers b JOIN borrower_keys k ON k.borrower_id = b.id \
             WHERE b.id > $1 AND k.wrapped_key IS NOT NULL",
        )
        .bind(last)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((ids.len() as u64, left as u64))
    }

    async fn finish_blind_rotation(&self) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let cursor = rotation_cursor(&mut tx).await?;
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM borrowers b JOIN borrower_keys k ON k.borrower_id = b.id \
             WHERE b.id > $1 AND k.wrapped_key IS NOT NULL",
        )
        .bind(cursor)
        .fetch_one(&mut *tx)
        .await?;
        if left > 0 {
            return Err(StoreError::Conflict(format!(
                "{left} borrower(s) are not re-indexed yet"
            )));
        }
        let registry = sqlx::query("DELETE FROM disconnects")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE key_checks SET value = $1 WHERE name = 'blind_index'")
            .bind(self.keys.blind_check().to_vec())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM key_checks WHERE name = $1")
            .bind(BLIND_ROTATION)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        sqlx::query("VACUUM borrowers, contact_points, contact_changes")
            .execute(&self.pool)
            .await?;
        Ok(registry)
    }

    async fn wrapped_key_counts(&self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT key_id, COUNT(*) FROM borrower_keys WHERE wrapped_key IS NOT NULL GROUP BY key_id ORDER BY key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(k, n)| (k, n as u64)).collect())
    }

    async fn rewrap_batch(&self, limit: usize) -> Result<u64> {
        let keys = &self.keys;
        let mut tx = self.pool.begin().await?;
        // SKIP LOCKED: two nodes rotating at once share the work instead of waiting.
        let rows: Vec<(i64, String, Vec<u8>)> = sqlx::query_as(
            "SELECT borrower_id, key_id, wrapped_key FROM borrower_keys \
             WHERE wrapped_key IS NOT NULL AND key_id <> $1 ORDER BY borrower_id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(keys.key_id())
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut wrapped = Vec::with_capacity(rows.len());
        for (b, _, w) in &rows {
            ids.push(*b);
            wrapped.push(keys.wrap(&keys.unwrap_key(w)?));
        }
        let n = sqlx::query(
            "UPDATE borrower_keys k SET key_id = $1, wrapped_key = u.w \
             FROM UNNEST($2::bigint[], $3::bytea[]) AS u(b, w) WHERE k.borrower_id = u.b",
        )
        .bind(keys.key_id())
        .bind(&ids)
        .bind(&wrapped)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if n > 0 {
            sqlx::query("VACUUM borrower_keys").execute(&self.pool).await?;
        }
        Ok(n)
    }

    async fn retire_master_check(&self, key_id: &str) -> Result<()> {
        let left: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM borrower_keys WHERE key_id = $1 AND wrapped_key IS NOT NULL")
                .bind(key_id)
                .fetch_one(&self.pool)
                .await?;
        if left > 0 {
            return Err(StoreError::Conflict(format!(
                "{left} data key(s) are still wrapped under master key {key_id:?}"
            )));
        }
        sqlx::query("DELETE FROM key_checks WHERE name = $1")
            .bind(format!("master:{key_id}"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl PgStore {
    async fn check(&self, blind: bool) -> Result<()> {
        let keys = &self.keys;
        let mut c = self.pool.acquire().await?;
        let stored: HashMap<String, Vec<u8>> = sqlx::query_as("SELECT name, value FROM key_checks")
            .fetch_all(&mut *c)
            .await?
            .into_iter()
            .collect();
        let live: Vec<(String, i64)> =
            sqlx::query_as("SELECT key_id, COUNT(*) FROM borrower_keys WHERE wrapped_key IS NOT NULL GROUP BY key_id")
                .fetch_all(&mut *c)
                .await?;
        for (id, n) in &live {
            if !keys.has_master(id) {
                return Err(StoreError::Keys(missing_master(id, *n as u64, keys)));
            }
            let ok = match stored.get(&format!("master:{id}")) {
                Some(check) => keys.verify_master_check(id, check) == Some(true),
                None => {
                    let w: Vec<u8> = sqlx::query_scalar(
                        "SELECT wrapped_key FROM borrower_keys WHERE key_id = $1 AND wrapped_key IS NOT NULL LIMIT 1",
                    )
                    .bind(id)
                    .fetch_one(&mut *c)
                    .await?;
                    keys.unwrap_key(&w).is_ok()
                }
            };
            if !ok {
                return Err(StoreError::Keys(wrong_master(id)));
            }
        }
        if let Some(check) = stored.get(&format!("master:{}", keys.key_id())) {
            if keys.verify_master_check(keys.key_id(), check) != Some(true) {
                return Err(StoreError::Keys(wrong_master(keys.key_id())));
            }
        }
        if stored.contains_key(BLIND_ROTATION) {
            if blind {
                return Err(StoreError::Keys(ROTATING_BLIND.into()));
            }
            return Ok(());
        }
        if !blind {
            return Ok(());
        }
        match stored.get("blind_index") {
            Some(v) if v.as_slice() != keys.blind_check().as_slice() => {
                return Err(StoreError::Keys(WRONG_BLIND.into()))
            }
            Some(_) => {}
            None => {
                let row = sqlx::query(&format!(
                    "SELECT {} FROM contact_points WHERE retired_at IS NULL AND length(address_bidx) > 0 LIMIT 1",
                    super::CONTACT_COLS
                ))
                .fetch_optional(&mut *c)
                .await?;
                if let Some(row) = row {
                    let stored = super::contact_row(&row)?;
                    let sealer = super::data_key_for(&mut c, keys, stored.borrower_id).await?.sealer();
                    let open = stored.row.open(&sealer)?;
                    if codec::address_bidx(keys, &open.address).as_slice() != stored.row.address_bidx.as_slice() {
                        return Err(StoreError::Keys(WRONG_BLIND.into()));
                    }
                }
            }
        }
        let mut tx = c.begin().await?;
        sqlx::query("INSERT INTO key_checks (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(format!("master:{}", keys.key_id()))
            .bind(keys.master_check())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO key_checks (name, value) VALUES ('blind_index', $1) ON CONFLICT (name) DO NOTHING")
            .bind(keys.blind_check().to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn rotation_cursor(tx: &mut sqlx::PgConnection) -> Result<i64> {
    let v: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM key_checks WHERE name = $1")
        .bind(BLIND_ROTATION)
        .fetch_optional(&mut *tx)
        .await?;
    let v = v.ok_or_else(|| StoreError::Conflict("no blind-index rotation is in progress".into()))?;
    let arr: [u8; 8] = v
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt("the blind-index rotation's cursor".into()))?;
    Ok(i64::from_be_bytes(arr))
}
