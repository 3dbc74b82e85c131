//! The engine's tables on SQLite. One connection, so one writer: leasing needs no row locks
//! (the PostgreSQL back end leases with `FOR UPDATE SKIP LOCKED`). Write transactions begin
//! `IMMEDIATE`: the ledger's sequencer writes the same file through its own connection, and a
//! deferred transaction that read before that commit could not upgrade to a write (SQLite
//! answers "database is locked" at once, without waiting).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use reachline_domain::{BorrowerId, Channel, ContactId, ContactRole, DeliveryClass, ExternalId, InstallmentId};
use rusqlite::{params, Connection, OptionalExtension};

use super::{sealer_for, SqliteStore};
use crate::codec::{self, ts_from_micros, ts_micros};
use crate::engine::{
    CountRow, DecisionRow, EngineContact, EngineInstallment, EngineStore, EngineView, LateMatch, Matched, OutboxRow,
    PlanWrite, ReceiptIn, ReceiptMatch, SendOutcome, SendState, SendTarget, SentRecord, Sighted, StoredEvidence,
    VerificationSent,
};
use crate::server::Sighting;
use crate::{Result, StoreError};

const OUTBOX_COLS: &str = "id, idem_key, borrower_id, installment_id, step, kind, rung, contact_id, channel, \
     third_party, not_before, state, tries, sent_at, outcome, outcome_class";

/// A lease's filter on an outbox row `o`: its borrower is not held by another owner than `?1`
/// at `?3` (see `dispatch_holds`, migration 0017).
const NOT_HELD: &str =
    "NOT EXISTS (SELECT 1 FROM dispatch_holds h WHERE h.borrower_id = o.borrower_id AND h.owner <> ?1 AND h.until >= ?3)";

fn outbox_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawOutbox> {
    Ok(RawOutbox {
        id: r.get(0)?,
        idem_key: r.get(1)?,
        borrower: r.get(2)?,
        installment: r.get(3)?,
        step: r.get(4)?,
        kind: r.get(5)?,
        rung: r.get(6)?,
        contact: r.get(7)?,
        channel: r.get(8)?,
        third_party: r.get(9)?,
        not_before: r.get(10)?,
        state: r.get(11)?,
        tries: r.get(12)?,
        sent_at: r.get(13)?,
        outcome: r.get(14)?,
        outcome_class: r.get(15)?,
    })
}

struct RawOutbox {
    id: i64,
    idem_key: String,
    borrower: i64,
    installment: i64,
    step: i64,
    kind: String,
    rung: i64,
    contact: i64,
    channel: String,
    third_party: bool,
    not_before: i64,
    state: String,
    tries: u32,
    sent_at: Option<i64>,
    outcome: String,
    outcome_class: Option<String>,
}

impl RawOutbox {
    fn into_row(self) -> Result<OutboxRow> {
        Ok(OutboxRow {
            id: self.id,
            idem_key: self.idem_key,
            borrower: BorrowerId(self.borrower),
            installment: InstallmentId(self.installment),
            step: self.step as usize,
            kind: self.kind,
            rung: self.rung as usize,
            contact: ContactId(self.contact),
            channel: self.channel.parse().map_err(codec::corrupt)?,
            third_party: self.third_party,
            not_before: ts_from_micros(self.not_before)?,
            state: self.state.parse().map_err(codec::corrupt)?,
            tries: self.tries,
            sent_at: self.sent_at.map(ts_from_micros).transpose()?,
            outcome: SendOutcome::from_columns(&self.outcome, self.outcome_class.as_deref())?,
        })
    }
}

fn query_outbox(c: &Connection, tail: &str, p: impl rusqlite::Params) -> Result<Vec<OutboxRow>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {OUTBOX_COLS} FROM outbox {tail}"))?;
    let raw = stmt
        .query_map(p, outbox_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raw.into_iter().map(RawOutbox::into_row).collect()
}

fn wake(c: &Connection, borrower: i64, at: i64) -> Result<()> {
    // Only ever earlier: a receipt wakes the borrower now even if the planner set a later time.
    c.prepare_cached(
        "INSERT INTO engine_wake (borrower_id, wake_at, seq) VALUES (?1, ?2, 1) \
         ON CONFLICT (borrower_id) DO UPDATE SET wake_at = MIN(wake_at, excluded.wake_at), seq = seq + 1",
    )?
    .execute(params![borrower, at])?;
    Ok(())
}

fn set_state(c: &Connection, id: i64, from: &[SendState], to: SendState, at: i64, detail: Option<&str>) -> Result<()> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let n = c
        .prepare_cached(
            "UPDATE outbox SET state = ?2, updated_at = ?3, detail = COALESCE(?4, detail), lease_owner = NULL, \
             lease_until = NULL WHERE id = ?1 AND state IN (SELECT value FROM json_each(?5))",
        )?
        .execute(params![
            id,
            to.as_str(),
            at,
            detail,
            serde_json::to_string(&from).unwrap_or_default()
        ])?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "outbox row {id} is not in state {} (moving to {})",
            from.join("/"),
            to.as_str()
        )));
    }
    Ok(())
}

/// Moves a row from one of `from` to `to` with its detail, runs `also` and, if asked, wakes
/// its borrower — one `IMMEDIATE` transaction.
#[allow(clippy::too_many_arguments)]
fn transition(
    c: &mut Connection,
    id: i64,
    from: &[SendState],
    to: SendState,
    at: i64,
    detail: &str,
    wake_borrower: bool,
    also: impl FnOnce(&Connection) -> Result<()>,
) -> Result<()> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    set_state(&tx, id, from, to, at, Some(detail))?;
    also(&tx)?;
    if wake_borrower {
        let borrower: i64 = tx.query_row("SELECT borrower_id FROM outbox WHERE id = ?1", [id], |r| r.get(0))?;
        wake(&tx, borrower, at)?;
    }
    tx.commit()?;
    Ok(())
}

fn count_rows(c: &Connection, sql: &str, width: usize) -> Result<Vec<CountRow>> {
    let mut stmt = c.prepare(sql)?;
    let rows = stmt
        .query_map([], |r| {
            let mut keys = Vec::with_capacity(width);
            for i in 0..width {
                keys.push(r.get::<_, Option<String>>(i)?.unwrap_or_default());
            }
            Ok(CountRow {
                keys,
                count: r.get::<_, i64>(width)? as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[async_trait]
impl EngineStore for SqliteStore {
    async fn due_borrowers(&self, from: NaiveDate, to: NaiveDate, now: DateTime<Utc>) -> Result<Vec<BorrowerId>> {
        // The window's installments by the due-date index (a pass's work is the installments in
        // its window, not the whole book), less the borrowers whose wake time is later.
        // Two halves of the window, one per read connection.
        let mid = from + (to - from) / 2;
        let half = |from: NaiveDate, to: NaiveDate| {
            self.read(move |c, _| {
                let mut stmt = c.prepare_cached(
                    "SELECT l.borrower_id FROM installments i JOIN loans l ON l.id = i.loan_id \
                     WHERE i.due_date BETWEEN ?1 AND ?2 AND i.amount_paid_minor < i.amount_due_minor",
                )?;
                let ids = stmt
                    .query_map(params![from.to_string(), to.to_string()], |r| r.get::<_, i64>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(ids)
            })
        };
        let due = futures::future::try_join(half(from, mid), half(mid.succ_opt().unwrap_or(mid), to));
        let later = self.read(move |c, _| {
            let mut stmt = c.prepare_cached("SELECT borrower_id FROM engine_wake WHERE wake_at > ?1")?;
            let ids = stmt
                .query_map([ts_micros(now)], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<HashSet<_>>>()?;
            Ok(ids)
        });
        let ((mut due, more), later) = futures::try_join!(due, later)?;
        due.extend(more);
        due.sort_unstable();
        due.dedup();
        Ok(due.into_iter().filter(|b| !later.contains(b)).map(BorrowerId).collect())
    }

    async fn views(&self, ids: &[BorrowerId], from: NaiveDate, to: NaiveDate) -> Result<Vec<EngineView>> {
        let ids: Vec<i64> = ids.iter().map(|b| b.0).collect();
        self.read(move |c, _| {
            // One read transaction: every table seen at the same moment.
            let tx = c.transaction()?;
            let out = views(&tx, &ids, from, to)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn write_plan(&self, plan: PlanWrite) -> Result<usize> {
        self.with(move |c, _| {
            let at = ts_micros(plan.at.unwrap_or_else(Utc::now));
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut queued = 0;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO outbox (idem_key, borrower_id, installment_id, step, kind, rung, contact_id, channel, \
                     third_party, not_before, state, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', ?11, ?11) \
                     ON CONFLICT (idem_key) DO NOTHING",
                )?;
                for s in &plan.sends {
                    queued += ins.execute(params![
                        s.idem_key,
                        s.borrower.0,
                        s.installment.0,
                        s.step as i64,
                        s.kind,
                        s.rung as i64,
                        s.contact.0,
                        s.channel.as_str(),
                        s.third_party,
                        ts_micros(s.not_before),
                        at
                    ])?;
                }
                let mut latest = tx.prepare_cached(
                    "SELECT action, reason, gate, detail FROM notice_states WHERE borrower_id = ?1 AND notice = ?2",
                )?;
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO notice_states (borrower_id, notice, action, reason, gate, until_at, detail, at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (borrower_id, notice) DO UPDATE SET \
                     action = excluded.action, reason = excluded.reason, gate = excluded.gate, \
                     until_at = excluded.until_at, detail = excluded.detail, at = excluded.at",
                )?;
                let mut history = tx.prepare_cached(
                    "INSERT INTO decisions (borrower_id, notice, at, action, reason, gate, until_at, detail) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for d in &plan.decisions {
                    type Latest = (String, String, Option<String>, Option<String>);
                    let prev: Option<Latest> = latest
                        .query_row(params![d.borrower.0, d.notice], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                        })
                        .optional()?;
                    let same = prev.as_ref().is_some_and(|(a, r, g, det)| {
                        a == &d.action && r == &d.reason && g == &d.gate && det == &d.detail
                    });
                    let until = d.until.map(ts_micros);
                    if !same {
                        history.execute(params![
                            d.borrower.0,
                            d.notice,
                            at,
                            d.action,
                            d.reason,
                            d.gate,
                            until,
                            d.detail
                        ])?;
                        upsert.execute(params![
                            d.borrower.0,
                            d.notice,
                            d.action,
                            d.reason,
                            d.gate,
                            until,
                            d.detail,
                            at
                        ])?;
                    }
                }
                let mut w = tx.prepare_cached(
                    "INSERT INTO engine_wake (borrower_id, wake_at, seq) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (borrower_id) DO UPDATE SET wake_at = excluded.wake_at \
                     WHERE engine_wake.seq = excluded.seq",
                )?;
                for (b, t, seq) in &plan.wakes {
                    w.execute(params![b.0, ts_micros(*t), seq])?;
                }
            }
            tx.commit()?;
            Ok(queued)
        })
        .await
    }

    async fn lease(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        let owner = owner.to_string();
        let hold = ts_micros(crate::engine::hold_until(now, lease));
        self.with(move |c, _| {
            let now = ts_micros(now);
            let until = now + lease.num_microseconds().unwrap_or(i64::MAX / 4);
            // RETURNING gives the rows the UPDATE changed, in one statement. Each branch takes the
            // first rows of `outbox_due` (state, not_before, id) in its order and stops at the
            // limit, as PostgreSQL's lease does: ordered by id instead, every lease read and
            // sorted every due row (a day's 60,000 queued sends made dispatch quadratic, ~1,000
            // sends/s, the CPU in this one statement).
            // Borrowers another owner holds are passed over; the rest are held for this one
            // in the same transaction (one writer: nobody leases between the two statements).
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut stmt = tx.prepare_cached(&format!(
                "UPDATE outbox SET state = 'leased', lease_owner = ?1, lease_until = ?2, updated_at = ?3 \
                 WHERE id IN (SELECT id FROM (SELECT id FROM outbox o WHERE state = 'queued' AND not_before <= ?3 \
                 AND {NOT_HELD} ORDER BY not_before, id LIMIT ?4) \
                 UNION ALL SELECT id FROM (SELECT id FROM outbox o WHERE state = 'leased' AND lease_until < ?3 \
                 AND {NOT_HELD} ORDER BY lease_until LIMIT ?4) LIMIT ?4) RETURNING {OUTBOX_COLS}"
            ))?;
            let raw = stmt
                .query_map(params![owner, until, now, limit as i64], outbox_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            drop(stmt);
            let mut rows = raw.into_iter().map(RawOutbox::into_row).collect::<Result<Vec<_>>>()?;
            rows.sort_by_key(|r| r.id);
            // A borrower with several rows is held once per row: the same upsert, harmless.
            let mut held = tx.prepare_cached(
                "INSERT INTO dispatch_holds (borrower_id, owner, until) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (borrower_id) DO UPDATE SET owner = excluded.owner, until = excluded.until",
            )?;
            for r in &rows {
                held.execute(params![r.borrower.0, owner, hold])?;
            }
            drop(held);
            tx.commit()?;
            Ok(rows)
        })
        .await
    }

    async fn record_sent_many(
        &self,
        sent: Vec<SentRecord>,
        evidence_kind: &(dyn Fn(Channel, DeliveryClass) -> String + Sync),
    ) -> Result<Vec<LateMatch>> {
        let kinds = crate::engine::delivery_kinds(evidence_kind);
        self.with(move |c, _| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut late = Vec::new();
            for s in &sent {
                sent_tx(&tx, s, &kinds, &mut late)?;
            }
            tx.commit()?;
            Ok(late)
        })
        .await
    }

    async fn mark_sending_many(&self, owner: &str, ids: Vec<i64>, at: DateTime<Utc>) -> Result<Vec<i64>> {
        let owner = owner.to_string();
        self.with(move |c, _| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut moved = Vec::with_capacity(ids.len());
            {
                // The lease stays: it is how a later pass tells a live send from one left by a
                // process that died.
                let mut stmt = tx.prepare_cached(
                    "UPDATE outbox SET state = 'sending', tries = tries + 1, updated_at = ?3 \
                     WHERE id = ?1 AND state = 'leased' AND lease_owner = ?2 AND lease_until > ?3",
                )?;
                for id in ids {
                    if stmt.execute(params![id, owner, ts_micros(at)])? == 1 {
                        moved.push(id);
                    }
                }
            }
            tx.commit()?;
            Ok(moved)
        })
        .await
    }

    async fn send_targets(&self, pairs: Vec<(BorrowerId, ContactId)>) -> Result<Vec<Result<SendTarget>>> {
        self.with(move |c, keys| Ok(pairs.into_iter().map(|(b, ct)| send_target(c, keys, b, ct)).collect()))
            .await
    }

    async fn record_failed(
        &self,
        id: i64,
        at: DateTime<Utc>,
        class: DeliveryClass,
        code: &str,
        detail: &str,
    ) -> Result<()> {
        let (code, detail) = (code.to_string(), detail.to_string());
        self.with(move |c, _| {
            let at = ts_micros(at);
            let from = [SendState::Sending, SendState::Leased, SendState::InDoubt];
            transition(c, id, &from, SendState::Failed, at, &detail, true, |tx| {
                tx.prepare_cached(
                    "UPDATE outbox SET sent_at = ?2, outcome = 'failed', outcome_class = ?3, outcome_code = ?4, \
                     outcome_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, at, class.as_str(), code])?;
                Ok(())
            })
        })
        .await
    }

    async fn record_in_doubt(&self, id: i64, at: DateTime<Utc>, detail: &str) -> Result<()> {
        let detail = detail.to_string();
        self.with(move |c, _| {
            let at = ts_micros(at);
            transition(
                c,
                id,
                &[SendState::Sending],
                SendState::InDoubt,
                at,
                &detail,
                true,
                |tx| {
                    tx.prepare_cached("UPDATE outbox SET sent_at = ?2 WHERE id = ?1")?
                        .execute(params![id, at])?;
                    Ok(())
                },
            )
        })
        .await
    }

    async fn release(&self, id: i64, retry_at: DateTime<Utc>, detail: &str) -> Result<()> {
        let detail = detail.to_string();
        self.with(move |c, _| {
            let at = ts_micros(retry_at);
            let from = [SendState::Sending, SendState::Leased, SendState::InDoubt];
            transition(c, id, &from, SendState::Queued, at, &detail, false, |tx| {
                tx.prepare_cached("UPDATE outbox SET not_before = ?2 WHERE id = ?1")?
                    .execute(params![id, at])?;
                Ok(())
            })
        })
        .await
    }

    async fn cancel(&self, id: i64, at: DateTime<Utc>, detail: &str) -> Result<()> {
        let detail = detail.to_string();
        self.with(move |c, _| {
            let from = [SendState::Leased, SendState::Queued];
            transition(c, id, &from, SendState::Cancelled, ts_micros(at), &detail, true, |_| {
                Ok(())
            })
        })
        .await
    }

    async fn recover_in_doubt(&self, at: DateTime<Utc>) -> Result<u64> {
        self.with(move |c, _| {
            let n = c
                .prepare_cached(
                    "UPDATE outbox SET state = 'in_doubt', updated_at = ?1, sent_at = COALESCE(sent_at, updated_at), \
                     lease_owner = NULL, lease_until = NULL, \
                     detail = 'the dispatcher ' || COALESCE(lease_owner, '') || ' stopped while handing it to the channel' \
                     WHERE state = 'sending' AND (lease_until IS NULL OR lease_until < ?1)",
                )?
                .execute([ts_micros(at)])?;
            Ok(n as u64)
        })
        .await
    }

    async fn record_receipts(
        &self,
        receipts: Vec<ReceiptIn>,
        evidence_kind: &(dyn Fn(Channel, DeliveryClass) -> String + Sync),
    ) -> Result<Vec<Matched>> {
        let kinds = crate::engine::delivery_kinds(evidence_kind);
        self.with(move |c, _| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(receipts.len());
            for r in receipts {
                out.push(receipt_tx(&tx, r, &kinds)?);
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn record_sighted(
        &self,
        items: Vec<(Sighting, Option<ReceiptIn>)>,
        now: DateTime<Utc>,
        evidence_kind: &(dyn Fn(Channel, DeliveryClass) -> String + Sync),
    ) -> Result<Vec<Sighted>> {
        let kinds = crate::engine::delivery_kinds(evidence_kind);
        self.with(move |c, _| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let fresh = super::server::take_sightings(&tx, items.iter().map(|i| &i.0), now)?;
            let mut out = Vec::with_capacity(items.len());
            for ((_, receipt), fresh) in items.into_iter().zip(fresh) {
                out.push(match (fresh, receipt) {
                    (false, _) => Sighted::Replayed,
                    (true, None) => Sighted::Taken(None),
                    (true, Some(r)) => Sighted::Taken(Some(receipt_tx(&tx, r, &kinds)?)),
                });
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn record_verification_sent(
        &self,
        v: &VerificationSent,
        evidence_kind: &(dyn Fn(DeliveryClass) -> String + Sync),
    ) -> Result<()> {
        let v = v.clone();
        let kinds = crate::engine::class_kinds(evidence_kind);
        self.with(move |c, _| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO verification_messages (borrower_id, contact_id, channel, sent_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![v.borrower.0, v.contact.map(|c| c.0), v.channel.as_str(), ts_micros(v.at)])?;
            let message = tx.last_insert_rowid();
            for id in &v.provider_ids {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO verification_provider_ids (provider, provider_id, message_id) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![v.provider, id, message])?;
            }
            // A receipt that came before this record was kept unmatched: match it now.
            let early: Vec<(i64, String, i64)> = tx
                .prepare_cached(
                    "SELECT id, class, at FROM receipts INDEXED BY receipts_unmatched \
                     WHERE outbox_id IS NULL AND flag = 'unmatched' AND provider = ?1 AND provider_id IN \
                     (SELECT provider_id FROM verification_provider_ids WHERE message_id = ?2) ORDER BY id",
                )?
                .query_map(params![v.provider, message], |r| <(i64, String, i64)>::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut outcome = SendOutcome::Pending;
            for (rid, class, at) in early {
                tx.prepare_cached("UPDATE receipts SET flag = 'verification, matched late' WHERE id = ?1")?
                    .execute([rid])?;
                let class: DeliveryClass = class.parse().map_err(codec::corrupt)?;
                let new = SendOutcome::of(class);
                if new.rank() > outcome.rank() {
                    outcome = new;
                    if let Some(contact) = v.contact {
                        receipt_evidence(&tx, v.borrower.0, contact.0, at, &v.provider, kinds.get(&class))?;
                    }
                }
            }
            if outcome != SendOutcome::Pending {
                tx.prepare_cached("UPDATE verification_messages SET outcome = ?2, outcome_class = ?3 WHERE id = ?1")?
                    .execute(params![message, outcome.name(), outcome.class_column()])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn add_evidence(
        &self,
        borrower: BorrowerId,
        contact: Option<ContactId>,
        at: DateTime<Utc>,
        source: &str,
        kind: &str,
    ) -> Result<()> {
        let (source, kind) = (source.to_string(), kind.to_string());
        self.with(move |c, _| {
            let at = ts_micros(at);
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO evidence (borrower_id, contact_id, at, source, kind) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![borrower.0, contact.map(|c| c.0), at, source, kind])?;
            wake(&tx, borrower.0, at)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn attempts(&self, f: &crate::engine::AttemptFilter) -> Result<Vec<OutboxRow>> {
        let f = f.clone();
        self.read(move |c, _| {
            query_outbox(
                c,
                "WHERE (?1 IS NULL OR borrower_id = ?1) AND (?2 IS NULL OR state = ?2) \
                 AND (?3 IS NULL OR channel = ?3) AND (?4 IS NULL OR kind = ?4) AND id > ?5 ORDER BY id LIMIT ?6",
                params![
                    f.borrower.map(|b| b.0),
                    f.state,
                    f.channel,
                    f.kind,
                    f.after.unwrap_or(0),
                    f.limit
                ],
            )
        })
        .await
    }

    async fn receipts_of(&self, outbox_ids: &[i64]) -> Result<Vec<crate::engine::ReceiptRow>> {
        let ids = serde_json::to_string(outbox_ids).map_err(codec::corrupt)?;
        self.read(move |c, _| {
            type Raw = (i64, i64, String, String, String, String, bool, Option<String>);
            let rows = c
                .prepare_cached(
                    "SELECT outbox_id, at, provider, provider_id, class, code, is_final, flag FROM receipts \
                     WHERE outbox_id IN (SELECT value FROM json_each(?1)) ORDER BY id",
                )?
                .query_map([ids], |r| Raw::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(outbox_id, at, provider, provider_id, class, code, is_final, flag)| {
                    Ok(crate::engine::ReceiptRow {
                        outbox_id,
                        at: ts_from_micros(at)?,
                        provider,
                        provider_id,
                        class,
                        code,
                        is_final,
                        flag,
                    })
                })
                .collect()
        })
        .await
    }

    async fn queue_depth(&self) -> Result<Vec<(String, u64)>> {
        self.read(|c, _| {
            Ok(c.prepare_cached(crate::engine::QUEUE_SQL)?
                .query_map([], |r| <(String, i64)>::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(|(k, n)| (k, n as u64))
                .collect())
        })
        .await
    }

    async fn dashboard(&self, today: NaiveDate) -> Result<crate::engine::Dashboard> {
        use crate::engine::{ExposureRow, ReachDay, BUCKET_CASE, FOUND_CASE};
        let unreachable =
            crate::engine::unreachable_borrowers("CAST(substr(n.notice, 1, instr(n.notice, '/') - 1) AS INTEGER)");
        self.read(move |c, _| {
            let tx = c.transaction()?;
            let day = |s: String| codec::date_parse(&s);
            let reach = tx
                .prepare(
                    "SELECT date(sent_at / 1000000, 'unixepoch'), channel, COUNT(*), \
                     SUM(outcome IN ('delivered', 'engaged')) FROM outbox WHERE sent_at IS NOT NULL \
                     GROUP BY 1, 2 ORDER BY 1, 2",
                )?
                .query_map([], |r| <(String, String, i64, i64)>::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(|(d, channel, a, r)| {
                    Ok(ReachDay {
                        day: day(d)?,
                        channel,
                        attempted: a as u64,
                        reached: r as u64,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let pairs = |sql: &str| -> Result<Vec<(String, u64)>> {
                Ok(tx
                    .prepare(sql)?
                    .query_map([], |r| <(String, i64)>::try_from(r))?
                    .collect::<rusqlite::Result<Vec<_>>>()?
                    .into_iter()
                    .map(|(k, n)| (k, n as u64))
                    .collect())
            };
            let outcomes = pairs(
                "SELECT CASE WHEN outcome = 'failed' THEN COALESCE(outcome_class, 'unknown') ELSE outcome END, COUNT(*) \
                 FROM outbox WHERE state IN ('sent', 'failed', 'in_doubt') GROUP BY 1 ORDER BY 2 DESC",
            )?;
            let queue = pairs(crate::engine::QUEUE_SQL)?;
            let weekly = |sql: &str| -> Result<Vec<(NaiveDate, String, u64)>> {
                tx.prepare(sql)?
                    .query_map([], |r| <(String, String, i64)>::try_from(r))?
                    .collect::<rusqlite::Result<Vec<_>>>()?
                    .into_iter()
                    .map(|(w, k, n)| Ok((day(w)?, k, n as u64)))
                    .collect()
            };
            let week = "date(at / 1000000, 'unixepoch', 'weekday 0', '-6 days')";
            let found = weekly(&format!(
                "SELECT week, what, COUNT(DISTINCT contact_id) FROM \
                 (SELECT {week} AS week, {FOUND_CASE} AS what, contact_id FROM evidence WHERE contact_id IS NOT NULL) \
                 WHERE what IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
            ))?;
            let retired = weekly(&format!(
                "SELECT {week}, COALESCE(detail, ''), COUNT(*) FROM contact_events WHERE event = 'retired' \
                 GROUP BY 1, 2 ORDER BY 1, 2"
            ))?;
            let exposure = tx
                .prepare(&format!(
                    "WITH open AS (SELECT l.borrower_id, l.product, i.currency, \
                       SUM(i.amount_due_minor - i.amount_paid_minor) AS outstanding, \
                       MAX(CAST(julianday(?1) - julianday(i.due_date) AS INTEGER)) AS dpd \
                     FROM installments i JOIN loans l ON l.id = i.loan_id \
                     WHERE i.amount_paid_minor < i.amount_due_minor AND l.borrower_id IN ({unreachable}) \
                     GROUP BY l.id) \
                     SELECT product, {BUCKET_CASE}, currency, COUNT(DISTINCT borrower_id), SUM(outstanding) \
                     FROM open GROUP BY 1, 2, 3 ORDER BY 1, 2"
                ))?
                .query_map([today.to_string()], |r| <(String, String, String, i64, i64)>::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .map(|(product, bucket, currency, b, o)| ExposureRow {
                    product,
                    bucket,
                    currency,
                    borrowers: b as u64,
                    outstanding_minor: o,
                })
                .collect();
            let detect_seconds = tx
                .prepare(&crate::engine::detect_sql("({found} - {ok}) / 1000000"))?
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(crate::engine::Dashboard {
                reach,
                outcomes,
                found,
                retired,
                exposure,
                queue,
                detect_seconds,
            })
        })
        .await
    }

    async fn wake_now(&self, borrower: BorrowerId, at: DateTime<Utc>) -> Result<()> {
        self.with(move |c, _| wake(c, borrower.0, ts_micros(at))).await
    }

    async fn contact_owner(&self, contact: ContactId) -> Result<Option<BorrowerId>> {
        self.read(move |c, _| {
            Ok(
                c.prepare_cached("SELECT borrower_id FROM contact_points WHERE id = ?1")?
                    .query_row([contact.0], |r| r.get(0))
                    .optional()?
                    .map(BorrowerId),
            )
        })
        .await
    }

    async fn loan_key(
        &self,
        loan: &ExternalId,
    ) -> Result<Option<(reachline_domain::LoanId, BorrowerId, reachline_domain::Currency)>> {
        let loan = loan.as_str().to_string();
        let row: Option<(i64, i64, String)> = self
            .read(move |c, _| {
                Ok(
                    c.prepare_cached("SELECT id, borrower_id, currency FROM loans WHERE external_id = ?1")?
                        .query_row([loan], |r| <(i64, i64, String)>::try_from(r))
                        .optional()?,
                )
            })
            .await?;
        row.map(|(l, b, c)| {
            Ok((
                reachline_domain::LoanId(l),
                BorrowerId(b),
                c.parse().map_err(codec::corrupt)?,
            ))
        })
        .transpose()
    }

    async fn installment_by_seq(&self, loan: &ExternalId, seq: u32) -> Result<Option<InstallmentId>> {
        let loan = loan.as_str().to_string();
        self.read(move |c, _| {
            Ok(c.prepare_cached(
                "SELECT i.id FROM installments i JOIN loans l ON l.id = i.loan_id WHERE l.external_id = ?1 AND i.seq = ?2",
            )?
            .query_row(params![loan, seq], |r| r.get(0))
            .optional()?
            .map(InstallmentId))
        })
        .await
    }

    async fn record_payment(
        &self,
        installment: InstallmentId,
        amount_minor: i64,
        at: DateTime<Utc>,
    ) -> Result<BorrowerId> {
        self.with(move |c, _| {
            let at = ts_micros(at);
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx
                .prepare_cached(
                    "UPDATE installments SET amount_paid_minor = MIN(amount_due_minor, amount_paid_minor + ?2), \
                     paid_at = CASE WHEN amount_paid_minor + ?2 >= amount_due_minor THEN ?3 ELSE paid_at END, \
                     updated_at = ?3 WHERE id = ?1",
                )?
                .execute(params![installment.0, amount_minor, at])?;
            if n == 0 {
                return Err(StoreError::NotFound {
                    what: "installment",
                    id: installment.to_string(),
                });
            }
            let borrower: i64 = tx.query_row(
                "SELECT l.borrower_id FROM installments i JOIN loans l ON l.id = i.loan_id WHERE i.id = ?1",
                [installment.0],
                |r| r.get(0),
            )?;
            tx.prepare_cached(
                "INSERT INTO evidence (borrower_id, contact_id, at, source, kind) VALUES (?1, NULL, ?2, ?3, ?4)",
            )?
            .execute(params![
                borrower,
                at,
                crate::engine::PAYMENT_SOURCE,
                crate::engine::PAYMENT_EVIDENCE
            ])?;
            wake(&tx, borrower, at)?;
            tx.commit()?;
            Ok(BorrowerId(borrower))
        })
        .await
    }

    async fn outbox_counts(&self) -> Result<Vec<CountRow>> {
        self.with(|c, _| {
            count_rows(
                c,
                "SELECT kind, channel, state, outcome, outcome_class, COUNT(*) FROM outbox \
                 GROUP BY kind, channel, state, outcome, outcome_class ORDER BY 1, 2, 3, 4, 5",
                5,
            )
        })
        .await
    }

    async fn decision_counts(&self) -> Result<Vec<CountRow>> {
        self.with(|c, _| {
            count_rows(
                c,
                "SELECT action, reason, gate, COUNT(*) FROM decisions GROUP BY action, reason, gate ORDER BY 4 DESC",
                3,
            )
        })
        .await
    }

    async fn decisions_of(&self, borrower: BorrowerId) -> Result<Vec<(DateTime<Utc>, DecisionRow)>> {
        self.with(move |c, _| {
            let mut stmt = c.prepare_cached(
                "SELECT at, notice, action, reason, gate, until_at, detail FROM decisions WHERE borrower_id = ?1 ORDER BY id",
            )?;
            type Raw = (i64, String, String, String, Option<String>, Option<i64>, Option<String>);
            let rows = stmt
                .query_map([borrower.0], |r| Raw::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(at, notice, action, reason, gate, until, detail)| {
                    Ok((
                        ts_from_micros(at)?,
                        DecisionRow {
                            borrower,
                            notice,
                            action,
                            reason,
                            gate,
                            until: until.map(ts_from_micros).transpose()?,
                            detail,
                        },
                    ))
                })
                .collect()
        })
        .await
    }

    async fn sends_of(&self, borrower: BorrowerId) -> Result<Vec<OutboxRow>> {
        self.with(move |c, _| query_outbox(c, "WHERE borrower_id = ?1 ORDER BY id", [borrower.0]))
            .await
    }
}

/// Keeps, matches and applies one receipt inside a transaction.
fn receipt_tx(
    tx: &Connection,
    receipt: ReceiptIn,
    kinds: &HashMap<(Channel, DeliveryClass), String>,
) -> Result<Matched> {
    let at = ts_micros(receipt.at);
    let matched: Option<i64> = match receipt.outbox_id {
        Some(id) => Some(id),
        None => tx
            .prepare_cached("SELECT outbox_id FROM outbox_provider_ids WHERE provider = ?1 AND provider_id = ?2")?
            .query_row(params![receipt.provider, receipt.provider_id], |r| r.get(0))
            .optional()?,
    };
    if matched.is_none() {
        if let Some(m) = verification_receipt_tx(tx, &receipt, kinds)? {
            return Ok(m);
        }
    }
    let row: Option<(i64, i64, String)> = match matched {
        Some(id) => tx
            .prepare_cached("SELECT borrower_id, contact_id, channel FROM outbox WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?,
        None => None,
    };
    let flag = match (matched, &row) {
        (None, _) => Some("unmatched"),
        (Some(_), None) => Some("names an unknown send"),
        _ => None,
    };
    keep_receipt(tx, &receipt, row.as_ref().and(matched), flag)?;
    let Some((borrower, contact, channel)) = row else {
        return Ok(Matched::Unmatched);
    };
    let id = matched.unwrap_or_default();
    let channel: Channel = channel.parse().map_err(codec::corrupt)?;
    let changed = raise_outcome(tx, id, SendOutcome::of(receipt.class), at)?;
    // One piece of evidence per change of an attempt's outcome: the parts of one
    // message, or a repeated receipt, are not separate observations.
    if changed {
        let kind = kinds.get(&(channel, receipt.class));
        receipt_evidence(tx, borrower, contact, at, &receipt.provider, kind)?;
    }
    Ok(Matched::Send(ReceiptMatch {
        outbox_id: id,
        borrower: BorrowerId(borrower),
        contact: ContactId(contact),
        channel,
        changed,
    }))
}

/// Keeps a receipt as it came, with the attempt it matched (if any) and its flag.
fn keep_receipt(tx: &Connection, receipt: &ReceiptIn, outbox_id: Option<i64>, flag: Option<&str>) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO receipts (at, provider, provider_id, outbox_id, class, code, is_final, raw, flag) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        ts_micros(receipt.at),
        receipt.provider,
        receipt.provider_id,
        outbox_id,
        receipt.class.as_str(),
        receipt.code,
        receipt.is_final,
        receipt.raw,
        flag
    ])?;
    Ok(())
}

/// The evidence a receipt gives about the contact point its message went to, and the wake.
fn receipt_evidence(
    tx: &Connection,
    borrower: i64,
    contact: i64,
    at: i64,
    provider: &str,
    kind: Option<&String>,
) -> Result<()> {
    tx.prepare_cached("INSERT INTO evidence (borrower_id, contact_id, at, source, kind) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![
            borrower,
            contact,
            at,
            crate::engine::provider_source(provider),
            kind.cloned().unwrap_or_default()
        ])?;
    wake(tx, borrower, at)
}

/// A receipt for a verification message: kept (flagged `verification`), the message's outcome
/// raised, and — when it went to a contact point and the outcome changed — evidence about that
/// contact point. `None` when the receipt answers no verification message either.
fn verification_receipt_tx(
    tx: &Connection,
    receipt: &ReceiptIn,
    kinds: &HashMap<(Channel, DeliveryClass), String>,
) -> Result<Option<Matched>> {
    type Row = (i64, i64, Option<i64>, String, String, Option<String>);
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT m.id, m.borrower_id, m.contact_id, m.channel, m.outcome, m.outcome_class \
             FROM verification_provider_ids p JOIN verification_messages m ON m.id = p.message_id \
             WHERE p.provider = ?1 AND p.provider_id = ?2",
        )?
        .query_row(params![receipt.provider, receipt.provider_id], |r| Row::try_from(r))
        .optional()?;
    let Some((message, borrower, contact, channel, outcome, class)) = row else {
        return Ok(None);
    };
    let at = ts_micros(receipt.at);
    keep_receipt(tx, receipt, None, Some("verification"))?;
    let new = SendOutcome::of(receipt.class);
    let changed = new.rank() > SendOutcome::from_columns(&outcome, class.as_deref())?.rank();
    if changed {
        tx.prepare_cached("UPDATE verification_messages SET outcome = ?2, outcome_class = ?3 WHERE id = ?1")?
            .execute(params![message, new.name(), new.class_column()])?;
        if let Some(contact) = contact {
            let channel: Channel = channel.parse().map_err(codec::corrupt)?;
            let kind = kinds.get(&(channel, receipt.class));
            receipt_evidence(tx, borrower, contact, at, &receipt.provider, kind)?;
        }
    }
    Ok(Some(Matched::Verification {
        borrower: BorrowerId(borrower),
        contact: contact.map(ContactId),
        changed,
    }))
}

/// Records one accepted send inside a transaction; receipts that came before it and change its
/// outcome now are matched as on arrival (evidence, wake) and added to `late`.
fn sent_tx(
    tx: &Connection,
    s: &SentRecord,
    kinds: &HashMap<(Channel, DeliveryClass), String>,
    late: &mut Vec<LateMatch>,
) -> Result<()> {
    let id = s.id;
    let at = ts_micros(s.at);
    set_state(
        tx,
        id,
        &[SendState::Sending, SendState::InDoubt],
        SendState::Sent,
        at,
        None,
    )?;
    tx.prepare_cached(
        "UPDATE outbox SET sent_at = ?2, provider = ?3, template_id = ?4, template_version = ?5, \
         text_sha256 = ?6 WHERE id = ?1",
    )?
    .execute(params![
        id,
        at,
        s.provider,
        s.template_id,
        s.template_version,
        s.text_sha256.to_vec()
    ])?;
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO outbox_provider_ids (provider, provider_id, outbox_id, part) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (provider, provider_id) DO UPDATE SET outbox_id = excluded.outbox_id, part = excluded.part",
        )?;
        for (part, pid) in s.provider_ids.iter().enumerate() {
            ins.execute(params![s.provider, pid, id, part as i64])?;
        }
    }
    // A receipt that beat this record (it came before we wrote the ids) was kept unmatched;
    // match it now.
    let early: Vec<(i64, String, i64, String)> = {
        let mut q = tx.prepare_cached(
            "SELECT r.id, r.class, r.at, r.provider_id FROM outbox_provider_ids p \
             CROSS JOIN receipts r INDEXED BY receipts_unmatched \
             ON r.provider = p.provider AND r.provider_id = p.provider_id \
             WHERE r.outbox_id IS NULL AND p.provider = ?1 AND p.outbox_id = ?2 ORDER BY r.id",
        )?;
        let rows = q
            .query_map(params![s.provider, id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows
    };
    for (rid, class, received, provider_id) in early {
        tx.prepare_cached("UPDATE receipts SET outbox_id = ?2, flag = 'matched late' WHERE id = ?1")?
            .execute(params![rid, id])?;
        let class: DeliveryClass = class.parse().map_err(codec::corrupt)?;
        if !raise_outcome(tx, id, SendOutcome::of(class), at)? {
            continue;
        }
        let (borrower, contact, channel): (i64, i64, String) = tx
            .prepare_cached("SELECT borrower_id, contact_id, channel FROM outbox WHERE id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let channel: Channel = channel.parse().map_err(codec::corrupt)?;
        let when = received.max(at);
        receipt_evidence(tx, borrower, contact, when, &s.provider, kinds.get(&(channel, class)))?;
        late.push(LateMatch {
            receipt: ReceiptMatch {
                outbox_id: id,
                borrower: BorrowerId(borrower),
                contact: ContactId(contact),
                channel,
                changed: true,
            },
            class,
            provider_id,
            at: codec::ts_from_micros(when)?,
        });
    }
    Ok(())
}

fn send_target(c: &Connection, keys: &crate::Keyring, borrower: BorrowerId, contact: ContactId) -> Result<SendTarget> {
    let contacts = super::query_contacts(c, keys, "WHERE id = ?1", &contact.0)?;
    let rec = contacts.into_iter().next().ok_or_else(|| StoreError::NotFound {
        what: "contact point",
        id: contact.to_string(),
    })?;
    if rec.borrower_id != borrower {
        return Err(StoreError::Conflict(format!(
            "contact point {contact} is not borrower {borrower}'s"
        )));
    }
    let sealer = sealer_for(c, keys, borrower)?;
    let b = super::load_borrower_row(c, borrower)?.open(&sealer)?;
    Ok(SendTarget {
        address: rec.point.address,
        borrower_name: b.name,
    })
}

/// Raises an attempt's outcome if `new` ranks above what is known; true if it did.
fn raise_outcome(c: &Connection, id: i64, new: SendOutcome, at: i64) -> Result<bool> {
    let (outcome, class): (String, Option<String>) = c
        .prepare_cached("SELECT outcome, outcome_class FROM outbox WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let old = SendOutcome::from_columns(&outcome, class.as_deref())?;
    if new.rank() <= old.rank() {
        return Ok(false);
    }
    c.prepare_cached("UPDATE outbox SET outcome = ?2, outcome_class = ?3, outcome_at = ?4 WHERE id = ?1")?
        .execute(params![id, new.name(), new.class_column(), at])?;
    Ok(true)
}

fn views(c: &Connection, ids: &[i64], from: NaiveDate, to: NaiveDate) -> Result<Vec<EngineView>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: HashSet<i64> = ids.iter().copied().collect();
    // The ids as one JSON array parameter: `IN (SELECT value FROM json_each(?1))` uses the
    // borrower index whether the ids are one range (the planner) or scattered (a lease).
    let set = serde_json::to_string(ids).unwrap_or_default();
    let mut out: Vec<EngineView> = Vec::with_capacity(ids.len());
    let mut index: HashMap<i64, usize> = HashMap::with_capacity(ids.len());
    {
        let mut stmt = c.prepare_cached(
            "SELECT b.id, b.locale, b.time_zone, b.jurisdiction, b.external_id, COALESCE(w.seq, 0), \
             p.channels, p.quiet_start, p.quiet_end FROM borrowers b \
             LEFT JOIN engine_wake w ON w.borrower_id = b.id LEFT JOIN borrower_preferences p ON p.borrower_id = b.id \
             WHERE b.id IN (SELECT value FROM json_each(?1)) \
             AND NOT EXISTS (SELECT 1 FROM erasures e WHERE e.borrower_id = b.id) ORDER BY b.id",
        )?;
        let rows = stmt
            .query_map([&set], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    (
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<i32>>(7)?,
                        r.get::<_, Option<i32>>(8)?,
                    ),
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (id, locale, zone, jurisdiction, external_id, wake_seq, (channels, quiet_start, quiet_end)) in rows {
            if !wanted.contains(&id) {
                continue;
            }
            index.insert(id, out.len());
            out.push(EngineView {
                id: BorrowerId(id),
                external_id,
                locale: locale.parse().map_err(codec::corrupt)?,
                zone: reachline_domain::borrower::parse_time_zone(&zone).map_err(codec::corrupt)?,
                jurisdiction: jurisdiction.parse().map_err(codec::corrupt)?,
                contacts: Vec::new(),
                consents: Vec::new(),
                installments: Vec::new(),
                evidence: Vec::new(),
                sends: Vec::new(),
                wake_seq,
                preferences: codec::preferences_from_columns(channels.as_deref(), quiet_start, quiet_end)?,
            });
        }
    }
    let with = |id: i64| index.get(&id).copied();
    {
        let mut stmt = c.prepare_cached(
            "SELECT id, borrower_id, kind, role, relation, bound_since, verified_at, retired_at FROM contact_points \
             WHERE borrower_id IN (SELECT value FROM json_each(?1)) ORDER BY borrower_id, id",
        )?;
        type Raw = (
            i64,
            i64,
            String,
            String,
            Option<String>,
            String,
            Option<i64>,
            Option<i64>,
        );
        let rows = stmt
            .query_map([&set], |r| Raw::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (id, b, kind, role, relation, bound, verified, retired) in rows {
            let Some(i) = with(b) else { continue };
            out[i].contacts.push(EngineContact {
                id: ContactId(id),
                kind: kind.parse().map_err(codec::corrupt)?,
                role: ContactRole::from_parts(&role, relation.as_deref()).map_err(codec::corrupt)?,
                bound_since: codec::date_parse(&bound)?,
                verified_at: verified.map(ts_from_micros).transpose()?,
                retired: retired.is_some(),
            });
        }
    }
    {
        let mut stmt = c.prepare_cached(
            "SELECT borrower_id, purpose, channel, state, at, source, text_version FROM consents \
             WHERE borrower_id IN (SELECT value FROM json_each(?1)) ORDER BY borrower_id, at, id",
        )?;
        type Raw = (i64, String, String, String, i64, String, String);
        let rows = stmt
            .query_map([&set], |r| Raw::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (b, p, ch, st, at, src, tv) in rows {
            let Some(i) = with(b) else { continue };
            out[i].consents.push(codec::consent_from_columns(
                &p,
                &ch,
                &st,
                ts_from_micros(at)?,
                &src,
                tv,
            )?);
        }
    }
    {
        let mut stmt = c.prepare_cached(
            "SELECT i.id, l.borrower_id, l.product, l.external_id, i.seq, i.due_date, i.amount_due_minor, \
             i.amount_paid_minor, i.currency FROM loans l JOIN installments i ON i.loan_id = l.id \
             WHERE l.borrower_id IN (SELECT value FROM json_each(?1)) AND i.due_date BETWEEN ?2 AND ?3 ORDER BY i.due_date, i.id",
        )?;
        type Raw = (i64, i64, String, String, u32, String, i64, i64, String);
        let rows = stmt
            .query_map(params![set, from.to_string(), to.to_string()], |r| Raw::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (id, b, product, loan_ref, seq, due, amount_due, amount_paid, cur) in rows {
            let Some(i) = with(b) else { continue };
            out[i].installments.push(EngineInstallment {
                id: InstallmentId(id),
                product,
                loan_ref,
                seq,
                due_date: codec::date_parse(&due)?,
                amount_due_minor: amount_due,
                amount_paid_minor: amount_paid,
                currency: cur.parse().map_err(codec::corrupt)?,
                paid: amount_paid >= amount_due,
            });
        }
    }
    {
        let mut stmt = c.prepare_cached(
            "SELECT id, borrower_id, contact_id, at, source, kind FROM evidence \
             WHERE borrower_id IN (SELECT value FROM json_each(?1)) ORDER BY at, id",
        )?;
        type Raw = (i64, i64, Option<i64>, i64, String, String);
        let rows = stmt
            .query_map([&set], |r| Raw::try_from(r))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (id, b, contact, at, source, kind) in rows {
            let Some(i) = with(b) else { continue };
            out[i].evidence.push(StoredEvidence {
                id,
                contact: contact.map(ContactId),
                at: ts_from_micros(at)?,
                source,
                kind,
            });
        }
    }
    for row in query_outbox(
        c,
        "WHERE borrower_id IN (SELECT value FROM json_each(?1)) ORDER BY id",
        [&set],
    )? {
        let Some(i) = with(row.borrower.0) else { continue };
        out[i].sends.push(row);
    }
    Ok(out)
}
