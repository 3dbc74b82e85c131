//! [`SelfServiceStore`] on PostgreSQL.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reachline_domain::{BorrowerId, ContactId, ContactPoint, LoanId, Preferences};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};

use super::{data_key_for, insert_contacts, mark, PgStore};
use crate::codec::{self, ContactRow};
use crate::crypto::{Keyring, Sealer};
use crate::selfservice::{
    BorrowerSession, ChangeRecord, CheckRecord, Filter, NewChange, PlanRequest, SelfServiceStore, StepRecord,
};
use crate::{ContactEventKind, Result, StoreError};

pub(crate) const NEW_ADDRESS: &str = "contact_changes.new_address";
const PLAN_REASON: &str = "plan_requests.reason";

/// The advisory-lock namespace of opening contact checks (the first key of the two-key form;
/// the second is the borrower's id folded to 32 bits).
const CHECK_LOCK_SPACE: i32 = 0x4348_4543; // "CHEC"

fn check_lock_key(borrower: BorrowerId) -> i32 {
    // Two borrowers folding to one key only wait for each other.
    (borrower.0 ^ (borrower.0 >> 32)) as i32
}

const CHANGE_COLS: &str = "SELECT id, borrower_id, old_contact_id, new_address_enc, source, state, flow, version, \
     created_at, updated_at, new_contact_id, decided_by, decision_reason FROM contact_changes";

const CHECK_COLS: &str = "SELECT id, borrower_id, contact_id, state, reason, opened_at, updated_at FROM contact_checks";

const PLAN_COLS: &str =
    "SELECT id, borrower_id, loan_id, kind, reason_enc, state, created_at, decided_at, decided_by, \
     decision_reason FROM plan_requests";

/// The borrower's sealer, unwrapped once per read however many rows are theirs.
async fn sealer_of(
    c: &mut PgConnection,
    keys: &Keyring,
    cache: &mut HashMap<BorrowerId, Sealer>,
    borrower: BorrowerId,
) -> Result<Sealer> {
    if let Some(s) = cache.get(&borrower) {
        return Ok(s.clone());
    }
    let s = data_key_for(c, keys, borrower).await?.sealer();
    cache.insert(borrower, s.clone());
    Ok(s)
}

fn change_row(r: &PgRow, sealer: &Sealer) -> Result<ChangeRecord> {
    let sealed: Vec<u8> = r.try_get("new_address_enc")?;
    Ok(ChangeRecord {
        id: r.try_get("id")?,
        borrower: BorrowerId(r.try_get("borrower_id")?),
        old_contact: r.try_get::<Option<i64>, _>("old_contact_id")?.map(ContactId),
        new_address: sealer.open(NEW_ADDRESS, &sealed)?,
        source: r.try_get("source")?,
        state: r.try_get("state")?,
        flow: r.try_get("flow")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        new_contact: r.try_get::<Option<i64>, _>("new_contact_id")?.map(ContactId),
        decided_by: r.try_get("decided_by")?,
        decision_reason: r.try_get("decision_reason")?,
    })
}

fn check_row(r: &PgRow) -> Result<CheckRecord> {
    Ok(CheckRecord {
        id: r.try_get("id")?,
        borrower: BorrowerId(r.try_get("borrower_id")?),
        contact: r.try_get::<Option<i64>, _>("contact_id")?.map(ContactId),
        state: r.try_get("state")?,
        reason: r.try_get("reason")?,
        opened_at: r.try_get("opened_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn plan_row(r: &PgRow, sealer: &Sealer) -> Result<PlanRequest> {
    let sealed: Vec<u8> = r.try_get("reason_enc")?;
    Ok(PlanRequest {
        id: r.try_get("id")?,
        borrower: BorrowerId(r.try_get("borrower_id")?),
        loan: LoanId(r.try_get("loan_id")?),
        kind: r.try_get("kind")?,
        reason: sealer.open(PLAN_REASON, &sealed)?,
        state: r.try_get("state")?,
        created_at: r.try_get("created_at")?,
        decided_at: r.try_get("decided_at")?,
        decided_by: r.try_get("decided_by")?,
        decision_reason: r.try_get("decision_reason")?,
    })
}

/// `WHERE` over the optional state and borrower, newest first; [`bind_filter`] binds them in
/// the same order. Only the conditions asked for are in the statement, so each list gets a plan
/// on its own index.
fn filtered(base: &str, f: &Filter) -> String {
    let mut sql = format!("{base} WHERE TRUE");
    let mut n = 0;
    if f.state.is_some() {
        n += 1;
        sql.push_str(&format!(" AND state = ${n}"));
    }
    if f.borrower.is_some() {
        n += 1;
        sql.push_str(&format!(" AND borrower_id = ${n}"));
    }
    let limit = if f.limit == 0 { 100 } else { f.limit };
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
    sql
}

fn bind_filter<'q>(mut q: Query<'q, Postgres, PgArguments>, f: &'q Filter) -> Query<'q, Postgres, PgArguments> {
    if let Some(s) = &f.state {
        q = q.bind(s.as_str());
    }
    if let Some(b) = f.borrower {
        q = q.bind(b.0);
    }
    q
}

/// Sets a change's state and flow and bumps its version, if it is still at `version`.
#[allow(clippy::too_many_arguments)]
async fn set_change(
    c: &mut PgConnection,
    id: i64,
    version: i64,
    state: &str,
    flow: &str,
    decided: Option<(&str, &str)>,
    new_contact: Option<ContactId>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE contact_changes SET state = $1, flow = $2, version = version + 1, updated_at = $3, \
         decided_by = COALESCE($4, decided_by), decision_reason = COALESCE($5, decision_reason), \
         new_contact_id = COALESCE($6, new_contact_id) WHERE id = $7 AND version = $8",
    )
    .bind(state)
    .bind(flow)
    .bind(now)
    .bind(decided.map(|d| d.0))
    .bind(decided.map(|d| d.1))
    .bind(new_contact.map(|c| c.0))
    .bind(id)
    .bind(version)
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(n == 1)
}

#[async_trait]
impl SelfServiceStore for PgStore {
    async fn create_change(&self, ch: &NewChange<'_>, now: DateTime<Utc>) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        let sealed = data_key_for(&mut conn, &self.keys, ch.borrower)
            .await?
            .sealer()
            .seal(NEW_ADDRESS, &ch.new_address.canonical());
        let bidx = codec::address_bidx(&self.keys, ch.new_address).to_vec();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO contact_changes (borrower_id, old_contact_id, new_address_enc, new_address_bidx, source, \
             state, flow, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8) RETURNING id",
        )
        .bind(ch.borrower.0)
        .bind(ch.old_contact.map(|o| o.0))
        .bind(sealed)
        .bind(bidx)
        .bind(ch.source)
        .bind(ch.state)
        .bind(ch.flow)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        Ok(id)
    }

    async fn change(&self, id: i64) -> Result<Option<ChangeRecord>> {
        let mut conn = self.pool.acquire().await?;
        let Some(r) = sqlx::query(&format!("{CHANGE_COLS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
        else {
            return Ok(None);
        };
        let borrower = BorrowerId(r.try_get("borrower_id")?);
        let sealer = data_key_for(&mut conn, &self.keys, borrower).await?.sealer();
        Ok(Some(change_row(&r, &sealer)?))
    }

    async fn changes(&self, f: &Filter) -> Result<Vec<ChangeRecord>> {
        let sql = filtered(CHANGE_COLS, f);
        let mut conn = self.pool.acquire().await?;
        let rows = bind_filter(sqlx::query(&sql), f).fetch_all(&mut *conn).await?;
        let mut sealers = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let borrower = BorrowerId(r.try_get("borrower_id")?);
            let sealer = sealer_of(&mut conn, &self.keys, &mut sealers, borrower).await?;
            out.push(change_row(r, &sealer)?);
        }
        Ok(out)
    }

    async fn update_change(
        &self,
        id: i64,
        version: i64,
        state: &str,
        flow: &str,
        decided: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        set_change(&mut conn, id, version, state, flow, decided, None, now).await
    }

    async fn apply_change(
        &self,
        id: i64,
        version: i64,
        point: &ContactPoint,
        flow: &str,
        actor: &str,
        decided: Option<(&str, &str)>,
        now: DateTime<Utc>,
    ) -> Result<Option<ContactId>> {
        point.validate().map_err(|e| StoreError::Conflict(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        // Held to the end: a second apply of the same version waits here, then finds the
        // version moved on.
        let borrower: Option<i64> =
            sqlx::query_scalar("SELECT borrower_id FROM contact_changes WHERE id = $1 AND version = $2 FOR UPDATE")
                .bind(id)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(borrower) = borrower.map(BorrowerId) else {
            return Ok(None);
        };
        let sealer = data_key_for(&mut tx, &self.keys, borrower).await?.sealer();
        let row = ContactRow::seal(point, &sealer, &self.keys);
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM contact_points WHERE borrower_id = $1 AND slot = $2 AND retired_at IS NULL FOR UPDATE",
        )
        .bind(borrower.0)
        .bind(&row.slot)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(cur) = current {
            mark(
                &mut tx,
                ContactId(cur),
                ContactEventKind::Retired,
                now,
                actor,
                "replaced",
            )
            .await?;
        }
        let ids = insert_contacts(&mut tx, &[borrower.0], std::slice::from_ref(&row), now, actor).await?;
        let new = ContactId(ids[0]);
        if !set_change(&mut tx, id, version, "applied", flow, decided, Some(new), now).await? {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(new))
    }

    async fn add_step(&self, s: &StepRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO contact_change_steps (borrower_id, change_id, check_id, at, step, actor, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(s.borrower.0)
        .bind(s.change)
        .bind(s.check)
        .bind(s.at)
        .bind(&s.step)
        .bind(&s.actor)
        .bind(&s.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn steps(&self, borrower: BorrowerId, change: Option<i64>, check: Option<i64>) -> Result<Vec<StepRecord>> {
        sqlx::query(
            "SELECT change_id, check_id, at, step, actor, detail FROM contact_change_steps \
             WHERE borrower_id = $1 AND ($2::BIGINT IS NULL OR change_id = $2) \
             AND ($3::BIGINT IS NULL OR check_id = $3) ORDER BY id",
        )
        .bind(borrower.0)
        .bind(change)
        .bind(check)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(StepRecord {
                borrower,
                change: r.try_get("change_id")?,
                check: r.try_get("check_id")?,
                at: r.try_get("at")?,
                step: r.try_get("step")?,
                actor: r.try_get("actor")?,
                detail: r.try_get("detail")?,
            })
        })
        .collect()
    }

    async fn open_check(
        &self,
        borrower: BorrowerId,
        contact: Option<ContactId>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(CheckRecord, bool)> {
        let mut tx = self.pool.begin().await?;
        // Two callers for one borrower take turns here, so the second sees the first's check
        // rather than opening another.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(CHECK_LOCK_SPACE)
            .bind(check_lock_key(borrower))
            .execute(&mut *tx)
            .await?;
        let existing = sqlx::query(&format!(
            "{CHECK_COLS} WHERE borrower_id = $1 AND state IN ('open', 'operator_task') ORDER BY id DESC LIMIT 1"
        ))
        .bind(borrower.0)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = existing {
            return Ok((check_row(&r)?, false));
        }
        let r = sqlx::query(
            "INSERT INTO contact_checks (borrower_id, contact_id, state, reason, opened_at, updated_at) \
             VALUES ($1, $2, 'open', $3, $4, $4) \
             RETURNING id, borrower_id, contact_id, state, reason, opened_at, updated_at",
        )
        .bind(borrower.0)
        .bind(contact.map(|c| c.0))
        .bind(reason)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let check = check_row(&r)?;
        tx.commit().await?;
        Ok((check, true))
    }

    async fn set_check_state(&self, id: i64, state: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE contact_checks SET state = $1, updated_at = $2 WHERE id = $3")
            .bind(state)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn checks(&self, f: &Filter) -> Result<Vec<CheckRecord>> {
        let sql = filtered(CHECK_COLS, f);
        bind_filter(sqlx::query(&sql), f)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(check_row)
            .collect()
    }

    async fn use_nonce(&self, nonce: i64, now: DateTime<Utc>) -> Result<bool> {
        let n = sqlx::query("INSERT INTO link_nonces (nonce, used_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING")
            .bind(nonce)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn create_borrower_session(&self, digest: [u8; 32], s: &BorrowerSession, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("DELETE FROM borrower_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO borrower_sessions (digest, borrower_id, factors, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&digest[..])
        .bind(s.borrower.0)
        .bind(&s.factors)
        .bind(&s.csrf)
        .bind(now)
        .bind(s.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn borrower_session(&self, digest: [u8; 32], now: DateTime<Utc>) -> Result<Option<BorrowerSession>> {
        sqlx::query(
            "SELECT borrower_id, factors, csrf, expires_at FROM borrower_sessions \
             WHERE digest = $1 AND expires_at > $2",
        )
        .bind(&digest[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| {
            Ok(BorrowerSession {
                borrower: BorrowerId(r.try_get("borrower_id")?),
                factors: r.try_get("factors")?,
                csrf: r.try_get("csrf")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn set_session_factors(&self, digest: [u8; 32], factors: &str) -> Result<()> {
        sqlx::query("UPDATE borrower_sessions SET factors = $1 WHERE digest = $2")
            .bind(factors)
            .bind(&digest[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn end_borrower_session(&self, digest: [u8; 32]) -> Result<()> {
        sqlx::query("DELETE FROM borrower_sessions WHERE digest = $1")
            .bind(&digest[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn code_failures(&self, borrower: BorrowerId) -> Result<u32> {
        let n: Option<i32> = sqlx::query_scalar("SELECT failures FROM code_failures WHERE borrower_id = $1")
            .bind(borrower.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(n.unwrap_or(0).max(0) as u32)
    }

    async fn set_code_failures(&self, borrower: BorrowerId, n: u32, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO code_failures (borrower_id, failures, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (borrower_id) DO UPDATE SET failures = excluded.failures, updated_at = excluded.updated_at",
        )
        .bind(borrower.0)
        .bind(i32::try_from(n).unwrap_or(i32::MAX))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn preferences(&self, borrower: BorrowerId) -> Result<Preferences> {
        let row =
            sqlx::query("SELECT channels, quiet_start, quiet_end FROM borrower_preferences WHERE borrower_id = $1")
                .bind(borrower.0)
                .fetch_optional(&self.pool)
                .await?;
        match row {
            Some(r) => codec::preferences_from_columns(
                Some(r.try_get::<String, _>("channels")?.as_str()),
                r.try_get("quiet_start")?,
                r.try_get("quiet_end")?,
            ),
            None => Ok(Preferences::default()),
        }
    }

    async fn set_preferences(&self, borrower: BorrowerId, preferences: &Preferences, now: DateTime<Utc>) -> Result<()> {
        let (channels, start, end) = codec::preferences_to_columns(preferences);
        sqlx::query(
            "INSERT INTO borrower_preferences (borrower_id, channels, quiet_start, quiet_end, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (borrower_id) DO UPDATE SET channels = excluded.channels, \
             quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end, updated_at = excluded.updated_at",
        )
        .bind(borrower.0)
        .bind(channels)
        .bind(start)
        .bind(end)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn add_plan_request(
        &self,
        borrower: BorrowerId,
        loan: LoanId,
        kind: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        let sealed = data_key_for(&mut conn, &self.keys, borrower)
            .await?
            .sealer()
            .seal(PLAN_REASON, reason);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO plan_requests (borrower_id, loan_id, kind, reason_enc, state, created_at) \
             VALUES ($1, $2, $3, $4, 'open', $5) RETURNING id",
        )
        .bind(borrower.0)
        .bind(loan.0)
        .bind(kind)
        .bind(sealed)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        Ok(id)
    }

    async fn plan_requests(&self, f: &Filter) -> Result<Vec<PlanRequest>> {
        let sql = filtered(PLAN_COLS, f);
        let mut conn = self.pool.acquire().await?;
        let rows = bind_filter(sqlx::query(&sql), f).fetch_all(&mut *conn).await?;
        let mut sealers = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let borrower = BorrowerId(r.try_get("borrower_id")?);
            let sealer = sealer_of(&mut conn, &self.keys, &mut sealers, borrower).await?;
            out.push(plan_row(r, &sealer)?);
        }
        Ok(out)
    }

    async fn decide_plan_request(
        &self,
        id: i64,
        state: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE plan_requests SET state = $1, decided_by = $2, decision_reason = $3, decided_at = $4 \
             WHERE id = $5 AND state = 'open'",
        )
        .bind(state)
        .bind(by)
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}
