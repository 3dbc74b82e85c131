//! The scale-out back end: PostgreSQL through `sqlx`. Import batches are written with one
//! statement per batch over `UNNEST`ed arrays, so a batch of thousands of rows is one round trip.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use reachline_domain::{
    Borrower, BorrowerId, Consent, ContactId, ContactPoint, ExternalId, Installment, InstallmentId, Loan, LoanId,
    Money, PhoneNumber,
};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use crate::codec::{self, BorrowerRow, ContactRow, CurrentSlot, KeyCache, SlotAction};
use crate::crypto::{DataKey, Keyring, Sealer};
use crate::{
    Backend, BorrowerRecord, ContactEvent, ContactEventKind, ContactRecord, Counts, ImportReport, ImportTx,
    InstallmentRecord, LoanRecord, Result, Retirement, Store, StoreError, REPLACED_BY_BOOK,
};

pub mod engine;
pub mod ledger;
pub mod privacy;
pub mod selfservice;
pub mod server;

pub use ledger::PgLedger;

pub struct PgStore {
    pool: PgPool,
    keys: std::sync::Arc<Keyring>,
}

/// A pool on `url` with every pending migration applied (under sqlx's advisory lock, so nodes
/// starting at once migrate once). The store and the ledger both open through it.
pub(crate) async fn connect_migrated(url: &str, max_connections: u32) -> Result<PgPool> {
    // JIT compilation is for long analytic queries; the engine's are many short ones over a
    // few thousand rows, which PostgreSQL's cost model still sends to the JIT (measured on a
    // 1M-borrower book: 30-50 ms of compiling for a planning read that runs in 15 ms), so it
    // is off for this pool's sessions.
    let opts = url
        .parse::<sqlx::postgres::PgConnectOptions>()?
        .options([("jit", "off")]);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .connect_with(opts)
        .await?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    Ok(pool)
}

impl PgStore {
    /// Connects and applies any pending migrations (under sqlx's advisory lock, so several nodes
    /// starting at once migrate once).
    pub async fn connect(url: &str, keys: Keyring) -> Result<Self> {
        let pool = connect_migrated(url, 8).await?;
        Ok(Self {
            pool,
            keys: std::sync::Arc::new(keys),
        })
    }
}

async fn data_key_for(c: &mut sqlx::PgConnection, keys: &Keyring, borrower: BorrowerId) -> Result<DataKey> {
    let wrapped: Option<Option<Vec<u8>>> =
        sqlx::query_scalar("SELECT wrapped_key FROM borrower_keys WHERE borrower_id = $1")
            .bind(borrower.0)
            .fetch_optional(&mut *c)
            .await?;
    match wrapped {
        None => Err(StoreError::NotFound {
            what: "data key of borrower",
            id: borrower.to_string(),
        }),
        Some(None) => Err(crate::CryptoError::Shredded.into()),
        Some(Some(w)) => Ok(keys.unwrap_key(&w)?),
    }
}

const CONTACT_COLS: &str = "id, borrower_id, slot, kind, role, relation, line_type, address_enc, address_bidx, \
     holder_name_enc, bound_since, source, verified_at, added_at, retired_at, retire_reason";

/// A contact row as PostgreSQL returns it, still sealed.
struct StoredContact {
    id: ContactId,
    borrower_id: BorrowerId,
    row: ContactRow,
    added_at: DateTime<Utc>,
    retired: Option<Retirement>,
}

fn contact_row(r: &PgRow) -> std::result::Result<StoredContact, sqlx::Error> {
    let retired_at: Option<DateTime<Utc>> = r.try_get("retired_at")?;
    let reason: Option<String> = r.try_get("retire_reason")?;
    Ok(StoredContact {
        id: ContactId(r.try_get("id")?),
        borrower_id: BorrowerId(r.try_get("borrower_id")?),
        row: ContactRow {
            slot: r.try_get("slot")?,
            kind: r.try_get("kind")?,
            role: r.try_get("role")?,
            relation: r.try_get("relation")?,
            line_type: r.try_get("line_type")?,
            address_enc: r.try_get("address_enc")?,
            address_bidx: r.try_get("address_bidx")?,
            holder_name_enc: r.try_get("holder_name_enc")?,
            bound_since: r.try_get("bound_since")?,
            source: r.try_get("source")?,
            verified_at: r.try_get("verified_at")?,
        },
        added_at: r.try_get("added_at")?,
        retired: retired_at.map(|at| Retirement {
            at,
            reason: reason.unwrap_or_default(),
        }),
    })
}

impl PgStore {
    async fn query_contacts(
        &self,
        sql_tail: &str,
        bind: impl FnOnce(
            sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
        ) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<ContactRecord>> {
        let sql = format!("SELECT {CONTACT_COLS} FROM contact_points {sql_tail}");
        let mut conn = self.pool.acquire().await?;
        let rows = bind(sqlx::query(&sql)).fetch_all(&mut *conn).await?;
        let mut sealers: HashMap<BorrowerId, Sealer> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let StoredContact {
                id,
                borrower_id,
                row,
                added_at,
                retired,
            } = contact_row(r)?;
            let sealer = match sealers.get(&borrower_id) {
                Some(s) => s.clone(),
                None => {
                    let s = data_key_for(&mut conn, &self.keys, borrower_id).await?.sealer();
                    sealers.insert(borrower_id, s.clone());
                    s
                }
            };
            out.push(ContactRecord {
                id,
                borrower_id,
                point: row.open(&sealer)?,
                added_at,
                retired,
            });
        }
        Ok(out)
    }
}

/// One contact event to write.
struct EventRow<'a> {
    contact: i64,
    borrower: i64,
    kind: ContactEventKind,
    at: DateTime<Utc>,
    actor: &'a str,
    detail: Option<&'a str>,
}

/// A CSV field for `COPY … (FORMAT csv)`: quoted, inner quotes doubled; `None` is NULL.
fn csv_field(out: &mut String, v: Option<&str>) {
    if let Some(v) = v {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    }
}

/// Writes events with `COPY`: one round trip, and none of an INSERT's per-statement planning.
async fn insert_events(tx: &mut sqlx::PgConnection, events: &[EventRow<'_>]) -> Result<()> {
    use std::fmt::Write as _;
    if events.is_empty() {
        return Ok(());
    }
    let mut buf = String::with_capacity(events.len() * 96);
    for e in events {
        let _ = write!(buf, "{},{},{},{},", e.contact, e.borrower, e.kind, codec::ts_text(e.at));
        csv_field(&mut buf, Some(e.actor));
        buf.push(',');
        csv_field(&mut buf, e.detail);
        buf.push('\n');
    }
    copy_in(
        tx,
        "COPY contact_events (contact_id, borrower_id, event, at, actor, detail) FROM STDIN (FORMAT csv)",
        buf,
    )
    .await
}

async fn copy_in(tx: &mut sqlx::PgConnection, statement: &str, csv: String) -> Result<()> {
    let mut copy = tx.copy_in_raw(statement).await?;
    copy.send(csv.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

/// Inserts sealed contact rows for `borrowers` and their `added` (and `verified`) events.
async fn insert_contacts(
    tx: &mut sqlx::PgConnection,
    borrowers: &[i64],
    rows: &[ContactRow],
    at: DateTime<Utc>,
    actor: &str,
) -> Result<Vec<i64>> {
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let col = |f: fn(&ContactRow) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO contact_points (borrower_id, slot, kind, role, relation, line_type, address_enc, address_bidx, \
         holder_name_enc, bound_since, source, verified_at, added_at) \
         SELECT b, s, k, r, rel, lt, ae, ab, he, bs, src, va, $13 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], \
         $5::text[], $6::text[], $7::bytea[], $8::bytea[], $9::bytea[], $10::date[], $11::text[], $12::timestamptz[]) \
         WITH ORDINALITY AS u(b, s, k, r, rel, lt, ae, ab, he, bs, src, va, n) ORDER BY n RETURNING id",
    )
    .bind(borrowers)
    .bind(col(|r| r.slot.clone()))
    .bind(col(|r| r.kind.clone()))
    .bind(col(|r| r.role.clone()))
    .bind(rows.iter().map(|r| r.relation.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.line_type.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.address_enc.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.address_bidx.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.holder_name_enc.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.bound_since).collect::<Vec<NaiveDate>>())
    .bind(col(|r| r.source.clone()))
    .bind(rows.iter().map(|r| r.verified_at).collect::<Vec<_>>())
    .bind(at)
    .fetch_all(&mut *tx)
    .await?;
    // INSERT … SELECT … ORDER BY inserts, and so returns, rows in the given order.
    let mut events = Vec::with_capacity(ids.len() * 2);
    for ((id, b), r) in ids.iter().zip(borrowers).zip(rows) {
        events.push(EventRow {
            contact: *id,
            borrower: *b,
            kind: ContactEventKind::Added,
            at,
            actor,
            detail: None,
        });
        if let Some(v) = r.verified_at {
            events.push(EventRow {
                contact: *id,
                borrower: *b,
                kind: ContactEventKind::Verified,
                at: v,
                actor,
                detail: Some("as stated at entry"),
            });
        }
    }
    insert_events(tx, &events).await?;
    Ok(ids)
}

/// Retires or verifies a current contact point and records the event, in one step: the
/// `detail` is the retirement reason or the verification method.
async fn mark(
    tx: &mut sqlx::PgConnection,
    contact: ContactId,
    kind: ContactEventKind,
    at: DateTime<Utc>,
    actor: &str,
    detail: &str,
) -> Result<()> {
    let query = match kind {
        ContactEventKind::Retired => sqlx::query_scalar(
            "UPDATE contact_points SET retired_at = $2, retire_reason = $3 WHERE id = $1 AND retired_at IS NULL \
             RETURNING borrower_id",
        )
        .bind(contact.0)
        .bind(at)
        .bind(detail),
        ContactEventKind::Verified => sqlx::query_scalar(
            "UPDATE contact_points SET verified_at = $2 WHERE id = $1 AND retired_at IS NULL RETURNING borrower_id",
        )
        .bind(contact.0)
        .bind(at),
        ContactEventKind::Added => unreachable!("a contact point is added by insert_contacts"),
    };
    let borrower: Option<i64> = query.fetch_optional(&mut *tx).await?;
    let borrower = borrower.ok_or_else(|| StoreError::NotFound {
        what: "current contact point",
        id: contact.to_string(),
    })?;
    let e = EventRow {
        contact: contact.0,
        borrower,
        kind,
        at,
        actor,
        detail: Some(detail),
    };
    insert_events(tx, &[e]).await
}

async fn current_slots(tx: &mut sqlx::PgConnection, borrowers: &[i64]) -> Result<HashMap<(i64, String), CurrentSlot>> {
    let rows = sqlx::query(
        "SELECT id, borrower_id, slot, kind, address_bidx, verified_at FROM contact_points \
         WHERE retired_at IS NULL AND borrower_id = ANY($1)",
    )
    .bind(borrowers)
    .fetch_all(&mut *tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                (r.try_get("borrower_id")?, r.try_get("slot")?),
                CurrentSlot {
                    contact_id: ContactId(r.try_get("id")?),
                    kind: r.try_get("kind")?,
                    address_bidx: r.try_get("address_bidx")?,
                    verified_at: r.try_get("verified_at")?,
                },
            ))
        })
        .collect()
}

fn borrower_row(r: &PgRow) -> std::result::Result<BorrowerRow, sqlx::Error> {
    Ok(BorrowerRow {
        external_id: r.try_get("external_id")?,
        name_enc: r.try_get("name_enc")?,
        national_id_scheme: r.try_get("national_id_scheme")?,
        national_id_enc: r.try_get("national_id_enc")?,
        national_id_bidx: r.try_get("national_id_bidx")?,
        locale: r.try_get("locale")?,
        time_zone: r.try_get("time_zone")?,
        jurisdiction: r.try_get("jurisdiction")?,
    })
}

async fn insert_consents(tx: &mut sqlx::PgConnection, rows: &[(BorrowerId, Consent)]) -> Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO consents (borrower_id, purpose, channel, state, at, source, text_version) \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(rows.iter().map(|(b, _)| b.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, c)| c.purpose.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, c)| codec::consent_channel(c)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, c)| c.state.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, c)| c.at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, c)| c.source.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, c)| c.text_version.clone()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}

/// Installments of loans created in this transaction cannot conflict with stored ones, so they
/// go in through `COPY`, several times faster than an upsert.
async fn copy_installments(
    tx: &mut sqlx::PgConnection,
    rows: &[(LoanId, Installment)],
    at: DateTime<Utc>,
) -> Result<()> {
    use std::fmt::Write as _;
    if rows.is_empty() {
        return Ok(());
    }
    let at = codec::ts_text(at);
    let mut buf = String::with_capacity(rows.len() * 96);
    for (loan, i) in rows {
        // Every field is a number, a date, a currency code or a timestamp: nothing to quote.
        let _ = writeln!(
            buf,
            "{},{},{},{},{},{},{},{}",
            loan.0,
            i.seq,
            i.due_date,
            i.amount_due.minor(),
            i.amount_paid.minor(),
            i.amount_due.currency(),
            i.paid_at.map(codec::ts_text).unwrap_or_default(),
            at
        );
    }
    copy_in(
        tx,
        "COPY installments (loan_id, seq, due_date, amount_due_minor, amount_paid_minor, currency, paid_at, updated_at) \
         FROM STDIN (FORMAT csv)",
        buf,
    )
    .await
}

async fn upsert_installments(
    tx: &mut sqlx::PgConnection,
    rows: &[(LoanId, Installment)],
    at: DateTime<Utc>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO installments (loan_id, seq, due_date, amount_due_minor, amount_paid_minor, currency, paid_at, updated_at) \
         SELECT l, s, d, ad, ap, c, p, $8 FROM UNNEST($1::bigint[], $2::int[], $3::date[], $4::bigint[], $5::bigint[], \
         $6::text[], $7::timestamptz[]) AS u(l, s, d, ad, ap, c, p) \
         ON CONFLICT (loan_id, seq) DO UPDATE SET due_date = excluded.due_date, amount_due_minor = excluded.amount_due_minor, \
         amount_paid_minor = excluded.amount_paid_minor, currency = excluded.currency, paid_at = excluded.paid_at, \
         updated_at = excluded.updated_at",
    )
    .bind(rows.iter().map(|(l, _)| l.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, i)| i.seq as i32).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, i)| i.due_date).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, i)| i.amount_due.minor()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, i)| i.amount_paid.minor()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, i)| i.amount_due.currency().as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, i)| i.paid_at).collect::<Vec<_>>())
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn begin_import(&self, at: DateTime<Utc>) -> Result<Box<dyn ImportTx>> {
        let mut tx = self.pool.begin().await?;
        // One import at a time: a second one waits here rather than interleaving its upserts.
        sqlx::query("SELECT pg_advisory_xact_lock(7321001)")
            .execute(&mut *tx)
            .await?;
        let (borrowers_above, loans_above): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT coalesce(max(id), 0) FROM borrowers), (SELECT coalesce(max(id), 0) FROM loans)",
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok(Box::new(PgImport {
            tx,
            pool: self.pool.clone(),
            keys: self.keys.clone(),
            at,
            report: ImportReport::default(),
            data_keys: KeyCache::new(),
            borrowers_above,
            loans_above,
            pending_copy: Vec::new(),
        }))
    }

    async fn borrower_by_external_id(&self, id: &ExternalId) -> Result<Option<BorrowerRecord>> {
        let mut conn = self.pool.acquire().await?;
        let Some(r) = sqlx::query(
            "SELECT id, external_id, name_enc, national_id_scheme, national_id_enc, national_id_bidx, locale, time_zone, \
             jurisdiction, created_at, updated_at FROM borrowers WHERE external_id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?
        else {
            return Ok(None);
        };
        let bid = BorrowerId(r.try_get("id")?);
        let sealer = data_key_for(&mut conn, &self.keys, bid).await?.sealer();
        Ok(Some(BorrowerRecord {
            id: bid,
            borrower: borrower_row(&r)?.open(&sealer)?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
        }))
    }

    async fn contacts(&self, borrower: BorrowerId) -> Result<Vec<ContactRecord>> {
        self.query_contacts(
            "WHERE borrower_id = $1 ORDER BY retired_at IS NOT NULL, added_at, id",
            |q| q.bind(borrower.0),
        )
        .await
    }

    async fn contact_history(&self, borrower: BorrowerId) -> Result<Vec<ContactEvent>> {
        let rows = sqlx::query(
            "SELECT contact_id, event, at, actor, detail FROM contact_events WHERE borrower_id = $1 ORDER BY id",
        )
        .bind(borrower.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ContactEvent {
                    contact_id: ContactId(r.try_get("contact_id")?),
                    borrower_id: borrower,
                    kind: r.try_get::<String, _>("event")?.parse().map_err(codec::corrupt)?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }

    async fn add_contact(
        &self,
        borrower: BorrowerId,
        point: &ContactPoint,
        at: DateTime<Utc>,
        actor: &str,
        replaces_reason: &str,
    ) -> Result<ContactId> {
        point.validate().map_err(|e| StoreError::Conflict(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
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
                at,
                actor,
                replaces_reason,
            )
            .await?;
        }
        let ids = insert_contacts(&mut tx, &[borrower.0], std::slice::from_ref(&row), at, actor).await?;
        tx.commit().await?;
        Ok(ContactId(ids[0]))
    }

    async fn verify_contact(&self, contact: ContactId, at: DateTime<Utc>, actor: &str, method: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        mark(&mut tx, contact, ContactEventKind::Verified, at, actor, method).await?;
        Ok(tx.commit().await?)
    }

    async fn retire_contact(&self, contact: ContactId, at: DateTime<Utc>, actor: &str, reason: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        mark(&mut tx, contact, ContactEventKind::Retired, at, actor, reason).await?;
        Ok(tx.commit().await?)
    }

    async fn contacts_by_phone(&self, number: &PhoneNumber) -> Result<Vec<ContactRecord>> {
        let bidx = codec::phone_bidx(&self.keys, number).to_vec();
        self.query_contacts("WHERE address_bidx = $1 ORDER BY added_at, id", |q| q.bind(bidx))
            .await
    }

    async fn contacts_by_address(&self, address: &reachline_domain::ContactAddress) -> Result<Vec<ContactRecord>> {
        let bidx = codec::address_bidx(&self.keys, address).to_vec();
        self.query_contacts("WHERE address_bidx = $1 ORDER BY added_at, id", |q| q.bind(bidx))
            .await
    }

    async fn loans(&self, borrower: BorrowerId) -> Result<Vec<LoanRecord>> {
        let rows = sqlx::query(
            "SELECT l.id, l.external_id, b.external_id AS borrower_ext, l.product, l.principal_minor, l.currency, l.disbursed_on \
             FROM loans l JOIN borrowers b ON b.id = l.borrower_id WHERE l.borrower_id = $1 ORDER BY l.id",
        )
        .bind(borrower.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let cur = r.try_get::<String, _>("currency")?.parse().map_err(codec::corrupt)?;
                Ok(LoanRecord {
                    id: LoanId(r.try_get("id")?),
                    borrower_id: borrower,
                    loan: Loan {
                        external_id: ExternalId::parse(r.try_get("external_id")?).map_err(codec::corrupt)?,
                        borrower: ExternalId::parse(r.try_get("borrower_ext")?).map_err(codec::corrupt)?,
                        product: r.try_get("product")?,
                        principal: Money::from_minor(r.try_get("principal_minor")?, cur),
                        disbursed_on: r.try_get("disbursed_on")?,
                    },
                })
            })
            .collect()
    }

    async fn installments(&self, loan: LoanId) -> Result<Vec<InstallmentRecord>> {
        let rows = sqlx::query(
            "SELECT i.id, l.external_id, i.seq, i.due_date, i.amount_due_minor, i.amount_paid_minor, i.currency, i.paid_at \
             FROM installments i JOIN loans l ON l.id = i.loan_id WHERE i.loan_id = $1 ORDER BY i.seq",
        )
        .bind(loan.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let cur = r.try_get::<String, _>("currency")?.parse().map_err(codec::corrupt)?;
                Ok(InstallmentRecord {
                    id: InstallmentId(r.try_get("id")?),
                    loan_id: loan,
                    installment: Installment {
                        loan: ExternalId::parse(r.try_get("external_id")?).map_err(codec::corrupt)?,
                        seq: r.try_get::<i32, _>("seq")? as u32,
                        due_date: r.try_get("due_date")?,
                        amount_due: Money::from_minor(r.try_get("amount_due_minor")?, cur),
                        amount_paid: Money::from_minor(r.try_get("amount_paid_minor")?, cur),
                        paid_at: r.try_get("paid_at")?,
                    },
                })
            })
            .collect()
    }

    async fn consents(&self, borrower: BorrowerId) -> Result<Vec<Consent>> {
        let rows = sqlx::query(
            "SELECT purpose, channel, state, at, source, text_version FROM consents WHERE borrower_id = $1 ORDER BY at, id",
        )
        .bind(borrower.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                codec::consent_from_columns(
                    r.try_get("purpose")?,
                    r.try_get("channel")?,
                    r.try_get("state")?,
                    r.try_get("at")?,
                    r.try_get("source")?,
                    r.try_get("text_version")?,
                )
            })
            .collect()
    }

    async fn record_consent(&self, borrower: BorrowerId, consent: &Consent) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        insert_consents(&mut conn, &[(borrower, consent.clone())]).await?;
        Ok(())
    }

    async fn load_disconnects(
        &self,
        rows: Vec<(PhoneNumber, NaiveDate)>,
        source: &str,
        at: DateTime<Utc>,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut added = 0u64;
        for chunk in rows.chunks(10_000) {
            let bidx: Vec<Vec<u8>> = chunk
                .iter()
                .map(|(n, _)| codec::phone_bidx(&self.keys, n).to_vec())
                .collect();
            let days: Vec<NaiveDate> = chunk.iter().map(|(_, d)| *d).collect();
            added += sqlx::query(
                "INSERT INTO disconnects (number_bidx, disconnected_on, source, loaded_at) \
                 SELECT b, d, $3, $4 FROM UNNEST($1::bytea[], $2::date[]) AS t(b, d) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&bidx)
            .bind(&days)
            .bind(source)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn last_disconnect(&self, number: &PhoneNumber) -> Result<Option<NaiveDate>> {
        let bidx = codec::phone_bidx(&self.keys, number).to_vec();
        let day: Option<NaiveDate> =
            sqlx::query_scalar("SELECT max(disconnected_on) FROM disconnects WHERE number_bidx = $1")
                .bind(bidx)
                .fetch_one(&self.pool)
                .await?;
        Ok(day)
    }

    async fn counts(&self) -> Result<Counts> {
        let r = sqlx::query(
            "SELECT (SELECT count(*) FROM borrowers) AS b, \
             (SELECT count(*) FROM contact_points WHERE retired_at IS NULL) AS cc, \
             (SELECT count(*) FROM contact_points WHERE retired_at IS NOT NULL) AS cr, \
             (SELECT count(*) FROM loans) AS l, (SELECT count(*) FROM installments) AS i, \
             (SELECT count(*) FROM consents) AS k",
        )
        .fetch_one(&self.pool)
        .await?;
        let n = |c: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(c)? as u64) };
        Ok(Counts {
            borrowers: n("b")?,
            contacts_current: n("cc")?,
            contacts_retired: n("cr")?,
            loans: n("l")?,
            installments: n("i")?,
            consents: n("k")?,
        })
    }
}

struct PgImport {
    tx: Transaction<'static, Postgres>,
    /// For the statistics refresh after the commit.
    pool: PgPool,
    keys: std::sync::Arc<Keyring>,
    at: DateTime<Utc>,
    report: ImportReport,
    /// Data keys of the borrowers upserted most recently, for sealing their contacts.
    data_keys: KeyCache,
    /// Ids above these were taken by this import (identities only grow), so such a borrower has
    /// no contact points yet and such a loan no installments: their rows need no lookup and go
    /// in by COPY. Should another writer create one concurrently, the unique indexes refuse the
    /// import rather than let it write a duplicate.
    borrowers_above: i64,
    loans_above: i64,
    /// Installments of new loans waiting to be copied in.
    pending_copy: Vec<(LoanId, Installment)>,
}

/// Rows gathered before one `COPY`.
const COPY_BATCH: usize = 50_000;

#[async_trait]
impl ImportTx for PgImport {
    async fn upsert_borrowers(&mut self, rows: Vec<Borrower>) -> Result<Vec<BorrowerId>> {
        let exts: Vec<&str> = rows.iter().map(|b| b.external_id.as_str()).collect();
        let existing = sqlx::query(
            "SELECT b.id, b.external_id, b.name_enc, b.national_id_scheme, b.national_id_enc, b.national_id_bidx, b.locale, \
             b.time_zone, b.jurisdiction, k.wrapped_key FROM borrowers b JOIN borrower_keys k ON k.borrower_id = b.id \
             WHERE b.external_id = ANY($1)",
        )
        .bind(&exts)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut found: HashMap<String, (i64, Option<Vec<u8>>, BorrowerRow)> = HashMap::with_capacity(existing.len());
        for r in &existing {
            let row = borrower_row(r)?;
            found.insert(
                row.external_id.clone(),
                (r.try_get("id")?, r.try_get("wrapped_key")?, row),
            );
        }

        let mut ids: Vec<Option<BorrowerId>> = vec![None; rows.len()];
        let mut new_rows = Vec::new();
        let mut new_keys = Vec::new();
        let mut new_pos = Vec::new();
        for (i, b) in rows.iter().enumerate() {
            match found.get(b.external_id.as_str()) {
                None => {
                    let key = DataKey::generate();
                    new_rows.push(BorrowerRow::seal(b, &key.sealer(), &self.keys));
                    new_keys.push(key);
                    new_pos.push(i);
                }
                Some((_, None, _)) => {
                    return Err(StoreError::Conflict(format!(
                        "borrower {} was erased; an erased borrower cannot be imported again under the same id",
                        b.external_id
                    )))
                }
                Some((id, Some(wrapped), stored)) => {
                    let id = BorrowerId(*id);
                    let key = self.keys.unwrap_key(wrapped)?;
                    if stored.open(&key.sealer())? == *b {
                        self.report.borrowers_unchanged += 1;
                    } else {
                        let row = BorrowerRow::seal(b, &key.sealer(), &self.keys);
                        sqlx::query(
                            "UPDATE borrowers SET name_enc = $2, national_id_scheme = $3, national_id_enc = $4, national_id_bidx = $5, \
                             locale = $6, time_zone = $7, jurisdiction = $8, updated_at = $9 WHERE id = $1",
                        )
                        .bind(id.0)
                        .bind(row.name_enc)
                        .bind(row.national_id_scheme)
                        .bind(row.national_id_enc)
                        .bind(row.national_id_bidx)
                        .bind(row.locale)
                        .bind(row.time_zone)
                        .bind(row.jurisdiction)
                        .bind(self.at)
                        .execute(&mut *self.tx)
                        .await?;
                        self.report.borrowers_updated += 1;
                    }
                    self.data_keys.insert(id, key);
                    ids[i] = Some(id);
                }
            }
        }
        if !new_rows.is_empty() {
            let col = |f: fn(&BorrowerRow) -> String| new_rows.iter().map(f).collect::<Vec<_>>();
            let new_ids: Vec<i64> = sqlx::query_scalar(
                "INSERT INTO borrowers (external_id, name_enc, national_id_scheme, national_id_enc, national_id_bidx, locale, \
                 time_zone, jurisdiction, created_at, updated_at) \
                 SELECT e, n, s, ie, ib, l, tz, j, $9, $9 FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::bytea[], $5::bytea[], \
                 $6::text[], $7::text[], $8::text[]) WITH ORDINALITY AS u(e, n, s, ie, ib, l, tz, j, o) ORDER BY o RETURNING id",
            )
            .bind(col(|r| r.external_id.clone()))
            .bind(new_rows.iter().map(|r| r.name_enc.clone()).collect::<Vec<_>>())
            .bind(new_rows.iter().map(|r| r.national_id_scheme.clone()).collect::<Vec<_>>())
            .bind(new_rows.iter().map(|r| r.national_id_enc.clone()).collect::<Vec<_>>())
            .bind(new_rows.iter().map(|r| r.national_id_bidx.clone()).collect::<Vec<_>>())
            .bind(col(|r| r.locale.clone()))
            .bind(col(|r| r.time_zone.clone()))
            .bind(col(|r| r.jurisdiction.clone()))
            .bind(self.at)
            .fetch_all(&mut *self.tx)
            .await?;
            sqlx::query(
                "INSERT INTO borrower_keys (borrower_id, key_id, wrapped_key, created_at) \
                 SELECT b, $2, w, $4 FROM UNNEST($1::bigint[], $3::bytea[]) AS u(b, w)",
            )
            .bind(&new_ids)
            .bind(self.keys.key_id())
            .bind(new_keys.iter().map(|k| self.keys.wrap(k)).collect::<Vec<_>>())
            .bind(self.at)
            .execute(&mut *self.tx)
            .await?;
            self.report.borrowers_created += new_ids.len() as u64;
            for ((pos, id), key) in new_pos.into_iter().zip(new_ids).zip(new_keys) {
                ids[pos] = Some(BorrowerId(id));
                self.data_keys.insert(BorrowerId(id), key);
            }
        }
        // Every position was filled: either from `found` or from the insert's returned ids.
        Ok(ids.into_iter().map(|i| i.expect("every borrower has an id")).collect())
    }

    async fn upsert_contacts(&mut self, rows: Vec<(BorrowerId, ContactPoint)>) -> Result<()> {
        // Borrowers created by this import have no contact points yet: look up only the others.
        let existing: Vec<i64> = rows
            .iter()
            .filter(|(b, _)| b.0 <= self.borrowers_above)
            .map(|(b, _)| b.0)
            .collect();
        let current = if existing.is_empty() {
            HashMap::new()
        } else {
            current_slots(&mut self.tx, &existing).await?
        };
        let mut add_b = Vec::new();
        let mut add_rows = Vec::new();
        let mut replace_b = Vec::new();
        let mut replace_rows = Vec::new();
        // Keys that left the cache are fetched for the whole batch in one query.
        let mut missing: Vec<i64> = rows
            .iter()
            .map(|(b, _)| b.0)
            .filter(|b| self.data_keys.get(&BorrowerId(*b)).is_none())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let found: Vec<(i64, Option<Vec<u8>>)> =
                sqlx::query_as("SELECT borrower_id, wrapped_key FROM borrower_keys WHERE borrower_id = ANY($1)")
                    .bind(&missing)
                    .fetch_all(&mut *self.tx)
                    .await?;
            for (b, wrapped) in found {
                let wrapped = wrapped.ok_or(crate::CryptoError::Shredded)?;
                self.data_keys.insert(BorrowerId(b), self.keys.unwrap_key(&wrapped)?);
            }
        }
        for (borrower, point) in &rows {
            let sealer = self
                .data_keys
                .get(borrower)
                .ok_or_else(|| StoreError::NotFound {
                    what: "data key of borrower",
                    id: borrower.to_string(),
                })?
                .sealer();
            let row = ContactRow::seal(point, &sealer, &self.keys);
            match codec::plan_slot(current.get(&(borrower.0, row.slot.clone())), &row) {
                SlotAction::Add => {
                    add_b.push(borrower.0);
                    add_rows.push(row);
                }
                SlotAction::Unchanged(_) => self.report.contacts_unchanged += 1,
                SlotAction::Verify(id, at) => {
                    mark(
                        &mut self.tx,
                        id,
                        ContactEventKind::Verified,
                        at,
                        "book",
                        "as stated in book",
                    )
                    .await?;
                    self.report.contacts_verified += 1;
                }
                SlotAction::Replace(old) => {
                    mark(
                        &mut self.tx,
                        old,
                        ContactEventKind::Retired,
                        self.at,
                        "book",
                        REPLACED_BY_BOOK,
                    )
                    .await?;
                    replace_b.push(borrower.0);
                    replace_rows.push(row);
                }
            }
        }
        self.report.contacts_added += add_rows.len() as u64;
        self.report.contacts_replaced += replace_rows.len() as u64;
        add_b.extend(replace_b);
        add_rows.extend(replace_rows);
        insert_contacts(&mut self.tx, &add_b, &add_rows, self.at, "book").await?;
        Ok(())
    }

    async fn upsert_loans(&mut self, rows: Vec<(BorrowerId, Loan)>) -> Result<Vec<LoanId>> {
        if rows.is_empty() {
            return Ok(vec![]);
        }
        let out: Vec<(i64, i64)> = sqlx::query_as(
            "INSERT INTO loans (external_id, borrower_id, product, principal_minor, currency, disbursed_on, updated_at) \
             SELECT e, b, p, m, c, d, $7 FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::date[]) \
             WITH ORDINALITY AS u(e, b, p, m, c, d, o) ORDER BY o \
             ON CONFLICT (external_id) DO UPDATE SET product = excluded.product, principal_minor = excluded.principal_minor, \
             currency = excluded.currency, disbursed_on = excluded.disbursed_on, updated_at = excluded.updated_at \
             RETURNING id, borrower_id",
        )
        .bind(rows.iter().map(|(_, l)| l.external_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(b, _)| b.0).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, l)| l.product.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, l)| l.principal.minor()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, l)| l.principal.currency().as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, l)| l.disbursed_on).collect::<Vec<_>>())
        .bind(self.at)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for ((borrower, loan), (id, owner)) in rows.iter().zip(out) {
            if owner != borrower.0 {
                return Err(StoreError::Conflict(format!(
                    "loan {} already belongs to another borrower; a loan cannot change borrower",
                    loan.external_id
                )));
            }
            ids.push(LoanId(id));
        }
        self.report.loans_written += rows.len() as u64;
        Ok(ids)
    }

    async fn upsert_installments(&mut self, rows: Vec<(LoanId, Installment)>) -> Result<()> {
        let n = rows.len() as u64;
        let (fresh, known): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(l, _)| l.0 > self.loans_above);
        // Fresh rows gather into large COPYs: per-COPY overhead dominates at a few thousand rows.
        self.pending_copy.extend(fresh);
        if self.pending_copy.len() >= COPY_BATCH {
            let rows = std::mem::take(&mut self.pending_copy);
            copy_installments(&mut self.tx, &rows, self.at).await?;
        }
        upsert_installments(&mut self.tx, &known, self.at).await?;
        self.report.installments_written += n;
        Ok(())
    }

    async fn add_consents(&mut self, rows: Vec<(BorrowerId, Consent)>) -> Result<()> {
        self.report.consents_added += insert_consents(&mut self.tx, &rows).await?;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<ImportReport> {
        let rows = std::mem::take(&mut self.pending_copy);
        copy_installments(&mut self.tx, &rows, self.at).await?;
        let report = self.report;
        self.tx.commit().await?;
        // A bulk import changes the tables faster than autovacuum notices; without fresh
        // statistics the planner's first passes get plans for empty tables, and until vacuum
        // marks the new pages all-visible every read of a covering index still visits the
        // table (and the first reads set hint bits, writing the pages again). A big import is
        // followed by VACUUM and ANALYZE (6 s for a million borrowers; the first planning pass
        // then took 34 s instead of 41).
        if report.installments_written >= 10_000 {
            sqlx::query("VACUUM (ANALYZE) borrowers, borrower_keys, contact_points, loans, installments, consents")
                .execute(&self.pool)
                .await?;
        }
        Ok(report)
    }
}

/// `url` with its database name replaced by `db` (query parameters kept).
pub fn url_with_database(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map(|(b, q)| (b, Some(q))).unwrap_or((url, None));
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let server = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

fn check_name(db: &str) -> Result<()> {
    if db.is_empty()
        || db.len() > 63
        || !db
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StoreError::Conflict(format!(
            "{db:?} is not a plain database name (a-z, 0-9, _)"
        )));
    }
    Ok(())
}

/// Creates database `db` on the server `admin_url` connects to (for tests and benchmarks).
pub async fn create_database(admin_url: &str, db: &str) -> Result<()> {
    check_name(db)?;
    let admin = PgPool::connect(admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {db}")).execute(&admin).await?;
    admin.close().await;
    Ok(())
}

/// Drops database `db`, disconnecting anyone still on it.
/// Cuts database `db` off — new connections refused, every session of it terminated — or lets
/// it be reached again: a database restart as the nodes on it see one (for drills and tests;
/// other databases on the server are untouched).
pub async fn set_database_reachable(admin_url: &str, db: &str, reachable: bool) -> Result<()> {
    check_name(db)?;
    let admin = PgPool::connect(admin_url).await?;
    sqlx::query(&format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS {reachable}"))
        .execute(&admin)
        .await?;
    if !reachable {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(db)
        .execute(&admin)
        .await?;
    }
    admin.close().await;
    Ok(())
}

pub async fn drop_database(admin_url: &str, db: &str) -> Result<()> {
    check_name(db)?;
    let admin = PgPool::connect(admin_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&admin)
        .await?;
    admin.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_with_database() {
        use super::url_with_database as u;
        assert_eq!(u("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(
            u("postgres://u@h/test?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(u("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
