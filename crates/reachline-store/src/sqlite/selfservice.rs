//! [`SelfServiceStore`] on SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reachline_domain::{BorrowerId, ContactId, ContactPoint, LoanId, Preferences};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{current_slot, insert_contact, mark, sealer_for, SqliteStore};
use crate::codec::{self, ts_from_micros, ts_micros, ContactRow};
use crate::selfservice::{
    BorrowerSession, ChangeRecord, CheckRecord, Filter, NewChange, PlanRequest, SelfServiceStore, StepRecord,
};
use crate::{ContactEventKind, Keyring, Result, StoreError};

pub(crate) const NEW_ADDRESS: &str = "contact_changes.new_address";
const PLAN_REASON: &str = "plan_requests.reason";

const CHANGE_COLS: &str = "SELECT id, borrower_id, old_contact_id, new_address_enc, source, state, flow, version, \
     created_at, updated_at, new_contact_id, decided_by, decision_reason FROM contact_changes";

fn change_row(c: &Connection, keys: &Keyring, r: &Row<'_>) -> Result<ChangeRecord> {
    let borrower = BorrowerId(r.get(1)?);
    let sealed: Vec<u8> = r.get(3)?;
    Ok(ChangeRecord {
        id: r.get(0)?,
        borrower,
        old_contact: r.get::<_, Option<i64>>(2)?.map(ContactId),
        new_address: sealer_for(c, keys, borrower)?.open(NEW_ADDRESS, &sealed)?,
        source: r.get(4)?,
        state: r.get(5)?,
        flow: r.get(6)?,
        version: r.get(7)?,
        created_at: ts_from_micros(r.get(8)?)?,
        updated_at: ts_from_micros(r.get(9)?)?,
        new_contact: r.get::<_, Option<i64>>(10)?.map(ContactId),
        decided_by: r.get(11)?,
        decision_reason: r.get(12)?,
    })
}

/// `WHERE` over the optional state and borrower, newest first.
fn filtered(base: &str, f: &Filter) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = format!("{base} WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(s) = &f.state {
        args.push(s.clone().into());
        sql.push_str(&format!(" AND state = ?{}", args.len()));
    }
    if let Some(b) = f.borrower {
        args.push(b.0.into());
        sql.push_str(&format!(" AND borrower_id = ?{}", args.len()));
    }
    let limit = if f.limit == 0 { 100 } else { f.limit };
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
    (sql, args)
}

const CHECK_COLS: &str = "SELECT id, borrower_id, contact_id, state, reason, opened_at, updated_at FROM contact_checks";

fn check_row(r: &Row<'_>) -> Result<CheckRecord> {
    Ok(CheckRecord {
        id: r.get(0)?,
        borrower: BorrowerId(r.get(1)?),
        contact: r.get::<_, Option<i64>>(2)?.map(ContactId),
        state: r.get(3)?,
        reason: r.get(4)?,
        opened_at: ts_from_micros(r.get(5)?)?,
        updated_at: ts_from_micros(r.get(6)?)?,
    })
}

#[allow(clippy::too_many_arguments)]
fn set_change(
    c: &Connection,
    id: i64,
    version: i64,
    state: &str,
    flow: &str,
    decided: Option<(&str, &str)>,
    new_contact: Option<ContactId>,
    now: i64,
) -> Result<bool> {
    let n = c.execute(
        "UPDATE contact_changes SET state = ?1, flow = ?2, version = version + 1, updated_at = ?3, \
         decided_by = COALESCE(?4, decided_by), decision_reason = COALESCE(?5, decision_reason), \
         new_contact_id = COALESCE(?6, new_contact_id) WHERE id = ?7 AND version = ?8",
        params![
            state,
            flow,
            now,
            decided.map(|d| d.0),
            decided.map(|d| d.1),
            new_contact.map(|c| c.0),
            id,
            version
        ],
    )?;
    Ok(n == 1)
}

#[async_trait]
impl SelfServiceStore for SqliteStore {
    async fn create_change(&self, ch: &NewChange<'_>, now: DateTime<Utc>) -> Result<i64> {
        let (borrower, old, source, state, flow) = (
            ch.borrower,
            ch.old_contact,
            ch.source.to_string(),
            ch.state.to_string(),
            ch.flow.to_string(),
        );
        let address = ch.new_address.clone();
        self.with(move |c, keys| {
            let sealed = sealer_for(c, keys, borrower)?.seal(NEW_ADDRESS, &address.canonical());
            let bidx = codec::address_bidx(keys, &address).to_vec();
            c.execute(
                "INSERT INTO contact_changes (borrower_id, old_contact_id, new_address_enc, new_address_bidx, source, \
                 state, flow, version, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8)",
                params![
                    borrower.0,
                    old.map(|o| o.0),
                    sealed,
                    bidx,
                    source,
                    state,
                    flow,
                    ts_micros(now)
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn change(&self, id: i64) -> Result<Option<ChangeRecord>> {
        self.read(move |c, keys| {
            let mut stmt = c.prepare_cached(&format!("{CHANGE_COLS} WHERE id = ?1"))?;
            let mut rows = stmt.query([id])?;
            match rows.next()? {
                Some(r) => Ok(Some(change_row(c, keys, r)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn changes(&self, f: &Filter) -> Result<Vec<ChangeRecord>> {
        let (sql, args) = filtered(CHANGE_COLS, f);
        self.read(move |c, keys| {
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(change_row(c, keys, r)?);
            }
            Ok(out)
        })
        .await
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
        let (state, flow) = (state.to_string(), flow.to_string());
        let decided = decided.map(|(a, b)| (a.to_string(), b.to_string()));
        self.with(move |c, _| {
            let d = decided.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
            set_change(c, id, version, &state, &flow, d, None, ts_micros(now))
        })
        .await
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
        let (point, flow, actor) = (point.clone(), flow.to_string(), actor.to_string());
        let decided = decided.map(|(a, b)| (a.to_string(), b.to_string()));
        self.with(move |c, keys| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let borrower: Option<i64> = tx
                .query_row(
                    "SELECT borrower_id FROM contact_changes WHERE id = ?1 AND version = ?2",
                    params![id, version],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(borrower) = borrower.map(BorrowerId) else {
                return Ok(None);
            };
            let sealer = sealer_for(&tx, keys, borrower)?;
            let row = ContactRow::seal(&point, &sealer, keys);
            let at = ts_micros(now);
            if let Some(cur) = current_slot(&tx, borrower, &row.slot)? {
                mark(&tx, cur.contact_id, ContactEventKind::Retired, at, &actor, "replaced")?;
            }
            let new = insert_contact(&tx, borrower, &row, at, &actor)?;
            let d = decided.as_ref().map(|(a, b)| (a.as_str(), b.as_str()));
            if !set_change(&tx, id, version, "applied", &flow, d, Some(new), at)? {
                return Ok(None);
            }
            tx.commit()?;
            Ok(Some(new))
        })
        .await
    }

    async fn add_step(&self, s: &StepRecord) -> Result<()> {
        let s = s.clone();
        self.with(move |c, _| {
            c.prepare_cached(
                "INSERT INTO contact_change_steps (borrower_id, change_id, check_id, at, step, actor, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                s.borrower.0,
                s.change,
                s.check,
                ts_micros(s.at),
                s.step,
                s.actor,
                s.detail
            ])?;
            Ok(())
        })
        .await
    }

    async fn steps(&self, borrower: BorrowerId, change: Option<i64>, check: Option<i64>) -> Result<Vec<StepRecord>> {
        self.read(move |c, _| {
            let mut stmt = c.prepare_cached(
                "SELECT change_id, check_id, at, step, actor, detail FROM contact_change_steps \
                 WHERE borrower_id = ?1 AND (?2 IS NULL OR change_id = ?2) AND (?3 IS NULL OR check_id = ?3) ORDER BY id",
            )?;
            let mut rows = stmt.query(params![borrower.0, change, check])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(StepRecord {
                    borrower,
                    change: r.get(0)?,
                    check: r.get(1)?,
                    at: ts_from_micros(r.get(2)?)?,
                    step: r.get(3)?,
                    actor: r.get(4)?,
                    detail: r.get(5)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn open_check(
        &self,
        borrower: BorrowerId,
        contact: Option<ContactId>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(CheckRecord, bool)> {
        let reason = reason.to_string();
        self.with(move |c, _| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let existing = {
                let mut stmt = tx.prepare_cached(&format!(
                    "{CHECK_COLS} WHERE borrower_id = ?1 AND state IN ('open', 'operator_task') ORDER BY id DESC LIMIT 1"
                ))?;
                let mut rows = stmt.query([borrower.0])?;
                match rows.next()? {
                    Some(r) => Some(check_row(r)?),
                    None => None,
                }
            };
            if let Some(x) = existing {
                return Ok((x, false));
            }
            let at = ts_micros(now);
            tx.execute(
                "INSERT INTO contact_checks (borrower_id, contact_id, state, reason, opened_at, updated_at) \
                 VALUES (?1, ?2, 'open', ?3, ?4, ?4)",
                params![borrower.0, contact.map(|c| c.0), reason, at],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok((
                CheckRecord {
                    id,
                    borrower,
                    contact,
                    state: "open".into(),
                    reason,
                    opened_at: now,
                    updated_at: now,
                },
                true,
            ))
        })
        .await
    }

    async fn set_check_state(&self, id: i64, state: &str, now: DateTime<Utc>) -> Result<()> {
        let state = state.to_string();
        self.with(move |c, _| {
            c.execute(
                "UPDATE contact_checks SET state = ?1, updated_at = ?2 WHERE id = ?3",
                params![state, ts_micros(now), id],
            )?;
            Ok(())
        })
        .await
    }

    async fn checks(&self, f: &Filter) -> Result<Vec<CheckRecord>> {
        let (sql, args) = filtered(CHECK_COLS, f);
        self.read(move |c, _| {
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(check_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn use_nonce(&self, nonce: i64, now: DateTime<Utc>) -> Result<bool> {
        self.with(move |c, _| {
            let n = c.execute(
                "INSERT INTO link_nonces (nonce, used_at) VALUES (?1, ?2) ON CONFLICT (nonce) DO NOTHING",
                params![nonce, ts_micros(now)],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn create_borrower_session(&self, digest: [u8; 32], s: &BorrowerSession, now: DateTime<Utc>) -> Result<()> {
        let s = s.clone();
        self.with(move |c, _| {
            c.execute("DELETE FROM borrower_sessions WHERE expires_at <= ?1", [ts_micros(now)])?;
            c.execute(
                "INSERT INTO borrower_sessions (digest, borrower_id, factors, csrf, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    &digest[..],
                    s.borrower.0,
                    s.factors,
                    s.csrf,
                    ts_micros(now),
                    ts_micros(s.expires_at)
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn borrower_session(&self, digest: [u8; 32], now: DateTime<Utc>) -> Result<Option<BorrowerSession>> {
        self.read(move |c, _| {
            type Raw = (i64, String, String, i64);
            let raw: Option<Raw> = c
                .prepare_cached(
                    "SELECT borrower_id, factors, csrf, expires_at FROM borrower_sessions \
                     WHERE digest = ?1 AND expires_at > ?2",
                )?
                .query_row(params![&digest[..], ts_micros(now)], |r| Raw::try_from(r))
                .optional()?;
            raw.map(|(b, factors, csrf, exp)| {
                Ok(BorrowerSession {
                    borrower: BorrowerId(b),
                    factors,
                    csrf,
                    expires_at: ts_from_micros(exp)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn set_session_factors(&self, digest: [u8; 32], factors: &str) -> Result<()> {
        let factors = factors.to_string();
        self.with(move |c, _| {
            c.execute(
                "UPDATE borrower_sessions SET factors = ?1 WHERE digest = ?2",
                params![factors, &digest[..]],
            )?;
            Ok(())
        })
        .await
    }

    async fn end_borrower_session(&self, digest: [u8; 32]) -> Result<()> {
        self.with(move |c, _| {
            c.execute("DELETE FROM borrower_sessions WHERE digest = ?1", [&digest[..]])?;
            Ok(())
        })
        .await
    }

    async fn code_failures(&self, borrower: BorrowerId) -> Result<u32> {
        self.read(move |c, _| {
            let n: Option<i64> = c
                .prepare_cached("SELECT failures FROM code_failures WHERE borrower_id = ?1")?
                .query_row([borrower.0], |r| r.get(0))
                .optional()?;
            Ok(n.unwrap_or(0).max(0) as u32)
        })
        .await
    }

    async fn set_code_failures(&self, borrower: BorrowerId, n: u32, now: DateTime<Utc>) -> Result<()> {
        self.with(move |c, _| {
            c.execute(
                "INSERT INTO code_failures (borrower_id, failures, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (borrower_id) DO UPDATE SET failures = excluded.failures, updated_at = excluded.updated_at",
                params![borrower.0, n, ts_micros(now)],
            )?;
            Ok(())
        })
        .await
    }

    async fn preferences(&self, borrower: BorrowerId) -> Result<Preferences> {
        self.read(move |c, _| {
            let row = c
                .query_row(
                    "SELECT channels, quiet_start, quiet_end FROM borrower_preferences WHERE borrower_id = ?1",
                    [borrower.0],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<i32>>(1)?,
                            r.get::<_, Option<i32>>(2)?,
                        ))
                    },
                )
                .optional()?;
            match row {
                Some((ch, s, e)) => codec::preferences_from_columns(Some(&ch), s, e),
                None => Ok(Preferences::default()),
            }
        })
        .await
    }

    async fn set_preferences(&self, borrower: BorrowerId, preferences: &Preferences, now: DateTime<Utc>) -> Result<()> {
        let (channels, start, end) = codec::preferences_to_columns(preferences);
        self.with(move |c, _| {
            c.execute(
                "INSERT INTO borrower_preferences (borrower_id, channels, quiet_start, quiet_end, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (borrower_id) DO UPDATE SET channels = excluded.channels, \
                 quiet_start = excluded.quiet_start, quiet_end = excluded.quiet_end, updated_at = excluded.updated_at",
                params![borrower.0, channels, start, end, ts_micros(now)],
            )?;
            Ok(())
        })
        .await
    }

    async fn add_plan_request(
        &self,
        borrower: BorrowerId,
        loan: LoanId,
        kind: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<i64> {
        let (kind, reason) = (kind.to_string(), reason.to_string());
        self.with(move |c, keys| {
            let sealed = sealer_for(c, keys, borrower)?.seal(PLAN_REASON, &reason);
            c.execute(
                "INSERT INTO plan_requests (borrower_id, loan_id, kind, reason_enc, state, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 'open', ?5)",
                params![borrower.0, loan.0, kind, sealed, ts_micros(now)],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn plan_requests(&self, f: &Filter) -> Result<Vec<PlanRequest>> {
        let (sql, args) = filtered(
            "SELECT id, borrower_id, loan_id, kind, reason_enc, state, created_at, decided_at, decided_by, \
             decision_reason FROM plan_requests",
            f,
        );
        self.read(move |c, keys| {
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let borrower = BorrowerId(r.get(1)?);
                let sealed: Vec<u8> = r.get(4)?;
                out.push(PlanRequest {
                    id: r.get(0)?,
                    borrower,
                    loan: LoanId(r.get(2)?),
                    kind: r.get(3)?,
                    reason: sealer_for(c, keys, borrower)?.open(PLAN_REASON, &sealed)?,
                    state: r.get(5)?,
                    created_at: ts_from_micros(r.get(6)?)?,
                    decided_at: r.get::<_, Option<i64>>(7)?.map(ts_from_micros).transpose()?,
                    decided_by: r.get(8)?,
                    decision_reason: r.get(9)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn decide_plan_request(
        &self,
        id: i64,
        state: &str,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (state, by, reason) = (state.to_string(), by.to_string(), reason.to_string());
        self.with(move |c, _| {
            let n = c.execute(
                "UPDATE plan_requests SET state = ?1, decided_by = ?2, decision_reason = ?3, decided_at = ?4 \
                 WHERE id = ?5 AND state = 'open'",
                params![state, by, reason, ts_micros(now), id],
            )?;
            Ok(n == 1)
        })
        .await
    }
}
