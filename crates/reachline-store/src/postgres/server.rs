//! [`ServerStore`] on PostgreSQL: tokens, the access log and webhook replay digests. Several
//! nodes share them; a replayed webhook is refused by whichever node it reaches second.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reachline_domain::BorrowerId;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::PgStore;
use crate::server::{AccessEntry, OperatorRecord, ServerStore, SessionRecord, Sighting, TokenRecord};
use crate::{Result, StoreError};

fn token_record(r: &PgRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: r.try_get("role")?,
        hash: r.try_get("hash")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

const TOKEN_COLUMNS: &str = "SELECT id, name, role, hash, created_at, revoked_at FROM api_tokens";

#[async_trait]
impl ServerStore for PgStore {
    async fn put_operator(&self, op: &OperatorRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO operators (login, role, hash, created_at, disabled_at) VALUES ($1, $2, $3, $4, NULL) \
             ON CONFLICT (login) DO UPDATE SET role = excluded.role, hash = excluded.hash, disabled_at = NULL",
        )
        .bind(&op.login)
        .bind(&op.role)
        .bind(&op.hash)
        .bind(op.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn operator(&self, login: &str) -> Result<Option<OperatorRecord>> {
        sqlx::query("SELECT login, role, hash, created_at, disabled_at FROM operators WHERE login = $1")
            .bind(login)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| {
                Ok(OperatorRecord {
                    login: r.try_get("login")?,
                    role: r.try_get("role")?,
                    hash: r.try_get("hash")?,
                    created_at: r.try_get("created_at")?,
                    disabled_at: r.try_get("disabled_at")?,
                })
            })
            .transpose()
    }

    async fn create_session(
        &self,
        digest: [u8; 32],
        login: &str,
        csrf: &str,
        now: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO sessions (digest, login, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&digest[..])
            .bind(login)
            .bind(csrf)
            .bind(now)
            .bind(expires)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn session(&self, digest: [u8; 32], now: DateTime<Utc>) -> Result<Option<SessionRecord>> {
        sqlx::query(
            "SELECT s.login, o.role, s.csrf, s.expires_at FROM sessions s JOIN operators o ON o.login = s.login \
             WHERE s.digest = $1 AND s.expires_at > $2 AND o.disabled_at IS NULL",
        )
        .bind(&digest[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| {
            Ok(SessionRecord {
                login: r.try_get("login")?,
                role: r.try_get("role")?,
                csrf: r.try_get("csrf")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    async fn end_session(&self, digest: [u8; 32]) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE digest = $1")
            .bind(&digest[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_token(&self, t: &TokenRecord) -> Result<()> {
        let n = sqlx::query(
            "INSERT INTO api_tokens (id, name, role, hash, created_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(t.created_at)
        .bind(t.revoked_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::Conflict(format!("token id {} is taken", t.id)));
        }
        Ok(())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        sqlx::query(&format!("{TOKEN_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(token_record)
            .transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        sqlx::query(&format!("{TOKEN_COLUMNS} ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(token_record)
            .collect()
    }

    async fn revoke_token(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(at)
                .execute(&self.pool)
                .await?
                .rows_affected()
                == 1,
        )
    }

    async fn log_access(&self, e: &AccessEntry) -> Result<()> {
        sqlx::query(
            "INSERT INTO access_log (at, actor, action, borrower_id, reason, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(e.borrower.map(|b| b.0))
        .bind(&e.reason)
        .bind(&e.request_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn access_log(&self, borrower: Option<BorrowerId>, limit: u32) -> Result<Vec<AccessEntry>> {
        sqlx::query(
            "SELECT at, actor, action, borrower_id, reason, request_id FROM access_log \
             WHERE $1::BIGINT IS NULL OR borrower_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(borrower.map(|b| b.0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(AccessEntry {
                at: r.try_get("at")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                borrower: r.try_get::<Option<i64>, _>("borrower_id")?.map(BorrowerId),
                reason: r.try_get("reason")?,
                request_id: r.try_get("request_id")?,
            })
        })
        .collect()
    }

    async fn first_sightings(&self, items: &[Sighting], now: DateTime<Utc>) -> Result<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let fresh = take_sightings(&mut tx, items, now).await?;
        tx.commit().await?;
        Ok(fresh)
    }

    async fn forget_sighting(&self, provider: &str, digest: [u8; 32]) -> Result<()> {
        sqlx::query("DELETE FROM webhook_seen WHERE provider = $1 AND digest = $2")
            .bind(provider)
            .bind(&digest[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Clears the sightings expired at `now` and takes each of `items` on `c` (inside the caller's
/// transaction): whether it was new (a key twice in `items` is new only the first time).
pub(super) async fn take_sightings(c: &mut PgConnection, items: &[Sighting], now: DateTime<Utc>) -> Result<Vec<bool>> {
    sqlx::query("DELETE FROM webhook_seen WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *c)
        .await?;
    // One statement for the batch; a key twice in it is inserted once, and RETURNING names
    // what was inserted.
    let inserted: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "INSERT INTO webhook_seen (provider, digest, expires_at) \
         SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::timestamptz[]) \
         ON CONFLICT DO NOTHING RETURNING provider, digest",
    )
    .bind(items.iter().map(|i| i.provider.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.digest.to_vec()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.expires).collect::<Vec<_>>())
    .fetch_all(&mut *c)
    .await?;
    let mut new: std::collections::HashSet<(String, Vec<u8>)> = inserted.into_iter().collect();
    // The first of a key in the batch is the fresh one; a later copy is a replay.
    Ok(items
        .iter()
        .map(|i| new.remove(&(i.provider.clone(), i.digest.to_vec())))
        .collect())
}
