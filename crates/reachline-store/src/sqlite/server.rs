//! [`ServerStore`] on SQLite: tokens, the access log and webhook replay digests.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reachline_domain::BorrowerId;
use rusqlite::{params, OptionalExtension};

use super::SqliteStore;
use crate::codec::{ts_from_micros, ts_micros};
use crate::server::{AccessEntry, OperatorRecord, ServerStore, SessionRecord, Sighting, TokenRecord};
use crate::{Result, StoreError};

type TokenRaw = (String, String, String, String, i64, Option<i64>);

fn token_record((id, name, role, hash, created, revoked): TokenRaw) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id,
        name,
        role,
        hash,
        created_at: ts_from_micros(created)?,
        revoked_at: revoked.map(ts_from_micros).transpose()?,
    })
}

const TOKEN_COLUMNS: &str = "SELECT id, name, role, hash, created_at, revoked_at FROM api_tokens";

#[async_trait]
impl ServerStore for SqliteStore {
    async fn put_operator(&self, op: &OperatorRecord) -> Result<()> {
        let op = op.clone();
        self.with(move |c, _| {
            c.execute(
                "INSERT INTO operators (login, role, hash, created_at, disabled_at) VALUES (?1, ?2, ?3, ?4, NULL) \
                 ON CONFLICT (login) DO UPDATE SET role = excluded.role, hash = excluded.hash, disabled_at = NULL",
                params![op.login, op.role, op.hash, ts_micros(op.created_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn operator(&self, login: &str) -> Result<Option<OperatorRecord>> {
        let login = login.to_string();
        self.read(move |c, _| {
            type Raw = (String, String, String, i64, Option<i64>);
            c.prepare_cached("SELECT login, role, hash, created_at, disabled_at FROM operators WHERE login = ?1")?
                .query_row([login], |r| Raw::try_from(r))
                .optional()?
                .map(|(login, role, hash, created, disabled)| {
                    Ok(OperatorRecord {
                        login,
                        role,
                        hash,
                        created_at: ts_from_micros(created)?,
                        disabled_at: disabled.map(ts_from_micros).transpose()?,
                    })
                })
                .transpose()
        })
        .await
    }

    async fn create_session(
        &self,
        digest: [u8; 32],
        login: &str,
        csrf: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<()> {
        let (login, csrf) = (login.to_string(), csrf.to_string());
        self.with(move |c, _| {
            c.execute("DELETE FROM sessions WHERE expires_at <= ?1", [ts_micros(now)])?;
            c.execute(
                "INSERT INTO sessions (digest, login, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&digest[..], login, csrf, ts_micros(now), ts_micros(expires)],
            )?;
            Ok(())
        })
        .await
    }

    async fn session(&self, digest: [u8; 32], now: DateTime<Utc>) -> Result<Option<SessionRecord>> {
        self.read(move |c, _| {
            type Raw = (String, String, String, i64);
            c.prepare_cached(
                "SELECT s.login, o.role, s.csrf, s.expires_at FROM sessions s JOIN operators o ON o.login = s.login \
                 WHERE s.digest = ?1 AND s.expires_at > ?2 AND o.disabled_at IS NULL",
            )?
            .query_row(params![&digest[..], ts_micros(now)], |r| Raw::try_from(r))
            .optional()?
            .map(|(login, role, csrf, exp)| {
                Ok(SessionRecord {
                    login,
                    role,
                    csrf,
                    expires_at: ts_from_micros(exp)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn end_session(&self, digest: [u8; 32]) -> Result<()> {
        self.with(move |c, _| {
            c.execute("DELETE FROM sessions WHERE digest = ?1", [&digest[..]])?;
            Ok(())
        })
        .await
    }

    async fn create_token(&self, t: &TokenRecord) -> Result<()> {
        let t = t.clone();
        self.with(move |c, _| {
            let n = c.execute(
                "INSERT INTO api_tokens (id, name, role, hash, created_at, revoked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                params![
                    t.id,
                    t.name,
                    t.role,
                    t.hash,
                    ts_micros(t.created_at),
                    t.revoked_at.map(ts_micros)
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("token id {} is taken", t.id)));
            }
            Ok(())
        })
        .await
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let id = id.to_string();
        self.read(move |c, _| {
            c.prepare_cached(&format!("{TOKEN_COLUMNS} WHERE id = ?1"))?
                .query_row([id], |r| TokenRaw::try_from(r))
                .optional()?
                .map(token_record)
                .transpose()
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(|c, _| {
            let rows = c
                .prepare_cached(&format!("{TOKEN_COLUMNS} ORDER BY created_at, id"))?
                .query_map([], |r| TokenRaw::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(token_record).collect()
        })
        .await
    }

    async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let id = id.to_string();
        self.with(move |c, _| {
            Ok(c.execute(
                "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, ts_micros(at)],
            )? == 1)
        })
        .await
    }

    async fn log_access(&self, e: &AccessEntry) -> Result<()> {
        let e = e.clone();
        self.with(move |c, _| {
            c.prepare_cached(
                "INSERT INTO access_log (at, actor, action, borrower_id, reason, request_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                ts_micros(e.at),
                e.actor,
                e.action,
                e.borrower.map(|b| b.0),
                e.reason,
                e.request_id
            ])?;
            Ok(())
        })
        .await
    }

    async fn access_log(&self, borrower: Option<BorrowerId>, limit: u32) -> Result<Vec<AccessEntry>> {
        self.read(move |c, _| {
            type Raw = (i64, String, String, Option<i64>, String, String);
            let rows = c
                .prepare_cached(
                    "SELECT at, actor, action, borrower_id, reason, request_id FROM access_log \
                     WHERE ?1 IS NULL OR borrower_id = ?1 ORDER BY id DESC LIMIT ?2",
                )?
                .query_map(params![borrower.map(|b| b.0), limit], |r| Raw::try_from(r))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(at, actor, action, b, reason, request_id)| {
                    Ok(AccessEntry {
                        at: ts_from_micros(at)?,
                        actor,
                        action,
                        borrower: b.map(BorrowerId),
                        reason,
                        request_id,
                    })
                })
                .collect()
        })
        .await
    }

    async fn first_sightings(&self, items: &[Sighting], now: DateTime<Utc>) -> Result<Vec<bool>> {
        let items = items.to_vec();
        self.with(move |c, _| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let fresh = take_sightings(&tx, &items, now)?;
            tx.commit()?;
            Ok(fresh)
        })
        .await
    }

    async fn forget_sighting(&self, provider: &str, digest: [u8; 32]) -> Result<()> {
        let provider = provider.to_string();
        self.with(move |c, _| {
            c.execute(
                "DELETE FROM webhook_seen WHERE provider = ?1 AND digest = ?2",
                params![provider, &digest[..]],
            )?;
            Ok(())
        })
        .await
    }
}

/// Clears the sightings expired at `now` and takes each of `items`: whether it was new (a key
/// twice in `items` is new only the first time).
pub(super) fn take_sightings<'a>(
    tx: &rusqlite::Connection,
    items: impl IntoIterator<Item = &'a Sighting>,
    now: DateTime<Utc>,
) -> Result<Vec<bool>> {
    tx.prepare_cached("DELETE FROM webhook_seen WHERE expires_at <= ?1")?
        .execute([ts_micros(now)])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO webhook_seen (provider, digest, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )?;
    items
        .into_iter()
        .map(|i| Ok(insert.execute(params![i.provider, &i.digest[..], ts_micros(i.expires)])? == 1))
        .collect()
}
