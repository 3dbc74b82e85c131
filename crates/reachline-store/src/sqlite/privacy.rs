//! [`PrivacyStore`] on SQLite, and the shredding of a borrower inside a backup file.
//!
//! Erasure and re-wrapping run with `secure_delete` on, so the bytes they replace (a wrapped
//! key, a ciphertext, a blind index) are overwritten with zeros in the file rather than left in
//! free space, and end with a WAL checkpoint that truncates the log, which held earlier copies of
//! the pages.

use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reachline_domain::{BorrowerId, ExternalId};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::SqliteStore;
use crate::codec::{self, ts_from_micros, ts_micros};
use crate::privacy::{
    change_address, cutoff, line, missing_master, wrong_master, ErasureFacts, ErasureRequest, ErasureRow, PrivacyStore,
    RetentionLine, RetentionRules, Shredded, BLIND_ROTATION, PURGES, ROTATING_BLIND, WRONG_BLIND,
};
use crate::{Keyring, Result, StoreError};

/// Overwrites what `borrower` holds in clear-adjacent form (see `crate::privacy`) and records
/// the erasure `(actor, basis, reason)`. `Ok(None)` if the borrower was erased before.
pub(crate) fn shred(
    tx: &Transaction<'_>,
    borrower: i64,
    at: i64,
    record: (&str, &str, &str),
) -> Result<Option<Shredded>> {
    let erased: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM erasures WHERE borrower_id = ?1)",
        [borrower],
        |r| r.get(0),
    )?;
    if erased {
        return Ok(None);
    }
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM borrowers WHERE id = ?1)",
        [borrower],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(StoreError::NotFound {
            what: "borrower",
            id: borrower.to_string(),
        });
    }
    // Statements that take the borrower (`?1`) and the time (`?2`), and those that take only
    // the borrower.
    let at_ = |sql: &str| -> Result<u64> { Ok(tx.execute(sql, params![borrower, at])? as u64) };
    let of = |sql: &str| -> Result<u64> { Ok(tx.execute(sql, [borrower])? as u64) };
    at_(
        "UPDATE borrower_keys SET wrapped_key = NULL, destroyed_at = COALESCE(destroyed_at, ?2) WHERE borrower_id = ?1",
    )?;
    of("DELETE FROM ledger_commitment_keys WHERE borrower_id = ?1")?;
    at_(
        "UPDATE borrowers SET name_enc = X'', national_id_enc = NULL, national_id_bidx = NULL, updated_at = ?2 \
         WHERE id = ?1",
    )?;
    let out = Shredded {
        contact_points: at_(
            "UPDATE contact_points SET address_enc = X'', address_bidx = X'', holder_name_enc = NULL, \
             retired_at = COALESCE(retired_at, ?2), retire_reason = COALESCE(retire_reason, 'erased') \
             WHERE borrower_id = ?1",
        )?,
        number_changes: at_(
            "UPDATE contact_changes SET new_address_enc = X'', new_address_bidx = X'', updated_at = ?2, \
             state = CASE WHEN state IN ('pending', 'review') THEN 'lapsed' ELSE state END WHERE borrower_id = ?1",
        )?,
        plan_requests: of("UPDATE plan_requests SET reason_enc = X'' WHERE borrower_id = ?1")?,
        // A provider's raw receipt can carry the destination number.
        raw_receipts: of("UPDATE receipts SET raw = X'' WHERE length(raw) > 0 AND \
             (outbox_id IN (SELECT id FROM outbox WHERE borrower_id = ?1) OR (outbox_id IS NULL AND EXISTS \
             (SELECT 1 FROM verification_provider_ids v JOIN verification_messages m ON m.id = v.message_id \
             WHERE m.borrower_id = ?1 AND v.provider = receipts.provider AND v.provider_id = receipts.provider_id)))")?,
        sessions: of("DELETE FROM borrower_sessions WHERE borrower_id = ?1")?,
        sends_cancelled: at_(
            "UPDATE outbox SET state = 'cancelled', detail = 'borrower erased', lease_owner = NULL, \
             lease_until = NULL, updated_at = ?2 WHERE borrower_id = ?1 AND state IN ('queued', 'leased')",
        )?,
    };
    of("DELETE FROM code_failures WHERE borrower_id = ?1")?;
    of("DELETE FROM borrower_preferences WHERE borrower_id = ?1")?;
    of("DELETE FROM engine_wake WHERE borrower_id = ?1")?;
    at_(
        "UPDATE contact_checks SET state = 'closed', updated_at = ?2 WHERE borrower_id = ?1 \
         AND state IN ('open', 'operator_task')",
    )?;
    of("DELETE FROM erasure_requests WHERE borrower_id = ?1")?;
    let (actor, basis, reason) = record;
    tx.execute(
        "INSERT INTO erasures (borrower_id, at, actor, basis, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![borrower, at, actor, basis, reason],
    )?;
    Ok(Some(out))
}

/// Overwrites freed pages and truncates the WAL, so the file holds no earlier copy of what a
/// transaction replaced. Waits (busy timeout) for readers; a reader that stays leaves the WAL
/// to the next checkpoint, which is reported.
fn flush_wal(c: &Connection) -> Result<()> {
    let (busy, _, _): (i64, i64, i64) = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    if busy != 0 {
        tracing::warn!("the WAL could not be truncated after an erasure (a reader was busy); the next checkpoint will");
    }
    Ok(())
}

/// Runs `f` in an immediate transaction with `secure_delete` on (as the store's connections
/// always are), then truncates the WAL. With `scrub`, a file never vacuumed with
/// `secure_delete` on is vacuumed once (its free space, and the unallocated space of its pages,
/// may hold copies of what was just destroyed, written before the setting was on).
fn securely<T>(c: &mut Connection, scrub: bool, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
    c.pragma_update(None, "secure_delete", "ON")?;
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    if scrub {
        let scrubbed: bool = c.query_row(
            "SELECT EXISTS (SELECT 1 FROM store_meta WHERE name = 'scrubbed')",
            [],
            |r| r.get(0),
        )?;
        if !scrubbed {
            vacuum(c)?;
        }
    }
    flush_wal(c)?;
    Ok(out)
}

/// Rebuilds the file with `secure_delete` on and records that it was.
fn vacuum(c: &Connection) -> Result<()> {
    let started = std::time::Instant::now();
    c.execute_batch("VACUUM")?;
    c.execute(
        "INSERT INTO store_meta (name, value) VALUES ('scrubbed', ?1) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [chrono::Utc::now().to_rfc3339()],
    )?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "database vacuumed with secure_delete on"
    );
    Ok(())
}

/// Shreds erased borrowers inside a backup file written by `reachline backup` (a SQLite copy of
/// the database): for each erasure given whose borrower the backup holds and has not erased,
/// what [`PrivacyStore::erase`] overwrote is overwritten there too and the erasure recorded;
/// then the file is vacuumed. Returns how many it shredded. Needs no key: it only destroys.
pub fn shred_backup(path: &Path, erased: &[(BorrowerId, ErasureRow)]) -> Result<u64> {
    let mut c = Connection::open(path)?;
    c.pragma_update(None, "busy_timeout", 10_000)?;
    let n = securely(&mut c, false, |tx| {
        let mut n = 0;
        for (b, e) in erased {
            let held: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM borrowers WHERE id = ?1)", [b.0], |r| {
                r.get(0)
            })?;
            if held && shred(tx, b.0, ts_micros(e.at), (&e.actor, &e.basis, &e.reason))?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    })?;
    // A backup is offline: rebuild it whenever it changed, whatever wrote it.
    if n > 0 {
        vacuum(&c)?;
    }
    Ok(n)
}

/// The erasures `tail` (a WHERE or ORDER BY clause) selects.
fn erasures_where<P: rusqlite::Params>(c: &Connection, tail: &str, params: P) -> Result<Vec<(BorrowerId, ErasureRow)>> {
    let rows = c
        .prepare(&format!(
            "SELECT borrower_id, at, actor, basis, reason, ledger_index FROM erasures {tail}"
        ))?
        .query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<i64>>(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(b, at, actor, basis, reason, index)| {
            Ok((
                BorrowerId(b),
                ErasureRow {
                    at: ts_from_micros(at)?,
                    actor,
                    basis,
                    reason,
                    ledger_index: index.map(|i| i as u64),
                },
            ))
        })
        .collect()
}

fn facts(c: &Connection, borrower: i64) -> Result<ErasureFacts> {
    let unpaid: i64 = c.query_row(
        "SELECT COUNT(*) FROM installments i JOIN loans l ON l.id = i.loan_id \
         WHERE l.borrower_id = ?1 AND i.amount_paid_minor < i.amount_due_minor",
        [borrower],
        |r| r.get(0),
    )?;
    let last: Option<i64> = c.query_row(
        "SELECT MAX(COALESCE(sent_at, updated_at)) FROM outbox WHERE borrower_id = ?1 \
         AND state NOT IN ('queued', 'leased', 'cancelled')",
        [borrower],
        |r| r.get(0),
    )?;
    let erased = erasures_where(c, "WHERE borrower_id = ?1", [borrower])?
        .pop()
        .map(|(_, row)| row);
    let requested = c
        .query_row(
            "SELECT requested_at, not_before, actor, reason FROM erasure_requests WHERE borrower_id = ?1",
            [borrower],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()?
        .map(|(at, nb, actor, reason)| {
            Ok::<_, StoreError>(ErasureRequest {
                requested_at: ts_from_micros(at)?,
                not_before: ts_from_micros(nb)?,
                actor,
                reason,
            })
        })
        .transpose()?;
    Ok(ErasureFacts {
        unpaid_installments: unpaid as u64,
        last_contact: last.map(ts_from_micros).transpose()?,
        erased,
        requested,
    })
}

fn check_keys(c: &mut Connection, keys: &Keyring) -> Result<()> {
    check(c, keys, true)
}

fn check(c: &mut Connection, keys: &Keyring, blind: bool) -> Result<()> {
    let stored: std::collections::HashMap<String, Vec<u8>> = c
        .prepare("SELECT name, value FROM key_checks")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let live: Vec<(String, i64)> = c
        .prepare("SELECT key_id, COUNT(*) FROM borrower_keys WHERE wrapped_key IS NOT NULL GROUP BY key_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, n) in &live {
        if !keys.has_master(id) {
            return Err(StoreError::Keys(missing_master(id, *n as u64, keys)));
        }
        let ok = match stored.get(&format!("master:{id}")) {
            Some(check) => keys.verify_master_check(id, check) == Some(true),
            // No check value yet (a database from before them): one data key must open.
            None => {
                let w: Vec<u8> = c.query_row(
                    "SELECT wrapped_key FROM borrower_keys WHERE key_id = ?1 AND wrapped_key IS NOT NULL LIMIT 1",
                    [id],
                    |r| r.get(0),
                )?;
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
        Some(v) if v.as_slice() != keys.blind_check().as_slice() => return Err(StoreError::Keys(WRONG_BLIND.into())),
        Some(_) => {}
        None => {
            // No check value yet: one current contact point's index must be remade by this key.
            let raw = c
                .query_row(
                    &format!(
                        "SELECT {} FROM contact_points WHERE retired_at IS NULL AND length(address_bidx) > 0 LIMIT 1",
                        super::CONTACT_COLS
                    ),
                    [],
                    super::contact_from_row,
                )
                .optional()?;
            if let Some(raw) = raw {
                let sealer = super::sealer_for(c, keys, BorrowerId(raw.borrower_id))?;
                let open = raw.row.open(&sealer)?;
                if codec::address_bidx(keys, &open.address).as_slice() != raw.row.address_bidx.as_slice() {
                    return Err(StoreError::Keys(WRONG_BLIND.into()));
                }
            }
        }
    }
    let tx = c.transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO key_checks (name, value) VALUES (?1, ?2)",
        params![format!("master:{}", keys.key_id()), keys.master_check()],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO key_checks (name, value) VALUES ('blind_index', ?1)",
        [keys.blind_check().to_vec()],
    )?;
    tx.commit()?;
    Ok(())
}

fn rotation_cursor(c: &Connection) -> Result<i64> {
    let v: Option<Vec<u8>> = c
        .query_row("SELECT value FROM key_checks WHERE name = ?1", [BLIND_ROTATION], |r| {
            r.get(0)
        })
        .optional()?;
    let v = v.ok_or_else(|| StoreError::Conflict("no blind-index rotation is in progress".into()))?;
    let arr: [u8; 8] = v
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt("the blind-index rotation's cursor".into()))?;
    Ok(i64::from_be_bytes(arr))
}

/// Re-indexes one borrower's blind indexes under `keys`' blind-index key.
fn reindex_borrower(c: &Connection, keys: &Keyring, id: i64) -> Result<()> {
    let sealer = super::sealer_for(c, keys, BorrowerId(id))?;
    let row = c.query_row(
        "SELECT external_id, name_enc, national_id_scheme, national_id_enc, national_id_bidx, locale, time_zone, \
         jurisdiction FROM borrowers WHERE id = ?1",
        [id],
        |r| {
            Ok(codec::BorrowerRow {
                external_id: r.get(0)?,
                name_enc: r.get(1)?,
                national_id_scheme: r.get(2)?,
                national_id_enc: r.get(3)?,
                national_id_bidx: r.get(4)?,
                locale: r.get(5)?,
                time_zone: r.get(6)?,
                jurisdiction: r.get(7)?,
            })
        },
    )?;
    if let Some(nid) = row.open(&sealer)?.national_id {
        c.execute(
            "UPDATE borrowers SET national_id_bidx = ?2 WHERE id = ?1",
            params![id, codec::national_id_bidx(keys, &nid).to_vec()],
        )?;
    }
    let contacts = c
        .prepare(&format!(
            "SELECT {} FROM contact_points WHERE borrower_id = ?1 AND length(address_enc) > 0",
            super::CONTACT_COLS
        ))?
        .query_map([id], super::contact_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut upd = c.prepare_cached("UPDATE contact_points SET address_bidx = ?2 WHERE id = ?1")?;
    for raw in contacts {
        let open = raw.row.open(&sealer)?;
        upd.execute(params![raw.id, codec::address_bidx(keys, &open.address).to_vec()])?;
    }
    let changes = c
        .prepare(
            "SELECT id, new_address_enc FROM contact_changes WHERE borrower_id = ?1 AND length(new_address_enc) > 0",
        )?
        .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (change, enc) in changes {
        let address = change_address(&sealer.open(super::selfservice::NEW_ADDRESS, &enc)?)?;
        c.execute(
            "UPDATE contact_changes SET new_address_bidx = ?2 WHERE id = ?1",
            params![change, codec::address_bidx(keys, &address).to_vec()],
        )?;
    }
    Ok(())
}

#[async_trait]
impl PrivacyStore for SqliteStore {
    async fn check_master_keys(&self) -> Result<()> {
        self.with(|c, keys| check(c, keys, false)).await
    }

    async fn begin_blind_rotation(&self, old_check: [u8; 32]) -> Result<()> {
        self.with(move |c, _| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let started: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM key_checks WHERE name = ?1)",
                [BLIND_ROTATION],
                |r| r.get(0),
            )?;
            if !started {
                let stored: Option<Vec<u8>> = tx
                    .query_row("SELECT value FROM key_checks WHERE name = 'blind_index'", [], |r| {
                        r.get(0)
                    })
                    .optional()?;
                if stored.is_some_and(|v| v.as_slice() != old_check.as_slice()) {
                    return Err(StoreError::Keys(WRONG_BLIND.into()));
                }
                tx.execute(
                    "INSERT INTO key_checks (name, value) VALUES (?1, ?2)",
                    params![BLIND_ROTATION, 0i64.to_be_bytes().to_vec()],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn reindex_batch(&self, limit: usize) -> Result<(u64, u64)> {
        self.with(move |c, keys| {
            securely(c, false, |tx| {
                let cursor = rotation_cursor(tx)?;
                let ids = tx
                    .prepare(
                        "SELECT b.id FROM borrowers b JOIN borrower_keys k ON k.borrower_id = b.id \
                         WHERE b.id > ?1 AND k.wrapped_key IS NOT NULL ORDER BY b.id LIMIT ?2",
                    )?
                    .query_map(params![cursor, limit as i64], |r| r.get::<_, i64>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for &id in &ids {
                    reindex_borrower(tx, keys, id)?;
                }
                let last = ids.last().copied().unwrap_or(cursor);
                tx.execute(
                    "UPDATE key_checks SET value = ?2 WHERE name = ?1",
                    params![BLIND_ROTATION, last.to_be_bytes().to_vec()],
                )?;
                let left: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM borrowers b JOIN borrower_keys k ON k.borrower_id = b.id \
                     WHERE b.id > ?1 AND k.wrapped_key IS NOT NULL",
                    [last],
                    |r| r.get(0),
                )?;
                Ok((ids.len() as u64, left as u64))
            })
        })
        .await
    }

    async fn finish_blind_rotation(&self) -> Result<u64> {
        self.with(|c, keys| {
            securely(c, false, |tx| {
                let cursor = rotation_cursor(tx)?;
                let left: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM borrowers b JOIN borrower_keys k ON k.borrower_id = b.id \
                     WHERE b.id > ?1 AND k.wrapped_key IS NOT NULL",
                    [cursor],
                    |r| r.get(0),
                )?;
                if left > 0 {
                    return Err(StoreError::Conflict(format!(
                        "{left} borrower(s) are not re-indexed yet"
                    )));
                }
                let registry = tx.execute("DELETE FROM disconnects", [])? as u64;
                tx.execute(
                    "UPDATE key_checks SET value = ?1 WHERE name = 'blind_index'",
                    [keys.blind_check().to_vec()],
                )?;
                tx.execute("DELETE FROM key_checks WHERE name = ?1", [BLIND_ROTATION])?;
                Ok(registry)
            })
        })
        .await
    }

    async fn borrower_id(&self, external: &ExternalId) -> Result<Option<BorrowerId>> {
        let ext = external.as_str().to_string();
        self.read(move |c, _| {
            Ok(
                c.query_row("SELECT id FROM borrowers WHERE external_id = ?1", [ext], |r| r.get(0))
                    .optional()?
                    .map(BorrowerId),
            )
        })
        .await
    }

    async fn erasure_facts(&self, borrower: BorrowerId) -> Result<ErasureFacts> {
        self.read(move |c, _| facts(c, borrower.0)).await
    }

    async fn erase(
        &self,
        borrower: BorrowerId,
        at: DateTime<Utc>,
        actor: &str,
        basis: &str,
        reason: &str,
    ) -> Result<Shredded> {
        let (actor, basis, reason) = (actor.to_string(), basis.to_string(), reason.to_string());
        self.with(move |c, _| {
            securely(c, true, |tx| {
                Ok(shred(tx, borrower.0, ts_micros(at), (&actor, &basis, &reason))?.unwrap_or_default())
            })
        })
        .await
    }

    async fn erasure_logged(&self, borrower: BorrowerId, ledger_index: u64) -> Result<()> {
        self.with(move |c, _| {
            c.execute(
                "UPDATE erasures SET ledger_index = ?2 WHERE borrower_id = ?1",
                params![borrower.0, ledger_index as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn erasures(&self) -> Result<Vec<(BorrowerId, ErasureRow)>> {
        self.read(|c, _| erasures_where(c, "ORDER BY at, borrower_id", []))
            .await
    }

    async fn request_erasure(&self, borrower: BorrowerId, r: &ErasureRequest) -> Result<()> {
        let r = r.clone();
        self.with(move |c, _| {
            c.execute(
                "INSERT INTO erasure_requests (borrower_id, requested_at, not_before, actor, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (borrower_id) DO UPDATE SET requested_at = excluded.requested_at, \
                 not_before = excluded.not_before, actor = excluded.actor, reason = excluded.reason",
                params![
                    borrower.0,
                    ts_micros(r.requested_at),
                    ts_micros(r.not_before),
                    r.actor,
                    r.reason
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn due_erasure_requests(&self, now: DateTime<Utc>) -> Result<Vec<BorrowerId>> {
        self.read(move |c, _| {
            let ids = c
                .prepare("SELECT borrower_id FROM erasure_requests WHERE not_before <= ?1 ORDER BY borrower_id")?
                .query_map([ts_micros(now)], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids.into_iter().map(BorrowerId).collect())
        })
        .await
    }

    async fn expired_borrowers(&self, rules: &RetentionRules, now: DateTime<Utc>) -> Result<Vec<BorrowerId>> {
        let cut = ts_micros(now - chrono::Duration::days(rules.personal_data_max_days.into()));
        self.read(move |c, _| {
            let ids = c
                .prepare(
                    "SELECT b.id FROM borrowers b WHERE b.updated_at < ?1 \
                     AND NOT EXISTS (SELECT 1 FROM erasures e WHERE e.borrower_id = b.id) \
                     AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.borrower_id = b.id AND o.updated_at >= ?1) \
                     AND NOT EXISTS (SELECT 1 FROM loans l JOIN installments i ON i.loan_id = l.id \
                       WHERE l.borrower_id = b.id AND (i.amount_paid_minor < i.amount_due_minor OR i.updated_at >= ?1)) \
                     ORDER BY b.id",
                )?
                .query_map([cut], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(ids.into_iter().map(BorrowerId).collect())
        })
        .await
    }

    async fn purge(&self, rules: &RetentionRules, now: DateTime<Utc>, apply: bool) -> Result<Vec<RetentionLine>> {
        let rules = *rules;
        let f = move |c: &mut Connection, _: &Keyring| -> Result<Vec<RetentionLine>> {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(PURGES.len());
            for p in PURGES {
                let filter = p.filter.replace("{cut}", "?1");
                let cut = ts_micros(cutoff(p.class, &rules, now));
                let n = if apply {
                    tx.execute(&format!("DELETE FROM {} WHERE {filter}", p.table), [cut])? as u64
                } else {
                    tx.query_row(
                        &format!("SELECT COUNT(*) FROM {} WHERE {filter}", p.table),
                        [cut],
                        |r| r.get::<_, i64>(0),
                    )? as u64
                };
                out.push(line(p, &rules, n, apply));
            }
            tx.commit()?;
            Ok(out)
        };
        if apply {
            self.with(f).await
        } else {
            self.read(f).await
        }
    }

    async fn check_keys(&self) -> Result<()> {
        self.with(check_keys).await
    }

    async fn wrapped_key_counts(&self) -> Result<Vec<(String, u64)>> {
        self.read(|c, _| {
            let rows = c
                .prepare(
                    "SELECT key_id, COUNT(*) FROM borrower_keys WHERE wrapped_key IS NOT NULL GROUP BY key_id ORDER BY key_id",
                )?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn rewrap_batch(&self, limit: usize) -> Result<u64> {
        self.with(move |c, keys| {
            securely(c, false, |tx| {
                let rows: Vec<(i64, String, Vec<u8>)> = tx
                    .prepare(
                        "SELECT borrower_id, key_id, wrapped_key FROM borrower_keys \
                         WHERE wrapped_key IS NOT NULL AND key_id <> ?1 ORDER BY borrower_id LIMIT ?2",
                    )?
                    .query_map(params![keys.key_id(), limit as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let mut upd = tx.prepare(
                    "UPDATE borrower_keys SET key_id = ?2, wrapped_key = ?3 WHERE borrower_id = ?1 AND key_id = ?4",
                )?;
                let mut n = 0;
                for (b, old, wrapped) in rows {
                    let key = keys.unwrap_key(&wrapped)?;
                    n += upd.execute(params![b, keys.key_id(), keys.wrap(&key), old])? as u64;
                }
                Ok(n)
            })
        })
        .await
    }

    async fn retire_master_check(&self, key_id: &str) -> Result<()> {
        let key_id = key_id.to_string();
        self.with(move |c, _| {
            let left: i64 = c.query_row(
                "SELECT COUNT(*) FROM borrower_keys WHERE key_id = ?1 AND wrapped_key IS NOT NULL",
                [&key_id],
                |r| r.get(0),
            )?;
            if left > 0 {
                return Err(StoreError::Conflict(format!(
                    "{left} data key(s) are still wrapped under master key {key_id:?}"
                )));
            }
            c.execute("DELETE FROM key_checks WHERE name = ?1", [format!("master:{key_id}")])?;
            Ok(())
        })
        .await
    }
}

/// Writes a consistent copy of the database at `db` to `out` (`VACUUM INTO`: compact, with no
/// free pages, so nothing deleted before it survives in it), then checks the copy's integrity.
/// Refuses to overwrite `out`.
pub fn backup(db: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        return Err(StoreError::Conflict(format!(
            "{} exists; refusing to overwrite it",
            out.display()
        )));
    }
    let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    c.pragma_update(None, "busy_timeout", 10_000)?;
    // The copy inherits the setting: pages it splits are zeroed, not left holding copies.
    c.pragma_update(None, "secure_delete", "ON")?;
    let target = out
        .to_str()
        .ok_or_else(|| StoreError::Conflict(format!("{} is not a UTF-8 path", out.display())))?;
    c.execute("VACUUM INTO ?1", [target])?;
    let check = Connection::open_with_flags(out, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let verdict: String = check.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(StoreError::Corrupt(format!(
            "the backup failed its integrity check: {verdict}"
        )));
    }
    Ok(())
}
