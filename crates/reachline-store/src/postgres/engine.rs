//! The engine's tables on PostgreSQL, shared by several nodes. Dispatchers lease with
//! `FOR UPDATE SKIP LOCKED` (two nodes never hold one row; neither waits for the other), and a
//! row is marked `sending` only by the node whose lease it is, while the lease runs. A node
//! leasing a borrower's row holds the borrower (`dispatch_holds`) until its lease and a grace
//! have run out, so one node at a time checks and sends a borrower's notices. A receipt and the record of the
//! send it answers may be written at once by two connections: both take the same transaction
//! advisory locks (one per provider-id bucket, in order) so the one that commits second always
//! sees the other's row and the receipt is matched. Batches go over `UNNEST`ed arrays, one
//! statement per table.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use reachline_domain::{BorrowerId, Channel, ContactId, ContactRole, DeliveryClass, ExternalId, InstallmentId};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{borrower_row, contact_row, PgStore, StoredContact};
use crate::codec;
use crate::crypto::Sealer;
use crate::engine::{
    provider_source, CountRow, DecisionRow, EngineContact, EngineInstallment, EngineStore, EngineView, LateMatch,
    Matched, OutboxRow, PlanWrite, ReceiptIn, ReceiptMatch, SendOutcome, SendState, SendTarget, SentRecord, Sighted,
    StoredEvidence, VerificationSent, PAYMENT_EVIDENCE, PAYMENT_SOURCE,
};
use crate::server::Sighting;
use crate::{Result, StoreError};

const OUTBOX_COLS: &str = "o.id, o.idem_key, o.borrower_id, o.installment_id, o.step, o.kind, o.rung, o.contact_id, \
     o.channel, o.third_party, o.not_before, o.state, o.tries, o.sent_at, o.outcome, o.outcome_class";

/// A lease's filter on an outbox row `o`: its borrower is not held by another owner than `$1`
/// at `$3` (see `dispatch_holds`, migration 0018).
const NOT_HELD: &str =
    "NOT EXISTS (SELECT 1 FROM dispatch_holds h WHERE h.borrower_id = o.borrower_id AND h.owner <> $1 AND h.until >= $3)";

/// The slices a planning pass is cut into (the rows of `plan_slices`, migration 0013).
const PLAN_SLICES: u32 = 16;

/// The advisory-lock namespace of receipt matching (the first key of the two-key form).
const MATCH_LOCK_SPACE: i32 = 0x5245_4345; // "RECE"
/// Buckets of provider ids: enough that unrelated batches rarely meet, few enough to lock a
/// batch's worth in one statement.
const MATCH_LOCK_BUCKETS: u16 = 4096;

fn match_bucket(provider: &str, provider_id: &str) -> i32 {
    let h = Sha256::new()
        .chain_update(provider.as_bytes())
        .chain_update([0])
        .chain_update(provider_id.as_bytes())
        .finalize();
    i32::from(u16::from_be_bytes([h[0], h[1]]) % MATCH_LOCK_BUCKETS)
}

/// Takes the matching locks of these (provider, provider id) pairs, in bucket order so two
/// transactions never wait on each other in a cycle; held until the transaction ends.
async fn lock_matching<'a>(c: &mut PgConnection, ids: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<()> {
    let mut buckets: Vec<i32> = ids.into_iter().map(|(p, id)| match_bucket(p, id)).collect();
    if buckets.is_empty() {
        return Ok(());
    }
    buckets.sort_unstable();
    buckets.dedup();
    // A volatile function in the target list runs after the sort, so the locks come in order.
    sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM UNNEST($2::int4[]) AS k ORDER BY k")
        .bind(MATCH_LOCK_SPACE)
        .bind(&buckets)
        .fetch_all(&mut *c)
        .await?;
    Ok(())
}

/// Locks outbox rows in id order. Every transaction that touches several rows takes its locks
/// this way first (after its matching locks), so none waits on another in a cycle.
async fn lock_rows(c: &mut PgConnection, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT id FROM outbox WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(ids)
        .fetch_all(&mut *c)
        .await?;
    Ok(())
}

fn outbox_row(r: &PgRow) -> Result<OutboxRow> {
    let channel: String = r.try_get("channel")?;
    let state: String = r.try_get("state")?;
    let outcome: String = r.try_get("outcome")?;
    let class: Option<String> = r.try_get("outcome_class")?;
    Ok(OutboxRow {
        id: r.try_get("id")?,
        idem_key: r.try_get("idem_key")?,
        borrower: BorrowerId(r.try_get("borrower_id")?),
        installment: InstallmentId(r.try_get("installment_id")?),
        step: r.try_get::<i32, _>("step")? as usize,
        kind: r.try_get("kind")?,
        rung: r.try_get::<i32, _>("rung")? as usize,
        contact: ContactId(r.try_get("contact_id")?),
        channel: channel.parse().map_err(codec::corrupt)?,
        third_party: r.try_get("third_party")?,
        not_before: r.try_get("not_before")?,
        state: state.parse().map_err(codec::corrupt)?,
        tries: r.try_get::<i32, _>("tries")? as u32,
        sent_at: r.try_get("sent_at")?,
        outcome: SendOutcome::from_columns(&outcome, class.as_deref())?,
    })
}

/// Evidence wakes borrowers: each at the earliest of its planned time and `at` (a receipt wakes
/// the borrower now even if the planner set a later time), counting up `seq` so a pass that
/// read the borrower before this does not set its later wake over it. Rows in borrower order,
/// as every writer of several wake rows takes them.
async fn wake_all(c: &mut PgConnection, wakes: &[(i64, DateTime<Utc>)]) -> Result<()> {
    if wakes.is_empty() {
        return Ok(());
    }
    let mut w = wakes.to_vec();
    // One row per borrower (a statement may not update a row twice): the earliest.
    w.sort_unstable();
    w.dedup_by_key(|x| x.0);
    sqlx::query(
        "INSERT INTO engine_wake (borrower_id, wake_at, seq) \
         SELECT b, t, 1 FROM UNNEST($1::int8[], $2::timestamptz[]) AS u(b, t) \
         ON CONFLICT (borrower_id) DO UPDATE SET wake_at = LEAST(engine_wake.wake_at, excluded.wake_at), \
         seq = engine_wake.seq + 1",
    )
    .bind(w.iter().map(|x| x.0).collect::<Vec<_>>())
    .bind(w.iter().map(|x| x.1).collect::<Vec<_>>())
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn wake(c: &mut PgConnection, borrower: i64, at: DateTime<Utc>) -> Result<()> {
    wake_all(c, &[(borrower, at)]).await
}

/// Moves a row from one of `from` to `to` with its detail (clearing any lease) inside the
/// caller's transaction; returns its borrower.
async fn transition(
    c: &mut PgConnection,
    id: i64,
    from: &[SendState],
    to: SendState,
    at: DateTime<Utc>,
    detail: &str,
) -> Result<i64> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let borrower: Option<i64> = sqlx::query_scalar(
        "UPDATE outbox SET state = $2, updated_at = $3, detail = $4, lease_owner = NULL, lease_until = NULL \
         WHERE id = $1 AND state = ANY($5) RETURNING borrower_id",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(at)
    .bind(detail)
    .bind(&from)
    .fetch_optional(&mut *c)
    .await?;
    borrower.ok_or_else(|| {
        StoreError::Conflict(format!(
            "outbox row {id} is not in state {} (moving to {})",
            from.join("/"),
            to.as_str()
        ))
    })
}

async fn count_rows(pool: &sqlx::PgPool, sql: &str, width: usize) -> Result<Vec<CountRow>> {
    let rows = sqlx::query(sql).fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            let mut keys = Vec::with_capacity(width);
            for i in 0..width {
                keys.push(r.try_get::<Option<String>, _>(i)?.unwrap_or_default());
            }
            Ok(CountRow {
                keys,
                count: r.try_get::<i64, _>(width)? as u64,
            })
        })
        .collect()
}

/// Raises an attempt's outcome if `new` ranks above what is known; true if it did. The caller
/// holds the row's lock.
async fn raise_outcome(c: &mut PgConnection, id: i64, new: SendOutcome, at: DateTime<Utc>) -> Result<bool> {
    let r = sqlx::query("SELECT outcome, outcome_class FROM outbox WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *c)
        .await?;
    let outcome: String = r.try_get(0)?;
    let class: Option<String> = r.try_get(1)?;
    let old = SendOutcome::from_columns(&outcome, class.as_deref())?;
    if new.rank() <= old.rank() {
        return Ok(false);
    }
    sqlx::query("UPDATE outbox SET outcome = $2, outcome_class = $3, outcome_at = $4 WHERE id = $1")
        .bind(id)
        .bind(new.name())
        .bind(new.class_column())
        .bind(at)
        .execute(&mut *c)
        .await?;
    Ok(true)
}

/// Keeps the last of each key: one statement may not update a row twice.
fn last_per_key<T, K: std::hash::Hash + Eq>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut seen = HashSet::new();
    let mut out: Vec<T> = items.into_iter().rev().filter(|t| seen.insert(key(t))).collect();
    out.reverse();
    out
}

#[async_trait]
impl EngineStore for PgStore {
    async fn due_borrowers(&self, from: NaiveDate, to: NaiveDate, now: DateTime<Utc>) -> Result<Vec<BorrowerId>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT l.borrower_id FROM installments i JOIN loans l ON l.id = i.loan_id \
             WHERE i.due_date BETWEEN $1 AND $2 AND i.amount_paid_minor < i.amount_due_minor \
             AND NOT EXISTS (SELECT 1 FROM engine_wake w WHERE w.borrower_id = l.borrower_id AND w.wake_at > $3) \
             ORDER BY 1",
        )
        .bind(from)
        .bind(to)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(BorrowerId).collect())
    }

    fn plan_slices(&self) -> u32 {
        PLAN_SLICES
    }

    async fn claim_plan_slice(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        hold: chrono::Duration,
        done: &[u32],
    ) -> Result<Option<u32>> {
        let done: Vec<i32> = done.iter().map(|d| *d as i32).collect();
        let slice: Option<i32> = sqlx::query_scalar(
            "UPDATE plan_slices SET owner = $1, until = $3 WHERE slice = \
             (SELECT slice FROM plan_slices WHERE until <= $2 AND slice <> ALL($4) \
              ORDER BY until, slice LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING slice",
        )
        .bind(owner)
        .bind(now)
        .bind(now + hold)
        .bind(done)
        .fetch_optional(&self.pool)
        .await?;
        Ok(slice.map(|s| s as u32))
    }

    async fn views(&self, ids: &[BorrowerId], from: NaiveDate, to: NaiveDate) -> Result<Vec<EngineView>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let set: Vec<i64> = ids.iter().map(|b| b.0).collect();
        // One snapshot: every table seen at the same moment.
        let mut c = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *c)
            .await?;
        let mut out: Vec<EngineView> = Vec::with_capacity(ids.len());
        let mut index: HashMap<i64, usize> = HashMap::with_capacity(ids.len());
        for r in sqlx::query(
            // The wake row and the preferences are looked up per borrower (LIMIT keeps PostgreSQL
            // from turning them into joins): as joins, the whole wake table was hashed for each
            // batch once the book's borrowers all had one (300,000 rows read to keep 8,000).
            "SELECT b.id, b.locale, b.time_zone, b.jurisdiction, b.external_id, COALESCE(w.seq, 0) AS wake_seq, \
             p.channels, p.quiet_start, p.quiet_end FROM borrowers b \
             LEFT JOIN LATERAL (SELECT seq FROM engine_wake WHERE borrower_id = b.id LIMIT 1) w ON true \
             LEFT JOIN LATERAL (SELECT channels, quiet_start, quiet_end FROM borrower_preferences \
             WHERE borrower_id = b.id LIMIT 1) p ON true WHERE b.id = ANY($1) \
             AND NOT EXISTS (SELECT 1 FROM erasures e WHERE e.borrower_id = b.id) ORDER BY b.id",
        )
        .bind(&set)
        .fetch_all(&mut *c)
        .await?
        {
            let id: i64 = r.try_get("id")?;
            index.insert(id, out.len());
            out.push(EngineView {
                id: BorrowerId(id),
                external_id: r.try_get("external_id")?,
                locale: r.try_get::<String, _>("locale")?.parse().map_err(codec::corrupt)?,
                zone: reachline_domain::borrower::parse_time_zone(&r.try_get::<String, _>("time_zone")?)
                    .map_err(codec::corrupt)?,
                jurisdiction: r
                    .try_get::<String, _>("jurisdiction")?
                    .parse()
                    .map_err(codec::corrupt)?,
                contacts: Vec::new(),
                consents: Vec::new(),
                installments: Vec::new(),
                evidence: Vec::new(),
                sends: Vec::new(),
                wake_seq: r.try_get("wake_seq")?,
                preferences: codec::preferences_from_columns(
                    r.try_get::<Option<String>, _>("channels")?.as_deref(),
                    r.try_get("quiet_start")?,
                    r.try_get("quiet_end")?,
                )?,
            });
        }
        let at = |index: &HashMap<i64, usize>, r: &PgRow| -> Result<Option<usize>> {
            Ok(index.get(&r.try_get::<i64, _>("borrower_id")?).copied())
        };
        for r in sqlx::query(
            "SELECT id, borrower_id, kind, role, relation, bound_since, verified_at, retired_at FROM contact_points \
             WHERE borrower_id = ANY($1) ORDER BY borrower_id, id",
        )
        .bind(&set)
        .fetch_all(&mut *c)
        .await?
        {
            let Some(i) = at(&index, &r)? else { continue };
            let role: String = r.try_get("role")?;
            let relation: Option<String> = r.try_get("relation")?;
            out[i].contacts.push(EngineContact {
                id: ContactId(r.try_get("id")?),
                kind: r.try_get::<String, _>("kind")?.parse().map_err(codec::corrupt)?,
                role: ContactRole::from_parts(&role, relation.as_deref()).map_err(codec::corrupt)?,
                bound_since: r.try_get("bound_since")?,
                verified_at: r.try_get("verified_at")?,
                retired: r.try_get::<Option<DateTime<Utc>>, _>("retired_at")?.is_some(),
            });
        }
        for r in sqlx::query(
            "SELECT borrower_id, purpose, channel, state, at, source, text_version FROM consents \
             WHERE borrower_id = ANY($1) ORDER BY borrower_id, at, id",
        )
        .bind(&set)
        .fetch_all(&mut *c)
        .await?
        {
            let Some(i) = at(&index, &r)? else { continue };
            out[i].consents.push(codec::consent_from_columns(
                r.try_get("purpose")?,
                r.try_get("channel")?,
                r.try_get("state")?,
                r.try_get("at")?,
                r.try_get("source")?,
                r.try_get("text_version")?,
            )?);
        }
        for r in sqlx::query(
            // Borrower by borrower (OFFSET 0 keeps the subquery from becoming a join): as one
            // join PostgreSQL chose to scan every loan in parallel for each batch (1.7M rows
            // read to keep 15,000; 210 ms against 70 ms).
            "SELECT x.id, u.b AS borrower_id, x.product, x.external_id, x.seq, x.due_date, x.amount_due_minor, \
             x.amount_paid_minor, x.currency FROM unnest($1::int8[]) AS u(b) CROSS JOIN LATERAL \
             (SELECT i.id, l.product, l.external_id, i.seq, i.due_date, i.amount_due_minor, i.amount_paid_minor, \
             i.currency FROM loans l JOIN installments i ON i.loan_id = l.id \
             WHERE l.borrower_id = u.b AND i.due_date BETWEEN $2 AND $3 OFFSET 0) x ORDER BY x.due_date, x.id",
        )
        .bind(&set)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *c)
        .await?
        {
            let Some(i) = at(&index, &r)? else { continue };
            let amount_due: i64 = r.try_get("amount_due_minor")?;
            let amount_paid: i64 = r.try_get("amount_paid_minor")?;
            out[i].installments.push(EngineInstallment {
                id: InstallmentId(r.try_get("id")?),
                product: r.try_get("product")?,
                loan_ref: r.try_get("external_id")?,
                seq: r.try_get::<i32, _>("seq")? as u32,
                due_date: r.try_get("due_date")?,
                amount_due_minor: amount_due,
                amount_paid_minor: amount_paid,
                currency: r.try_get::<String, _>("currency")?.parse().map_err(codec::corrupt)?,
                paid: amount_paid >= amount_due,
            });
        }
        for r in sqlx::query(
            "SELECT id, borrower_id, contact_id, at, source, kind FROM evidence WHERE borrower_id = ANY($1) \
             ORDER BY at, id",
        )
        .bind(&set)
        .fetch_all(&mut *c)
        .await?
        {
            let Some(i) = at(&index, &r)? else { continue };
            out[i].evidence.push(StoredEvidence {
                id: r.try_get("id")?,
                contact: r.try_get::<Option<i64>, _>("contact_id")?.map(ContactId),
                at: r.try_get("at")?,
                source: r.try_get("source")?,
                kind: r.try_get("kind")?,
            });
        }
        for r in sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM outbox o WHERE o.borrower_id = ANY($1) ORDER BY o.id"
        ))
        .bind(&set)
        .fetch_all(&mut *c)
        .await?
        {
            let row = outbox_row(&r)?;
            if let Some(&i) = index.get(&row.borrower.0) {
                out[i].sends.push(row);
            }
        }
        c.commit().await?;
        Ok(out)
    }

    async fn write_plan(&self, plan: PlanWrite) -> Result<usize> {
        let at = plan.at.unwrap_or_else(Utc::now);
        let mut tx = self.pool.begin().await?;
        let mut queued = 0;
        if !plan.sends.is_empty() {
            let s = &plan.sends;
            queued = sqlx::query(
                "INSERT INTO outbox (idem_key, borrower_id, installment_id, step, kind, rung, contact_id, channel, \
                 third_party, not_before, state, created_at, updated_at) \
                 SELECT k, b, i, st, kd, r, ct, ch, tp, nb, 'queued', $11, $11 FROM UNNEST($1::text[], $2::int8[], \
                 $3::int8[], $4::int4[], $5::text[], $6::int4[], $7::int8[], $8::text[], $9::bool[], \
                 $10::timestamptz[]) AS t(k, b, i, st, kd, r, ct, ch, tp, nb) \
                 ON CONFLICT (idem_key) DO NOTHING",
            )
            .bind(s.iter().map(|s| s.idem_key.as_str()).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.borrower.0).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.installment.0).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.step as i32).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.kind.as_str()).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.rung as i32).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.contact.0).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.channel.as_str()).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.third_party).collect::<Vec<_>>())
            .bind(s.iter().map(|s| s.not_before).collect::<Vec<_>>())
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected() as usize;
        }
        // Within one pass a notice has one decision; were there two, the later one stands.
        let d = last_per_key(plan.decisions, |d| (d.borrower, d.notice.clone()));
        if !d.is_empty() {
            // Only a decision that differs from the notice's latest is history.
            sqlx::query(
                "WITH input AS (SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::timestamptz[], $7::text[]) WITH ORDINALITY AS t(borrower_id, notice, action, reason, gate, \
                 until_at, detail, n)), \
                 changed AS (SELECT i.* FROM input i LEFT JOIN notice_states s \
                 ON s.borrower_id = i.borrower_id AND s.notice = i.notice \
                 WHERE s.borrower_id IS NULL OR s.action IS DISTINCT FROM i.action \
                 OR s.reason IS DISTINCT FROM i.reason OR s.gate IS DISTINCT FROM i.gate \
                 OR s.detail IS DISTINCT FROM i.detail), \
                 history AS (INSERT INTO decisions (borrower_id, notice, at, action, reason, gate, until_at, detail) \
                 SELECT borrower_id, notice, $8, action, reason, gate, until_at, detail FROM changed ORDER BY n) \
                 INSERT INTO notice_states (borrower_id, notice, action, reason, gate, until_at, detail, at) \
                 SELECT borrower_id, notice, action, reason, gate, until_at, detail, $8 FROM changed \
                 ON CONFLICT (borrower_id, notice) DO UPDATE SET action = excluded.action, \
                 reason = excluded.reason, gate = excluded.gate, until_at = excluded.until_at, \
                 detail = excluded.detail, at = excluded.at",
            )
            .bind(d.iter().map(|d| d.borrower.0).collect::<Vec<_>>())
            .bind(d.iter().map(|d| d.notice.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|d| d.action.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>())
            .bind(d.iter().map(|d| d.gate.as_deref()).collect::<Vec<_>>())
            .bind(d.iter().map(|d| d.until).collect::<Vec<_>>())
            .bind(d.iter().map(|d| d.detail.as_deref()).collect::<Vec<_>>())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        let w = last_per_key(plan.wakes, |(b, _, _)| *b);
        if !w.is_empty() {
            sqlx::query(
                "INSERT INTO engine_wake (borrower_id, wake_at, seq) \
                 SELECT * FROM UNNEST($1::int8[], $2::timestamptz[], $3::int8[]) \
                 ON CONFLICT (borrower_id) DO UPDATE SET wake_at = excluded.wake_at \
                 WHERE engine_wake.seq = excluded.seq",
            )
            .bind(w.iter().map(|(b, _, _)| b.0).collect::<Vec<_>>())
            .bind(w.iter().map(|(_, t, _)| *t).collect::<Vec<_>>())
            .bind(w.iter().map(|(_, _, s)| *s).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(queued)
    }

    async fn lease(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
        limit: usize,
    ) -> Result<Vec<OutboxRow>> {
        let until = now + lease;
        // Rows another node has locked are skipped, not waited for; each branch locks what it
        // picks and passes over borrowers another owner holds. Two nodes may still pick rows of
        // one borrower at once (neither hold committed yet): the hold is taken by upsert, in
        // borrower order (no deadlock), and the one that commits second finds the other's hold
        // and leases none of that borrower's rows. The rows are updated by their ids as an array
        // (`= ANY(ARRAY(…))`): joined to the CTE instead, the planner hashed the CTE and
        // scanned the whole outbox on every lease, a cost that grew with the day's sends
        // (235 ms a lease at 60,445 rows, most of a 24-second dispatch). `o.queued` and
        // `o.held` look redundant beside `state`, but they are the partial indexes' predicates
        // (migration 0019), which PostgreSQL cannot infer from `state = …`.
        let rows = sqlx::query(&format!(
            "WITH queued AS (SELECT id, borrower_id FROM outbox o WHERE o.queued AND not_before <= $3 \
             AND {NOT_HELD} ORDER BY not_before, id LIMIT $4 FOR UPDATE SKIP LOCKED), \
             expired AS (SELECT id, borrower_id FROM outbox o WHERE o.held AND state = 'leased' AND lease_until < $3 \
             AND {NOT_HELD} ORDER BY lease_until LIMIT $4 FOR UPDATE SKIP LOCKED), \
             picked AS (SELECT id, borrower_id FROM queued UNION ALL SELECT id, borrower_id FROM expired LIMIT $4), \
             held AS (INSERT INTO dispatch_holds (borrower_id, owner, until) \
             SELECT DISTINCT borrower_id, $1, $5::timestamptz FROM picked ORDER BY 1 \
             ON CONFLICT (borrower_id) DO UPDATE SET owner = excluded.owner, until = excluded.until \
             WHERE dispatch_holds.owner = excluded.owner OR dispatch_holds.until < $3 RETURNING borrower_id) \
             UPDATE outbox o SET state = 'leased', lease_owner = $1, lease_until = $2, updated_at = $3 \
             WHERE o.id = ANY(ARRAY(SELECT d.id FROM picked d WHERE d.borrower_id IN (SELECT borrower_id FROM held))) \
             RETURNING {OUTBOX_COLS}"
        ))
        .bind(owner)
        .bind(until)
        .bind(now)
        .bind(limit as i64)
        .bind(crate::engine::hold_until(now, lease))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows.iter().map(outbox_row).collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|r| r.id);
        Ok(out)
    }

    async fn mark_sending_many(&self, owner: &str, ids: Vec<i64>, at: DateTime<Utc>) -> Result<Vec<i64>> {
        // The lease stays: it is how a later pass tells a live send from one left by a node that
        // died.
        let mut moved: Vec<i64> = sqlx::query_scalar(
            "UPDATE outbox SET state = 'sending', tries = tries + 1, updated_at = $3 \
             WHERE id = ANY($1) AND state = 'leased' AND lease_owner = $2 AND lease_until > $3 RETURNING id",
        )
        .bind(&ids)
        .bind(owner)
        .bind(at)
        .fetch_all(&self.pool)
        .await?;
        moved.sort_unstable();
        Ok(moved)
    }

    async fn record_sent_many(
        &self,
        sent: Vec<SentRecord>,
        evidence_kind: &(dyn Fn(Channel, DeliveryClass) -> String + Sync),
    ) -> Result<Vec<LateMatch>> {
        if sent.is_empty() {
            return Ok(Vec::new());
        }
        let mut parts: Vec<(&str, &str, i64, i32)> = Vec::new();
        for s in &sent {
            for (part, pid) in s.provider_ids.iter().enumerate() {
                parts.push((s.provider.as_str(), pid.as_str(), s.id, part as i32));
            }
        }
        let parts = last_per_key(parts, |p| (p.0, p.1));
        let mut tx = self.pool.begin().await?;
        lock_matching(&mut tx, parts.iter().map(|p| (p.0, p.1))).await?;
        let ids: Vec<i64> = sent.iter().map(|s| s.id).collect();
        lock_rows(&mut tx, &ids).await?;
        let moved: Vec<i64> = sqlx::query_scalar(
            "UPDATE outbox o SET state = 'sent', updated_at = u.at, sent_at = u.at, provider = u.provider, \
             template_id = u.tid, template_version = u.tv, text_sha256 = u.sha, lease_owner = NULL, \
             lease_until = NULL FROM UNNEST($1::int8[], $2::timestamptz[], $3::text[], $4::text[], $5::int4[], \
             $6::bytea[]) AS u(id, at, provider, tid, tv, sha) \
             WHERE o.id = u.id AND o.state IN ('sending', 'in_doubt') RETURNING o.id",
        )
        .bind(&ids)
        .bind(sent.iter().map(|s| s.at).collect::<Vec<_>>())
        .bind(sent.iter().map(|s| s.provider.as_str()).collect::<Vec<_>>())
        .bind(sent.iter().map(|s| s.template_id.as_str()).collect::<Vec<_>>())
        .bind(sent.iter().map(|s| s.template_version as i32).collect::<Vec<_>>())
        .bind(sent.iter().map(|s| s.text_sha256.to_vec()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        if moved.len() != ids.len() {
            let moved: HashSet<i64> = moved.into_iter().collect();
            let stray: Vec<String> = ids.iter().filter(|i| !moved.contains(i)).map(i64::to_string).collect();
            return Err(StoreError::Conflict(format!(
                "outbox rows {} are not in state sending/in_doubt (moving to sent)",
                stray.join(", ")
            )));
        }
        if !parts.is_empty() {
            sqlx::query(
                "INSERT INTO outbox_provider_ids (provider, provider_id, outbox_id, part) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int4[]) \
                 ON CONFLICT (provider, provider_id) DO UPDATE SET outbox_id = excluded.outbox_id, part = excluded.part",
            )
            .bind(parts.iter().map(|p| p.0).collect::<Vec<_>>())
            .bind(parts.iter().map(|p| p.1).collect::<Vec<_>>())
            .bind(parts.iter().map(|p| p.2).collect::<Vec<_>>())
            .bind(parts.iter().map(|p| p.3).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        // A receipt that beat this record (it came before the ids were written) was kept
        // unmatched; match it now, as on arrival.
        let early: Vec<(i64, String, i64, DateTime<Utc>, String, String)> = sqlx::query_as(
            "SELECT r.id, r.class, p.outbox_id, r.at, r.provider, r.provider_id FROM receipts r \
             JOIN outbox_provider_ids p ON p.provider = r.provider AND p.provider_id = r.provider_id \
             WHERE r.outbox_id IS NULL AND p.outbox_id = ANY($1) ORDER BY r.id",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut late = Vec::new();
        if !early.is_empty() {
            let kinds = crate::engine::delivery_kinds(evidence_kind);
            let mut answered: Vec<i64> = early.iter().map(|e| e.2).collect();
            answered.sort_unstable();
            answered.dedup();
            let whose: HashMap<i64, (i64, i64, String)> = sqlx::query_as::<_, (i64, i64, i64, String)>(
                "SELECT id, borrower_id, contact_id, channel FROM outbox WHERE id = ANY($1)",
            )
            .bind(&answered)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(id, b, c, ch)| (id, (b, c, ch)))
            .collect();
            let at_of: HashMap<i64, DateTime<Utc>> = sent.iter().map(|s| (s.id, s.at)).collect();
            for (rid, class, outbox_id, at, provider, provider_id) in early {
                sqlx::query("UPDATE receipts SET outbox_id = $2, flag = 'matched late' WHERE id = $1")
                    .bind(rid)
                    .bind(outbox_id)
                    .execute(&mut *tx)
                    .await?;
                let class: DeliveryClass = class.parse().map_err(codec::corrupt)?;
                let sent_at = at_of[&outbox_id];
                if !raise_outcome(&mut tx, outbox_id, SendOutcome::of(class), sent_at).await? {
                    continue;
                }
                let (borrower, contact, channel) = &whose[&outbox_id];
                let channel: Channel = channel.parse().map_err(codec::corrupt)?;
                let at = at.max(sent_at);
                sqlx::query(
                    "INSERT INTO evidence (borrower_id, contact_id, at, source, kind) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(borrower)
                .bind(contact)
                .bind(at)
                .bind(provider_source(&provider))
                .bind(kinds.get(&(channel, class)).cloned().unwrap_or_default())
                .execute(&mut *tx)
                .await?;
                wake(&mut tx, *borrower, at).await?;
                late.push(LateMatch {
                    receipt: ReceiptMatch {
                        outbox_id,
                        borrower: BorrowerId(*borrower),
                        contact: ContactId(*contact),
                        channel,
                        changed: true,
                    },
                    class,
                    provider_id,
                    at,
                });
            }
        }
        tx.commit().await?;
        Ok(late)
    }

    async fn record_failed(
        &self,
        id: i64,
        at: DateTime<Utc>,
        class: DeliveryClass,
        code: &str,
        detail: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let borrower = transition(
            &mut tx,
            id,
            &[SendState::Sending, SendState::Leased, SendState::InDoubt],
            SendState::Failed,
            at,
            detail,
        )
        .await?;
        sqlx::query(
            "UPDATE outbox SET sent_at = $2, outcome = 'failed', outcome_class = $3, outcome_code = $4, \
             outcome_at = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(at)
        .bind(class.as_str())
        .bind(code)
        .execute(&mut *tx)
        .await?;
        wake(&mut tx, borrower, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_in_doubt(&self, id: i64, at: DateTime<Utc>, detail: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let borrower = transition(&mut tx, id, &[SendState::Sending], SendState::InDoubt, at, detail).await?;
        sqlx::query("UPDATE outbox SET sent_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        wake(&mut tx, borrower, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release(&self, id: i64, retry_at: DateTime<Utc>, detail: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let from = [SendState::Sending, SendState::Leased, SendState::InDoubt];
        transition(&mut tx, id, &from, SendState::Queued, retry_at, detail).await?;
        sqlx::query("UPDATE outbox SET not_before = $2 WHERE id = $1")
            .bind(id)
            .bind(retry_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn cancel(&self, id: i64, at: DateTime<Utc>, detail: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let from = [SendState::Leased, SendState::Queued];
        let borrower = transition(&mut tx, id, &from, SendState::Cancelled, at, detail).await?;
        wake(&mut tx, borrower, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn recover_in_doubt(&self, at: DateTime<Utc>) -> Result<u64> {
        // `held` selects the partial index `outbox_held` (migration 0019).
        let n = sqlx::query(
            "UPDATE outbox SET state = 'in_doubt', updated_at = $1, sent_at = COALESCE(sent_at, updated_at), \
             lease_owner = NULL, lease_until = NULL, \
             detail = 'the dispatcher ' || COALESCE(lease_owner, '') || ' stopped while handing it to the channel' \
             WHERE held AND state = 'sending' AND (lease_until IS NULL OR lease_until < $1)",
        )
        .bind(at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    async fn record_receipts(
        &self,
        receipts: Vec<ReceiptIn>,
        evidence_kind: &(dyn Fn(Channel, DeliveryClass) -> String + Sync),
    ) -> Result<Vec<Matched>> {
        let kinds = crate::engine::delivery_kinds(evidence_kind);
        let mut tx = self.pool.begin().await?;
        let out = receipts_in(&mut tx, receipts, &kinds).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn record_sighted(
        &self,
        items: Vec<(Sighting, Option<ReceiptIn>)>,
        now: DateTime<Utc>,
        evidence_kind: &(dyn Fn(Channel, DeliveryClass) -> String + Sync),
    ) -> Result<Vec<Sighted>> {
        let kinds = crate::engine::delivery_kinds(evidence_kind);
        let mut tx = self.pool.begin().await?;
        let (sightings, receipts): (Vec<Sighting>, Vec<Option<ReceiptIn>>) = items.into_iter().unzip();
        let fresh = super::server::take_sightings(&mut tx, &sightings, now).await?;
        let has_receipt: Vec<bool> = receipts.iter().map(Option::is_some).collect();
        let taken: Vec<ReceiptIn> = receipts
            .into_iter()
            .zip(&fresh)
            .filter_map(|(r, fresh)| r.filter(|_| *fresh))
            .collect();
        let mut matched = receipts_in(&mut tx, taken, &kinds).await?.into_iter();
        tx.commit().await?;
        Ok(fresh
            .into_iter()
            .zip(has_receipt)
            .map(|(fresh, has_receipt)| match (fresh, has_receipt) {
                (false, _) => Sighted::Replayed,
                (true, false) => Sighted::Taken(None),
                (true, true) => Sighted::Taken(matched.next()),
            })
            .collect())
    }

    async fn record_verification_sent(
        &self,
        v: &VerificationSent,
        evidence_kind: &(dyn Fn(DeliveryClass) -> String + Sync),
    ) -> Result<()> {
        let kinds = crate::engine::class_kinds(evidence_kind);
        let mut tx = self.pool.begin().await?;
        // The same matching locks as receipts take, so a receipt arriving now waits for this.
        lock_matching(
            &mut tx,
            v.provider_ids.iter().map(|id| (v.provider.as_str(), id.as_str())),
        )
        .await?;
        let message: i64 = sqlx::query_scalar(
            "INSERT INTO verification_messages (borrower_id, contact_id, channel, sent_at) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(v.borrower.0)
        .bind(v.contact.map(|c| c.0))
        .bind(v.channel.as_str())
        .bind(v.at)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO verification_provider_ids (provider, provider_id, message_id) \
             SELECT $1, u, $3 FROM UNNEST($2::text[]) AS u ON CONFLICT DO NOTHING",
        )
        .bind(&v.provider)
        .bind(&v.provider_ids)
        .bind(message)
        .execute(&mut *tx)
        .await?;
        // A receipt that came before this record was kept unmatched: match it now.
        let early: Vec<(i64, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, class, at FROM receipts WHERE outbox_id IS NULL AND flag = 'unmatched' \
             AND provider = $1 AND provider_id = ANY($2) ORDER BY id",
        )
        .bind(&v.provider)
        .bind(&v.provider_ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut outcome = SendOutcome::Pending;
        for (rid, class, at) in early {
            sqlx::query("UPDATE receipts SET flag = 'verification, matched late' WHERE id = $1")
                .bind(rid)
                .execute(&mut *tx)
                .await?;
            let class: DeliveryClass = class.parse().map_err(codec::corrupt)?;
            let new = SendOutcome::of(class);
            if new.rank() > outcome.rank() {
                outcome = new;
                if let Some(contact) = v.contact {
                    sqlx::query(
                        "INSERT INTO evidence (borrower_id, contact_id, at, source, kind) VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(v.borrower.0)
                    .bind(contact.0)
                    .bind(at)
                    .bind(provider_source(&v.provider))
                    .bind(kinds.get(&class).cloned().unwrap_or_default())
                    .execute(&mut *tx)
                    .await?;
                    wake(&mut tx, v.borrower.0, at).await?;
                }
            }
        }
        if outcome != SendOutcome::Pending {
            sqlx::query("UPDATE verification_messages SET outcome = $2, outcome_class = $3 WHERE id = $1")
                .bind(message)
                .bind(outcome.name())
                .bind(outcome.class_column())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_evidence(
        &self,
        borrower: BorrowerId,
        contact: Option<ContactId>,
        at: DateTime<Utc>,
        source: &str,
        kind: &str,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO evidence (borrower_id, contact_id, at, source, kind) VALUES ($1, $2, $3, $4, $5)")
            .bind(borrower.0)
            .bind(contact.map(|c| c.0))
            .bind(at)
            .bind(source)
            .bind(kind)
            .execute(&mut *tx)
            .await?;
        wake(&mut tx, borrower.0, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn send_targets(&self, pairs: Vec<(BorrowerId, ContactId)>) -> Result<Vec<Result<SendTarget>>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.pool.acquire().await?;
        let contact_ids: Vec<i64> = pairs.iter().map(|(_, ct)| ct.0).collect();
        let mut borrower_ids: Vec<i64> = pairs.iter().map(|(b, _)| b.0).collect();
        borrower_ids.sort_unstable();
        borrower_ids.dedup();
        let contacts: HashMap<i64, StoredContact> = sqlx::query(&format!(
            "SELECT {} FROM contact_points WHERE id = ANY($1)",
            super::CONTACT_COLS
        ))
        .bind(&contact_ids)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| contact_row(r).map(|s| (s.id.0, s)))
        .collect::<std::result::Result<_, _>>()?;
        let borrowers: HashMap<i64, codec::BorrowerRow> = sqlx::query(
            "SELECT id, external_id, name_enc, national_id_scheme, national_id_enc, national_id_bidx, locale, \
             time_zone, jurisdiction FROM borrowers WHERE id = ANY($1)",
        )
        .bind(&borrower_ids)
        .fetch_all(&mut *c)
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>("id")?, borrower_row(r)?)))
        .collect::<std::result::Result<_, sqlx::Error>>()?;
        // Every borrower's data key in one query; a shredded one (NULL) fails only its sends.
        // `None`: the borrower's data was erased (the key shredded).
        let mut sealers: HashMap<BorrowerId, Option<Sealer>> = HashMap::new();
        let wrapped: Vec<(i64, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT borrower_id, wrapped_key FROM borrower_keys WHERE borrower_id = ANY($1)")
                .bind(&borrower_ids)
                .fetch_all(&mut *c)
                .await?;
        for (b, w) in wrapped {
            // A key that does not unwrap means the wrong master key: nothing can be sent.
            let sealer = w.map(|w| self.keys.unwrap_key(&w).map(|k| k.sealer())).transpose()?;
            sealers.insert(BorrowerId(b), sealer);
        }
        let mut out = Vec::with_capacity(pairs.len());
        for (borrower, contact) in pairs {
            let target = (|| {
                let rec = contacts.get(&contact.0).ok_or_else(|| StoreError::NotFound {
                    what: "contact point",
                    id: contact.to_string(),
                })?;
                if rec.borrower_id != borrower {
                    return Err(StoreError::Conflict(format!(
                        "contact point {contact} is not borrower {borrower}'s"
                    )));
                }
                let sealer = sealers[&borrower].as_ref().ok_or(crate::CryptoError::Shredded)?;
                let b = borrowers.get(&borrower.0).ok_or_else(|| StoreError::NotFound {
                    what: "borrower",
                    id: borrower.to_string(),
                })?;
                Ok(SendTarget {
                    address: rec.row.open(sealer)?.address,
                    borrower_name: b.open(sealer)?.name,
                })
            })();
            out.push(target);
        }
        Ok(out)
    }

    async fn attempts(&self, f: &crate::engine::AttemptFilter) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM outbox o WHERE ($1::BIGINT IS NULL OR o.borrower_id = $1) \
             AND ($2::TEXT IS NULL OR o.state = $2) AND ($3::TEXT IS NULL OR o.channel = $3) \
             AND ($4::TEXT IS NULL OR o.kind = $4) AND o.id > $5 ORDER BY o.id LIMIT $6"
        ))
        .bind(f.borrower.map(|b| b.0))
        .bind(&f.state)
        .bind(&f.channel)
        .bind(&f.kind)
        .bind(f.after.unwrap_or(0))
        .bind(i64::from(f.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    async fn receipts_of(&self, outbox_ids: &[i64]) -> Result<Vec<crate::engine::ReceiptRow>> {
        let rows = sqlx::query_as::<_, (i64, DateTime<Utc>, String, String, String, String, bool, Option<String>)>(
            "SELECT outbox_id, at, provider, provider_id, class, code, is_final, flag FROM receipts \
             WHERE outbox_id = ANY($1) ORDER BY id",
        )
        .bind(outbox_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(outbox_id, at, provider, provider_id, class, code, is_final, flag)| crate::engine::ReceiptRow {
                    outbox_id,
                    at,
                    provider,
                    provider_id,
                    class,
                    code,
                    is_final,
                    flag,
                },
            )
            .collect())
    }

    async fn queue_depth(&self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(crate::engine::QUEUE_SQL).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|(k, n)| (k, n as u64)).collect())
    }

    async fn dashboard(&self, today: NaiveDate) -> Result<crate::engine::Dashboard> {
        use crate::engine::{ExposureRow, ReachDay, BUCKET_CASE, FOUND_CASE};
        let unreachable = crate::engine::unreachable_borrowers("NULLIF(split_part(n.notice, '/', 1), '-')::BIGINT");
        let mut tx = self.pool.begin().await?;
        let reach = sqlx::query_as::<_, (NaiveDate, String, i64, i64)>(
            "SELECT (sent_at AT TIME ZONE 'UTC')::date, channel, COUNT(*), \
             COUNT(*) FILTER (WHERE outcome IN ('delivered', 'engaged')) FROM outbox WHERE sent_at IS NOT NULL \
             GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(day, channel, a, r)| ReachDay {
            day,
            channel,
            attempted: a as u64,
            reached: r as u64,
        })
        .collect();
        let pairs = |rows: Vec<(String, i64)>| rows.into_iter().map(|(k, n)| (k, n as u64)).collect::<Vec<_>>();
        let outcomes = pairs(
            sqlx::query_as(
                "SELECT CASE WHEN outcome = 'failed' THEN COALESCE(outcome_class, 'unknown') ELSE outcome END, COUNT(*) \
                 FROM outbox WHERE state IN ('sent', 'failed', 'in_doubt') GROUP BY 1 ORDER BY 2 DESC",
            )
            .fetch_all(&mut *tx)
            .await?,
        );
        let queue = pairs(sqlx::query_as(crate::engine::QUEUE_SQL).fetch_all(&mut *tx).await?);
        let weekly = |rows: Vec<(NaiveDate, String, i64)>| {
            rows.into_iter().map(|(w, k, n)| (w, k, n as u64)).collect::<Vec<_>>()
        };
        let week = "date_trunc('week', at AT TIME ZONE 'UTC')::date";
        let found = weekly(
            sqlx::query_as(&format!(
                "SELECT week, what, COUNT(DISTINCT contact_id) FROM \
                 (SELECT {week} AS week, {FOUND_CASE} AS what, contact_id FROM evidence WHERE contact_id IS NOT NULL) e \
                 WHERE what IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
            ))
            .fetch_all(&mut *tx)
            .await?,
        );
        let retired = weekly(
            sqlx::query_as(&format!(
                "SELECT {week}, COALESCE(detail, ''), COUNT(*) FROM contact_events WHERE event = 'retired' \
                 GROUP BY 1, 2 ORDER BY 1, 2"
            ))
            .fetch_all(&mut *tx)
            .await?,
        );
        let exposure = sqlx::query_as::<_, (String, String, String, i64, i64)>(&format!(
            "WITH open AS (SELECT l.borrower_id, l.product, i.currency, \
               SUM(i.amount_due_minor - i.amount_paid_minor) AS outstanding, \
               MAX($1::date - i.due_date) AS dpd \
             FROM installments i JOIN loans l ON l.id = i.loan_id \
             WHERE i.amount_paid_minor < i.amount_due_minor AND l.borrower_id IN ({unreachable}) \
             GROUP BY l.id, l.borrower_id, l.product, i.currency) \
             SELECT product, {BUCKET_CASE}, currency, COUNT(DISTINCT borrower_id), SUM(outstanding)::BIGINT \
             FROM open GROUP BY 1, 2, 3 ORDER BY 1, 2"
        ))
        .bind(today)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(product, bucket, currency, b, o)| ExposureRow {
            product,
            bucket,
            currency,
            borrowers: b as u64,
            outstanding_minor: o,
        })
        .collect();
        let detect_seconds: Vec<i64> = sqlx::query_scalar(&crate::engine::detect_sql(
            "EXTRACT(EPOCH FROM ({found} - {ok}))::BIGINT",
        ))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(crate::engine::Dashboard {
            reach,
            outcomes,
            found,
            retired,
            exposure,
            queue,
            detect_seconds,
        })
    }

    async fn wake_now(&self, borrower: BorrowerId, at: DateTime<Utc>) -> Result<()> {
        let mut c = self.pool.acquire().await?;
        wake_all(&mut c, &[(borrower.0, at)]).await
    }

    async fn contact_owner(&self, contact: ContactId) -> Result<Option<BorrowerId>> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT borrower_id FROM contact_points WHERE id = $1")
                .bind(contact.0)
                .fetch_optional(&self.pool)
                .await?
                .map(BorrowerId),
        )
    }

    async fn loan_key(
        &self,
        loan: &ExternalId,
    ) -> Result<Option<(reachline_domain::LoanId, BorrowerId, reachline_domain::Currency)>> {
        let row: Option<(i64, i64, String)> =
            sqlx::query_as("SELECT id, borrower_id, currency FROM loans WHERE external_id = $1")
                .bind(loan.as_str())
                .fetch_optional(&self.pool)
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
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT i.id FROM installments i JOIN loans l ON l.id = i.loan_id WHERE l.external_id = $1 AND i.seq = $2",
        )
        .bind(loan.as_str())
        .bind(seq as i32)
        .fetch_optional(&self.pool)
        .await?
        .map(InstallmentId))
    }

    async fn record_payment(
        &self,
        installment: InstallmentId,
        amount_minor: i64,
        at: DateTime<Utc>,
    ) -> Result<BorrowerId> {
        let mut tx = self.pool.begin().await?;
        let borrower: Option<i64> = sqlx::query_scalar(
            "UPDATE installments i SET amount_paid_minor = LEAST(i.amount_due_minor, i.amount_paid_minor + $2), \
             paid_at = CASE WHEN i.amount_paid_minor + $2 >= i.amount_due_minor THEN $3 ELSE i.paid_at END, \
             updated_at = $3 FROM loans l WHERE i.id = $1 AND l.id = i.loan_id RETURNING l.borrower_id",
        )
        .bind(installment.0)
        .bind(amount_minor)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(borrower) = borrower else {
            return Err(StoreError::NotFound {
                what: "installment",
                id: installment.to_string(),
            });
        };
        sqlx::query("INSERT INTO evidence (borrower_id, contact_id, at, source, kind) VALUES ($1, NULL, $2, $3, $4)")
            .bind(borrower)
            .bind(at)
            .bind(PAYMENT_SOURCE)
            .bind(PAYMENT_EVIDENCE)
            .execute(&mut *tx)
            .await?;
        wake(&mut tx, borrower, at).await?;
        tx.commit().await?;
        Ok(BorrowerId(borrower))
    }

    async fn outbox_counts(&self) -> Result<Vec<CountRow>> {
        count_rows(
            &self.pool,
            "SELECT kind, channel, state, outcome, outcome_class, COUNT(*) FROM outbox \
             GROUP BY kind, channel, state, outcome, outcome_class ORDER BY 1, 2, 3, 4, 5",
            5,
        )
        .await
    }

    async fn decision_counts(&self) -> Result<Vec<CountRow>> {
        count_rows(
            &self.pool,
            "SELECT action, reason, gate, COUNT(*) FROM decisions GROUP BY action, reason, gate ORDER BY 4 DESC",
            3,
        )
        .await
    }

    async fn decisions_of(&self, borrower: BorrowerId) -> Result<Vec<(DateTime<Utc>, DecisionRow)>> {
        let rows = sqlx::query(
            "SELECT at, notice, action, reason, gate, until_at, detail FROM decisions WHERE borrower_id = $1 ORDER BY id",
        )
        .bind(borrower.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("at")?,
                    DecisionRow {
                        borrower,
                        notice: r.try_get("notice")?,
                        action: r.try_get("action")?,
                        reason: r.try_get("reason")?,
                        gate: r.try_get("gate")?,
                        until: r.try_get("until_at")?,
                        detail: r.try_get("detail")?,
                    },
                ))
            })
            .collect()
    }

    async fn sends_of(&self, borrower: BorrowerId) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLS} FROM outbox o WHERE o.borrower_id = $1 ORDER BY o.id"
        ))
        .bind(borrower.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }
}

/// Records receipts of any classes on `c` (inside the caller's transaction): the body of
/// `record_receipts` and `record_sighted`.
async fn receipts_in(
    c: &mut PgConnection,
    receipts: Vec<ReceiptIn>,
    kinds: &HashMap<(Channel, DeliveryClass), String>,
) -> Result<Vec<Matched>> {
    lock_matching(
        &mut *c,
        receipts
            .iter()
            .filter(|r| r.outbox_id.is_none())
            .map(|r| (r.provider.as_str(), r.provider_id.as_str())),
    )
    .await?;
    // Which sends these receipts answer, then those rows locked in order.
    let mut receipts = receipts;
    let unresolved: Vec<usize> = (0..receipts.len())
        .filter(|&i| receipts[i].outbox_id.is_none())
        .collect();
    if !unresolved.is_empty() {
        let found: HashMap<(String, String), i64> = sqlx::query_as::<_, (String, String, i64)>(
            "SELECT p.provider, p.provider_id, p.outbox_id FROM outbox_provider_ids p \
             JOIN UNNEST($1::text[], $2::text[]) AS u(provider, provider_id) \
             ON p.provider = u.provider AND p.provider_id = u.provider_id",
        )
        .bind(
            unresolved
                .iter()
                .map(|&i| receipts[i].provider.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            unresolved
                .iter()
                .map(|&i| receipts[i].provider_id.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *c)
        .await?
        .into_iter()
        .map(|(p, id, o)| ((p, id), o))
        .collect();
        for i in unresolved {
            let key = (receipts[i].provider.clone(), receipts[i].provider_id.clone());
            receipts[i].outbox_id = found.get(&key).copied();
        }
    }
    // Receipts no attempt answers may answer a verification message (locked by id, in
    // order, like the attempts).
    struct Verification {
        borrower: i64,
        contact: Option<i64>,
        channel: Channel,
        outcome: SendOutcome,
        raised: bool,
    }
    let mut verification_of: HashMap<(String, String), i64> = HashMap::new();
    let mut verifications: HashMap<i64, Verification> = HashMap::new();
    let stray: Vec<&ReceiptIn> = receipts.iter().filter(|r| r.outbox_id.is_none()).collect();
    if !stray.is_empty() {
        verification_of = sqlx::query_as::<_, (String, String, i64)>(
            "SELECT p.provider, p.provider_id, p.message_id FROM verification_provider_ids p \
             JOIN UNNEST($1::text[], $2::text[]) AS u(provider, provider_id) \
             ON p.provider = u.provider AND p.provider_id = u.provider_id",
        )
        .bind(stray.iter().map(|r| r.provider.as_str()).collect::<Vec<_>>())
        .bind(stray.iter().map(|r| r.provider_id.as_str()).collect::<Vec<_>>())
        .fetch_all(&mut *c)
        .await?
        .into_iter()
        .map(|(p, id, m)| ((p, id), m))
        .collect();
        let mut messages: Vec<i64> = verification_of.values().copied().collect();
        messages.sort_unstable();
        messages.dedup();
        for r in sqlx::query(
            "SELECT id, borrower_id, contact_id, channel, outcome, outcome_class FROM verification_messages \
             WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(&messages)
        .fetch_all(&mut *c)
        .await?
        {
            let outcome: String = r.try_get("outcome")?;
            let class: Option<String> = r.try_get("outcome_class")?;
            verifications.insert(
                r.try_get("id")?,
                Verification {
                    borrower: r.try_get("borrower_id")?,
                    contact: r.try_get("contact_id")?,
                    channel: r.try_get::<String, _>("channel")?.parse().map_err(codec::corrupt)?,
                    outcome: SendOutcome::from_columns(&outcome, class.as_deref())?,
                    raised: false,
                },
            );
        }
    }
    let mut ids: Vec<i64> = receipts.iter().filter_map(|r| r.outbox_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // The sends answered, locked in id order, with what is known of each.
    struct Sent {
        borrower: i64,
        contact: i64,
        channel: Channel,
        outcome: SendOutcome,
        raised_at: Option<DateTime<Utc>>,
    }
    let mut sends: HashMap<i64, Sent> = HashMap::new();
    for r in sqlx::query(
        "SELECT id, borrower_id, contact_id, channel, outcome, outcome_class FROM outbox \
         WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *c)
    .await?
    {
        let outcome: String = r.try_get("outcome")?;
        let class: Option<String> = r.try_get("outcome_class")?;
        sends.insert(
            r.try_get("id")?,
            Sent {
                borrower: r.try_get("borrower_id")?,
                contact: r.try_get("contact_id")?,
                channel: r.try_get::<String, _>("channel")?.parse().map_err(codec::corrupt)?,
                outcome: SendOutcome::from_columns(&outcome, class.as_deref())?,
                raised_at: None,
            },
        );
    }
    // Applied in order in memory (a second receipt for one send sees the first), then
    // written in one statement per table.
    let mut out = Vec::with_capacity(receipts.len());
    let mut kept: Vec<(ReceiptIn, Option<i64>, Option<&str>)> = Vec::with_capacity(receipts.len());
    let mut evidence: Vec<(i64, i64, DateTime<Utc>, String, String)> = Vec::new();
    let mut wakes: Vec<(i64, DateTime<Utc>)> = Vec::new();
    for r in receipts {
        let Some((id, sent)) = r.outbox_id.and_then(|id| sends.get_mut(&id).map(|s| (id, s))) else {
            let message = r
                .outbox_id
                .is_none()
                .then(|| verification_of.get(&(r.provider.clone(), r.provider_id.clone())))
                .flatten();
            if let Some(v) = message.and_then(|m| verifications.get_mut(m)) {
                let new = SendOutcome::of(r.class);
                let changed = new.rank() > v.outcome.rank();
                if changed {
                    v.outcome = new;
                    v.raised = true;
                    if let Some(contact) = v.contact {
                        evidence.push((
                            v.borrower,
                            contact,
                            r.at,
                            provider_source(&r.provider),
                            kinds.get(&(v.channel, r.class)).cloned().unwrap_or_default(),
                        ));
                        wakes.push((v.borrower, r.at));
                    }
                }
                out.push(Matched::Verification {
                    borrower: BorrowerId(v.borrower),
                    contact: v.contact.map(ContactId),
                    changed,
                });
                kept.push((r, None, Some("verification")));
                continue;
            }
            let flag = if r.outbox_id.is_some() {
                "names an unknown send"
            } else {
                "unmatched"
            };
            kept.push((r, None, Some(flag)));
            out.push(Matched::Unmatched);
            continue;
        };
        let new = SendOutcome::of(r.class);
        let changed = new.rank() > sent.outcome.rank();
        if changed {
            sent.outcome = new;
            sent.raised_at = Some(r.at);
            // One piece of evidence per change of an attempt's outcome: the parts of one
            // message, or a repeated receipt, are not separate observations.
            evidence.push((
                sent.borrower,
                sent.contact,
                r.at,
                provider_source(&r.provider),
                kinds.get(&(sent.channel, r.class)).cloned().unwrap_or_default(),
            ));
            wakes.push((sent.borrower, r.at));
        }
        out.push(Matched::Send(ReceiptMatch {
            outbox_id: id,
            borrower: BorrowerId(sent.borrower),
            contact: ContactId(sent.contact),
            channel: sent.channel,
            changed,
        }));
        kept.push((r, Some(id), None));
    }
    sqlx::query(
        "INSERT INTO receipts (at, provider, provider_id, outbox_id, class, code, is_final, raw, flag) \
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], \
         $7::bool[], $8::bytea[], $9::text[])",
    )
    .bind(kept.iter().map(|k| k.0.at).collect::<Vec<_>>())
    .bind(kept.iter().map(|k| k.0.provider.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|k| k.0.provider_id.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(kept.iter().map(|k| k.0.class.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|k| k.0.code.as_str()).collect::<Vec<_>>())
    .bind(kept.iter().map(|k| k.0.is_final).collect::<Vec<_>>())
    .bind(kept.iter().map(|k| k.0.raw.as_slice()).collect::<Vec<_>>())
    .bind(kept.iter().map(|k| k.2).collect::<Vec<_>>())
    .execute(&mut *c)
    .await?;
    let raised: Vec<(i64, &Sent)> = sends
        .iter()
        .filter(|(_, s)| s.raised_at.is_some())
        .map(|(i, s)| (*i, s))
        .collect();
    if !raised.is_empty() {
        sqlx::query(
            "UPDATE outbox o SET outcome = u.outcome, outcome_class = u.class, outcome_at = u.at \
             FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::timestamptz[]) AS u(id, outcome, class, at) \
             WHERE o.id = u.id",
        )
        .bind(raised.iter().map(|(i, _)| *i).collect::<Vec<_>>())
        .bind(raised.iter().map(|(_, s)| s.outcome.name()).collect::<Vec<_>>())
        .bind(raised.iter().map(|(_, s)| s.outcome.class_column()).collect::<Vec<_>>())
        .bind(raised.iter().map(|(_, s)| s.raised_at).collect::<Vec<_>>())
        .execute(&mut *c)
        .await?;
    }
    let raised: Vec<(i64, &Verification)> = verifications
        .iter()
        .filter(|(_, v)| v.raised)
        .map(|(i, v)| (*i, v))
        .collect();
    if !raised.is_empty() {
        sqlx::query(
            "UPDATE verification_messages m SET outcome = u.outcome, outcome_class = u.class \
             FROM UNNEST($1::int8[], $2::text[], $3::text[]) AS u(id, outcome, class) WHERE m.id = u.id",
        )
        .bind(raised.iter().map(|(i, _)| *i).collect::<Vec<_>>())
        .bind(raised.iter().map(|(_, v)| v.outcome.name()).collect::<Vec<_>>())
        .bind(raised.iter().map(|(_, v)| v.outcome.class_column()).collect::<Vec<_>>())
        .execute(&mut *c)
        .await?;
    }
    if !evidence.is_empty() {
        sqlx::query(
            "INSERT INTO evidence (borrower_id, contact_id, at, source, kind) \
             SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::timestamptz[], $4::text[], $5::text[])",
        )
        .bind(evidence.iter().map(|e| e.0).collect::<Vec<_>>())
        .bind(evidence.iter().map(|e| e.1).collect::<Vec<_>>())
        .bind(evidence.iter().map(|e| e.2).collect::<Vec<_>>())
        .bind(evidence.iter().map(|e| e.3.as_str()).collect::<Vec<_>>())
        .bind(evidence.iter().map(|e| e.4.as_str()).collect::<Vec<_>>())
        .execute(&mut *c)
        .await?;
    }
    wake_all(c, &wakes).await?;
    Ok(out)
}
