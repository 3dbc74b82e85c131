//! The embedded back end: one SQLite file in WAL mode, driven by `rusqlite` on blocking threads.
//!
//! `rusqlite` rather than an async driver because the import path is a tight loop of prepared
//! statements inside one transaction, which a synchronous driver runs several times faster; the
//! async `Store` methods hand each call to `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use reachline_domain::{
    Borrower, BorrowerId, Consent, ContactId, ContactPoint, ExternalId, Installment, InstallmentId, Loan, LoanId,
    Money, PhoneNumber,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::codec::{self, ts_from_micros, ts_micros, BorrowerRow, ContactRow, CurrentSlot, KeyCache, SlotAction};
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

pub use ledger::SqliteLedger;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_foundation.sql"),
    include_str!("../../migrations/sqlite/0002_ledger.sql"),
    include_str!("../../migrations/sqlite/0003_intel.sql"),
    include_str!("../../migrations/sqlite/0004_engine.sql"),
    include_str!("../../migrations/sqlite/0005_open_installments.sql"),
    include_str!("../../migrations/sqlite/0006_wake_seq.sql"),
    include_str!("../../migrations/sqlite/0007_server.sql"),
    include_str!("../../migrations/sqlite/0008_operators.sql"),
    include_str!("../../migrations/sqlite/0009_selfservice.sql"),
    include_str!("../../migrations/sqlite/0010_preferences.sql"),
    include_str!("../../migrations/sqlite/0011_verification_receipts.sql"),
    include_str!("../../migrations/sqlite/0012_privacy.sql"),
    include_str!("../../migrations/sqlite/0013_provider_ids_by_outbox.sql"),
    include_str!("../../migrations/sqlite/0014_unmatched_receipts.sql"),
    include_str!("../../migrations/sqlite/0015_view_indexes.sql"),
    include_str!("../../migrations/sqlite/0016_loan_view_index.sql"),
    include_str!("../../migrations/sqlite/0017_dispatch_holds.sql"),
];

/// Page cache of an import's connection, in KiB.
const IMPORT_CACHE_KIB: i64 = 160 * 1024;

pub struct SqliteStore {
    path: PathBuf,
    /// The one writer (SQLite takes one at a time).
    conn: Arc<Mutex<Connection>>,
    /// Read-only connections for the planner's reads, which WAL lets run beside the writer
    /// and each other.
    readers: Arc<[Mutex<Connection>]>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    keys: Arc<Keyring>,
}

/// The writer connection of each database file open in this process, by its path.
static WRITERS: std::sync::LazyLock<Mutex<HashMap<PathBuf, std::sync::Weak<Mutex<Connection>>>>> =
    std::sync::LazyLock::new(Default::default);

/// This process's one writer of the database file at `path` (opened and migrated if there is
/// none yet): the store and the ledger on one file share it. SQLite lets one connection write
/// at a time; two connections of one process that both write would take turns on the file's
/// lock, each retrying on a timer (`busy_wait`) and each emptying the other's page cache with
/// every commit. Measured under receipt webhooks, whose batches and ledger commits overlap,
/// the two connections spent a third of their time waiting on each other; on one connection
/// they take turns on its mutex and are woken as soon as it is free.
pub(crate) fn shared_writer(path: &Path) -> Result<Arc<Mutex<Connection>>> {
    // The directory's canonical name: the file itself may not exist yet.
    let key = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .map(|d| d.join(name))
        .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    };
    let mut writers = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(w) = writers.get(&key).and_then(std::sync::Weak::upgrade) {
        return Ok(w);
    }
    let mut c = connect(path)?;
    migrate(&mut c)?;
    let w = Arc::new(Mutex::new(c));
    writers.retain(|_, w| w.strong_count() > 0);
    writers.insert(key, Arc::downgrade(&w));
    Ok(w)
}

/// Read connections per store.
const READERS: usize = 2;
/// How much of the file each reader maps (mapped pages are the OS's page cache, shared, and
/// count in the process's resident size only while touched).
const READER_MMAP_BYTES: i64 = 1 << 30;

/// Waits for another connection's write lock (the store's writer and the ledger's take turns on
/// one file). SQLite's own handler, behind `busy_timeout`, sleeps 1, 2, 5, 10… ms between tries,
/// while a lock here is held for a fraction of a millisecond: the 90-day demo met a lock about
/// 4,000 times and spent a quarter of its time asleep on them. This one tries again after 50 µs,
/// backing off to 1 ms, and gives up (`SQLITE_BUSY`) after about 10 s, as the pragma did.
fn busy_wait(attempt: i32) -> bool {
    const GIVE_UP: i32 = 10_000;
    if attempt >= GIVE_UP {
        return false;
    }
    let micros = (50u64 << attempt.clamp(0, 5)).min(1_000);
    std::thread::sleep(std::time::Duration::from_micros(micros));
    true
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_handler(Some(busy_wait))?;
    conn.pragma_update(None, "cache_size", -65_536)?;
    // Deleted and replaced content (a freed page, a shorter value written over a longer one) is
    // overwritten with zeros, so no copy of a destroyed key or a blanked ciphertext lingers in
    // the file's free space after an erasure.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let migrations =
        rusqlite_migration::Migrations::new(MIGRATIONS.iter().map(|m| rusqlite_migration::M::up(m)).collect());
    migrations
        .to_latest(conn)
        .map_err(|e| StoreError::Migration(e.to_string()))
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database file at `path`.
    pub async fn open(path: impl AsRef<Path>, keys: Keyring) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let (conn, readers) = blocking(move || {
            let c = shared_writer(&p)?;
            let mut readers = Vec::with_capacity(READERS);
            for _ in 0..READERS {
                let r = connect(&p)?;
                r.pragma_update(None, "query_only", "ON")?;
                // Every write by another connection empties a connection's page cache; a reader
                // that maps the file reads pages in place instead of copying them back in
                // (measured: a planning pass over 100,000 borrowers 0.68 s → 0.53 s).
                r.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
                readers.push(Mutex::new(r));
            }
            Ok((c, readers))
        })
        .await?;
        Ok(Self {
            path,
            conn,
            readers: readers.into(),
            next_reader: Arc::default(),
            keys: Arc::new(keys),
        })
    }

    /// Runs a read-only `f` on one of the read connections on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Keyring) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let keys = self.keys.clone();
        let first = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        blocking(move || {
            // A free reader if there is one, else wait for the next in turn.
            let n = readers.len();
            let mut c = (0..n)
                .find_map(|k| readers[(first + k) % n].try_lock().ok())
                .unwrap_or_else(|| readers[first % n].lock().unwrap_or_else(|p| p.into_inner()));
            f(&mut c, &keys)
        })
        .await
    }

    /// Runs `f` on the shared connection on a blocking thread.
    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Keyring) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        let keys = self.keys.clone();
        blocking(move || {
            // A poisoned lock means a panic mid-call; SQLite rolled back whatever it had open,
            // so the connection itself is still usable.
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c, &keys)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

pub(super) fn sealer_for(c: &Connection, keys: &Keyring, borrower: BorrowerId) -> Result<Sealer> {
    Ok(data_key_for(c, keys, borrower)?.sealer())
}

fn data_key_for(c: &Connection, keys: &Keyring, borrower: BorrowerId) -> Result<DataKey> {
    let wrapped: Option<Option<Vec<u8>>> = c
        .prepare_cached("SELECT wrapped_key FROM borrower_keys WHERE borrower_id = ?1")?
        .query_row([borrower.0], |r| r.get(0))
        .optional()?;
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

/// A contact row as SQLite returns it; dates and times still text, parsed where errors are typed.
struct RawContact {
    id: i64,
    borrower_id: i64,
    row: ContactRow,
    bound_since: String,
    verified_at: Option<i64>,
    added_at: i64,
    retired_at: Option<i64>,
    retire_reason: Option<String>,
}

fn contact_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawContact> {
    Ok(RawContact {
        id: r.get(0)?,
        borrower_id: r.get(1)?,
        row: ContactRow {
            slot: r.get(2)?,
            kind: r.get(3)?,
            role: r.get(4)?,
            relation: r.get(5)?,
            line_type: r.get(6)?,
            address_enc: r.get(7)?,
            address_bidx: r.get(8)?,
            holder_name_enc: r.get(9)?,
            bound_since: chrono::NaiveDate::MIN,
            source: r.get(11)?,
            verified_at: None,
        },
        bound_since: r.get(10)?,
        verified_at: r.get(12)?,
        added_at: r.get(13)?,
        retired_at: r.get(14)?,
        retire_reason: r.get(15)?,
    })
}

fn query_contacts(
    c: &Connection,
    keys: &Keyring,
    sql_tail: &str,
    param: &dyn rusqlite::ToSql,
) -> Result<Vec<ContactRecord>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {CONTACT_COLS} FROM contact_points {sql_tail}"))?;
    let rows = stmt
        .query_map([param], contact_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut sealers: HashMap<BorrowerId, Sealer> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for mut raw in rows {
        let borrower_id = BorrowerId(raw.borrower_id);
        let sealer = match sealers.get(&borrower_id) {
            Some(s) => s.clone(),
            None => {
                let s = sealer_for(c, keys, borrower_id)?;
                sealers.insert(borrower_id, s.clone());
                s
            }
        };
        raw.row.bound_since = codec::date_parse(&raw.bound_since)?;
        raw.row.verified_at = raw.verified_at.map(ts_from_micros).transpose()?;
        out.push(ContactRecord {
            id: ContactId(raw.id),
            borrower_id,
            point: raw.row.open(&sealer)?,
            added_at: ts_from_micros(raw.added_at)?,
            retired: match raw.retired_at {
                Some(at) => Some(Retirement {
                    at: ts_from_micros(at)?,
                    reason: raw.retire_reason.unwrap_or_default(),
                }),
                None => None,
            },
        });
    }
    Ok(out)
}

pub(super) fn insert_contact(
    c: &Connection,
    borrower: BorrowerId,
    row: &ContactRow,
    at: i64,
    actor: &str,
) -> Result<ContactId> {
    c.prepare_cached(
        "INSERT INTO contact_points (borrower_id, slot, kind, role, relation, line_type, address_enc, address_bidx, \
         holder_name_enc, bound_since, source, verified_at, added_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        borrower.0,
        row.slot,
        row.kind,
        row.role,
        row.relation,
        row.line_type,
        row.address_enc,
        row.address_bidx,
        row.holder_name_enc,
        row.bound_since.to_string(),
        row.source,
        row.verified_at.map(ts_micros),
        at,
    ])?;
    let id = ContactId(c.last_insert_rowid());
    insert_event(c, id, borrower, ContactEventKind::Added, at, actor, None)?;
    if let Some(v) = row.verified_at {
        insert_event(
            c,
            id,
            borrower,
            ContactEventKind::Verified,
            ts_micros(v),
            actor,
            Some("as stated at entry"),
        )?;
    }
    Ok(id)
}

fn insert_event(
    c: &Connection,
    contact: ContactId,
    borrower: BorrowerId,
    kind: ContactEventKind,
    at: i64,
    actor: &str,
    detail: Option<&str>,
) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO contact_events (contact_id, borrower_id, event, at, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![contact.0, borrower.0, kind.as_str(), at, actor, detail])?;
    Ok(())
}

/// Retires or verifies a current contact point and records the event, in one step: the
/// `detail` is the retirement reason or the verification method.
pub(super) fn mark(
    c: &Connection,
    contact: ContactId,
    kind: ContactEventKind,
    at: i64,
    actor: &str,
    detail: &str,
) -> Result<()> {
    let borrower: Option<i64> = match kind {
        ContactEventKind::Retired => c
            .prepare_cached(
                "UPDATE contact_points SET retired_at = ?2, retire_reason = ?3 WHERE id = ?1 AND retired_at IS NULL \
                 RETURNING borrower_id",
            )?
            .query_row(params![contact.0, at, detail], |r| r.get(0)),
        ContactEventKind::Verified => c
            .prepare_cached(
                "UPDATE contact_points SET verified_at = ?2 WHERE id = ?1 AND retired_at IS NULL RETURNING borrower_id",
            )?
            .query_row(params![contact.0, at], |r| r.get(0)),
        ContactEventKind::Added => unreachable!("a contact point is added by insert_contact"),
    }
    .optional()?;
    let borrower = borrower.ok_or_else(|| StoreError::NotFound {
        what: "current contact point",
        id: contact.to_string(),
    })?;
    insert_event(c, contact, BorrowerId(borrower), kind, at, actor, Some(detail))
}

pub(super) fn current_slot(c: &Connection, borrower: BorrowerId, slot: &str) -> Result<Option<CurrentSlot>> {
    Ok(c.prepare_cached(
        "SELECT id, kind, address_bidx, verified_at FROM contact_points WHERE borrower_id = ?1 AND slot = ?2 AND retired_at IS NULL",
    )?
    .query_row(params![borrower.0, slot], |r| {
        let v: Option<i64> = r.get(3)?;
        Ok(CurrentSlot {
            contact_id: ContactId(r.get(0)?),
            kind: r.get(1)?,
            address_bidx: r.get(2)?,
            verified_at: v.and_then(|us| ts_from_micros(us).ok()),
        })
    })
    .optional()?)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn begin_import(&self, at: DateTime<Utc>) -> Result<Box<dyn ImportTx>> {
        let path = self.path.clone();
        let conn = blocking(move || {
            let c = connect(&path)?;
            // Take the write lock now, so a concurrent writer fails fast instead of midway.
            // A bulk import touches index pages all over; a larger cache keeps them from being
            // written to the WAL again and again (the import's memory figure includes it).
            c.pragma_update(None, "cache_size", -IMPORT_CACHE_KIB)?;
            c.execute_batch("BEGIN IMMEDIATE")?;
            let top: i64 = c.query_row("SELECT coalesce(max(id), 0) FROM borrowers", [], |r| r.get(0))?;
            Ok((c, top))
        })
        .await?;
        Ok(Box::new(SqliteImport {
            conn: Some(conn.0),
            keys: self.keys.clone(),
            at: ts_micros(at),
            report: ImportReport::default(),
            data_keys: KeyCache::new(),
            created_above: conn.1,
        }))
    }

    async fn borrower_by_external_id(&self, id: &ExternalId) -> Result<Option<BorrowerRecord>> {
        let ext = id.as_str().to_string();
        self.with(move |c, keys| {
            let row = c
                .prepare_cached(
                    "SELECT id, external_id, name_enc, national_id_scheme, national_id_enc, national_id_bidx, locale, \
                     time_zone, jurisdiction, created_at, updated_at FROM borrowers WHERE external_id = ?1",
                )?
                .query_row([&ext], |r| {
                    Ok((
                        BorrowerId(r.get(0)?),
                        BorrowerRow {
                            external_id: r.get(1)?,
                            name_enc: r.get(2)?,
                            national_id_scheme: r.get(3)?,
                            national_id_enc: r.get(4)?,
                            national_id_bidx: r.get(5)?,
                            locale: r.get(6)?,
                            time_zone: r.get(7)?,
                            jurisdiction: r.get(8)?,
                        },
                        r.get::<_, i64>(9)?,
                        r.get::<_, i64>(10)?,
                    ))
                })
                .optional()?;
            let Some((bid, row, created, updated)) = row else {
                return Ok(None);
            };
            let sealer = sealer_for(c, keys, bid)?;
            Ok(Some(BorrowerRecord {
                id: bid,
                borrower: row.open(&sealer)?,
                created_at: ts_from_micros(created)?,
                updated_at: ts_from_micros(updated)?,
            }))
        })
        .await
    }

    async fn contacts(&self, borrower: BorrowerId) -> Result<Vec<ContactRecord>> {
        self.with(move |c, keys| {
            query_contacts(
                c,
                keys,
                "WHERE borrower_id = ?1 ORDER BY retired_at IS NOT NULL, added_at, id",
                &borrower.0,
            )
        })
        .await
    }

    async fn contact_history(&self, borrower: BorrowerId) -> Result<Vec<ContactEvent>> {
        self.with(move |c, _| {
            let mut stmt = c.prepare_cached(
                "SELECT contact_id, event, at, actor, detail FROM contact_events WHERE borrower_id = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map([borrower.0], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get(3)?,
                        r.get(4)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(cid, ev, at, actor, detail)| {
                    Ok(ContactEvent {
                        contact_id: ContactId(cid),
                        borrower_id: borrower,
                        kind: ev.parse().map_err(codec::corrupt)?,
                        at: ts_from_micros(at)?,
                        actor,
                        detail,
                    })
                })
                .collect()
        })
        .await
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
        let point = point.clone();
        let actor = actor.to_string();
        let reason = replaces_reason.to_string();
        self.with(move |c, keys| {
            let tx = c.transaction()?;
            let sealer = sealer_for(&tx, keys, borrower)?;
            let row = ContactRow::seal(&point, &sealer, keys);
            let at = ts_micros(at);
            if let Some(cur) = current_slot(&tx, borrower, &row.slot)? {
                mark(&tx, cur.contact_id, ContactEventKind::Retired, at, &actor, &reason)?;
            }
            let id = insert_contact(&tx, borrower, &row, at, &actor)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn verify_contact(&self, contact: ContactId, at: DateTime<Utc>, actor: &str, method: &str) -> Result<()> {
        let (actor, method) = (actor.to_string(), method.to_string());
        self.with(move |c, _| {
            let tx = c.transaction()?;
            mark(&tx, contact, ContactEventKind::Verified, ts_micros(at), &actor, &method)?;
            Ok(tx.commit()?)
        })
        .await
    }

    async fn retire_contact(&self, contact: ContactId, at: DateTime<Utc>, actor: &str, reason: &str) -> Result<()> {
        let (actor, reason) = (actor.to_string(), reason.to_string());
        self.with(move |c, _| {
            let tx = c.transaction()?;
            mark(&tx, contact, ContactEventKind::Retired, ts_micros(at), &actor, &reason)?;
            Ok(tx.commit()?)
        })
        .await
    }

    async fn contacts_by_phone(&self, number: &PhoneNumber) -> Result<Vec<ContactRecord>> {
        let bidx = codec::phone_bidx(&self.keys, number).to_vec();
        self.with(move |c, keys| query_contacts(c, keys, "WHERE address_bidx = ?1 ORDER BY added_at, id", &bidx))
            .await
    }

    async fn contacts_by_address(&self, address: &reachline_domain::ContactAddress) -> Result<Vec<ContactRecord>> {
        let bidx = codec::address_bidx(&self.keys, address).to_vec();
        self.with(move |c, keys| query_contacts(c, keys, "WHERE address_bidx = ?1 ORDER BY added_at, id", &bidx))
            .await
    }

    async fn loans(&self, borrower: BorrowerId) -> Result<Vec<LoanRecord>> {
        self.with(move |c, _| {
            let mut stmt = c.prepare_cached(
                "SELECT l.id, l.external_id, b.external_id, l.product, l.principal_minor, l.currency, l.disbursed_on \
                 FROM loans l JOIN borrowers b ON b.id = l.borrower_id WHERE l.borrower_id = ?1 ORDER BY l.id",
            )?;
            let rows = stmt
                .query_map([borrower.0], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, ext, bext, product, principal, cur, disbursed)| {
                    Ok(LoanRecord {
                        id: LoanId(id),
                        borrower_id: borrower,
                        loan: Loan {
                            external_id: ExternalId::parse(&ext).map_err(codec::corrupt)?,
                            borrower: ExternalId::parse(&bext).map_err(codec::corrupt)?,
                            product,
                            principal: Money::from_minor(principal, cur.parse().map_err(codec::corrupt)?),
                            disbursed_on: codec::date_parse(&disbursed)?,
                        },
                    })
                })
                .collect()
        })
        .await
    }

    async fn installments(&self, loan: LoanId) -> Result<Vec<InstallmentRecord>> {
        self.with(move |c, _| {
            let mut stmt = c.prepare_cached(
                "SELECT i.id, l.external_id, i.seq, i.due_date, i.amount_due_minor, i.amount_paid_minor, i.currency, i.paid_at \
                 FROM installments i JOIN loans l ON l.id = i.loan_id WHERE i.loan_id = ?1 ORDER BY i.seq",
            )?;
            let rows = stmt
                .query_map([loan.0], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, lext, seq, due, amount_due, amount_paid, cur, paid_at)| {
                    let cur = cur.parse().map_err(codec::corrupt)?;
                    Ok(InstallmentRecord {
                        id: InstallmentId(id),
                        loan_id: loan,
                        installment: Installment {
                            loan: ExternalId::parse(&lext).map_err(codec::corrupt)?,
                            seq,
                            due_date: codec::date_parse(&due)?,
                            amount_due: Money::from_minor(amount_due, cur),
                            amount_paid: Money::from_minor(amount_paid, cur),
                            paid_at: paid_at.map(ts_from_micros).transpose()?,
                        },
                    })
                })
                .collect()
        })
        .await
    }

    async fn consents(&self, borrower: BorrowerId) -> Result<Vec<Consent>> {
        self.with(move |c, _| {
            let mut stmt = c.prepare_cached(
                "SELECT purpose, channel, state, at, source, text_version FROM consents WHERE borrower_id = ?1 ORDER BY at, id",
            )?;
            let rows = stmt
                .query_map([borrower.0], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(p, ch, st, at, src, tv)| codec::consent_from_columns(&p, &ch, &st, ts_from_micros(at)?, &src, tv))
                .collect()
        })
        .await
    }

    async fn record_consent(&self, borrower: BorrowerId, consent: &Consent) -> Result<()> {
        let consent = consent.clone();
        self.with(move |c, _| insert_consent(c, borrower, &consent).map(|_| ()))
            .await
    }

    async fn load_disconnects(
        &self,
        rows: Vec<(PhoneNumber, NaiveDate)>,
        source: &str,
        at: DateTime<Utc>,
    ) -> Result<u64> {
        let source = source.to_string();
        self.with(move |c, keys| {
            let tx = c.transaction()?;
            let mut added = 0u64;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO disconnects (number_bidx, disconnected_on, source, loaded_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                let at = codec::ts_micros(at);
                for (number, day) in &rows {
                    let bidx = codec::phone_bidx(keys, number);
                    added += stmt.execute(params![&bidx[..], day.to_string(), source, at])? as u64;
                }
            }
            tx.commit()?;
            Ok(added)
        })
        .await
    }

    async fn last_disconnect(&self, number: &PhoneNumber) -> Result<Option<NaiveDate>> {
        let bidx = codec::phone_bidx(&self.keys, number).to_vec();
        self.with(move |c, _| {
            let day: Option<String> = c
                .prepare_cached("SELECT max(disconnected_on) FROM disconnects WHERE number_bidx = ?1")?
                .query_row([&bidx], |r| r.get(0))?;
            day.map(|d| codec::date_parse(&d)).transpose()
        })
        .await
    }

    async fn counts(&self) -> Result<Counts> {
        self.with(|c, _| {
            let n = |sql: &str| -> Result<u64> { Ok(c.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64) };
            Ok(Counts {
                borrowers: n("SELECT count(*) FROM borrowers")?,
                contacts_current: n("SELECT count(*) FROM contact_points WHERE retired_at IS NULL")?,
                contacts_retired: n("SELECT count(*) FROM contact_points WHERE retired_at IS NOT NULL")?,
                loans: n("SELECT count(*) FROM loans")?,
                installments: n("SELECT count(*) FROM installments")?,
                consents: n("SELECT count(*) FROM consents")?,
            })
        })
        .await
    }
}

/// Inserts a consent event unless the same one is already recorded; returns whether it was new.
fn insert_consent(c: &Connection, borrower: BorrowerId, k: &Consent) -> Result<bool> {
    let n = c
        .prepare_cached(
            "INSERT INTO consents (borrower_id, purpose, channel, state, at, source, text_version) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            borrower.0,
            k.purpose.as_str(),
            codec::consent_channel(k),
            k.state.as_str(),
            ts_micros(k.at),
            k.source.as_str(),
            k.text_version,
        ])?;
    Ok(n == 1)
}

struct SqliteImport {
    /// Taken while a batch runs on a blocking thread, put back after.
    conn: Option<Connection>,
    keys: Arc<Keyring>,
    at: i64,
    report: ImportReport,
    /// Data keys of the borrowers upserted most recently, for sealing their contacts.
    data_keys: KeyCache,
    /// Borrowers with a larger id were created by this import (the write lock is held from its
    /// start), so they have no contact points yet and their slots need no lookup.
    created_above: i64,
}

struct ImportCtx<'a> {
    c: &'a Connection,
    keys: &'a Keyring,
    at: i64,
    report: &'a mut ImportReport,
    data_keys: &'a mut KeyCache,
    created_above: i64,
}

impl SqliteImport {
    async fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut ImportCtx<'_>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self
            .conn
            .take()
            .ok_or_else(|| StoreError::Conflict("import transaction used after an earlier batch failed".into()))?;
        let keys = self.keys.clone();
        let at = self.at;
        let mut report = self.report;
        let mut data_keys = std::mem::replace(&mut self.data_keys, KeyCache::new());
        let created_above = self.created_above;
        let (conn, report, data_keys, out) = blocking(move || {
            let out = f(&mut ImportCtx {
                c: &conn,
                keys: &keys,
                at,
                report: &mut report,
                data_keys: &mut data_keys,
                created_above,
            });
            Ok((conn, report, data_keys, out))
        })
        .await?;
        self.report = report;
        self.data_keys = data_keys;
        // After a failed batch the connection is dropped, which rolls the transaction back.
        if out.is_ok() {
            self.conn = Some(conn);
        }
        out
    }
}

fn upsert_borrower(x: &mut ImportCtx<'_>, b: &Borrower) -> Result<BorrowerId> {
    let existing: Option<(i64, Option<Vec<u8>>)> = x
        .c
        .prepare_cached(
            "SELECT b.id, k.wrapped_key FROM borrowers b JOIN borrower_keys k ON k.borrower_id = b.id WHERE b.external_id = ?1",
        )?
        .query_row([b.external_id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match existing {
        None => {
            let key = DataKey::generate();
            let row = BorrowerRow::seal(b, &key.sealer(), x.keys);
            x.c.prepare_cached(
                "INSERT INTO borrowers (external_id, name_enc, national_id_scheme, national_id_enc, national_id_bidx, \
                 locale, time_zone, jurisdiction, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            )?
            .execute(params![
                row.external_id,
                row.name_enc,
                row.national_id_scheme,
                row.national_id_enc,
                row.national_id_bidx,
                row.locale,
                row.time_zone,
                row.jurisdiction,
                x.at,
            ])?;
            let id = BorrowerId(x.c.last_insert_rowid());
            x.c.prepare_cached(
                "INSERT INTO borrower_keys (borrower_id, key_id, wrapped_key, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id.0, x.keys.key_id(), x.keys.wrap(&key), x.at])?;
            x.data_keys.insert(id, key);
            x.report.borrowers_created += 1;
            Ok(id)
        }
        Some((_, None)) => Err(StoreError::Conflict(format!(
            "borrower {} was erased; an erased borrower cannot be imported again under the same id",
            b.external_id
        ))),
        Some((id, Some(wrapped))) => {
            let id = BorrowerId(id);
            let key = x.keys.unwrap_key(&wrapped)?;
            let current = load_borrower_row(x.c, id)?.open(&key.sealer())?;
            if current == *b {
                x.report.borrowers_unchanged += 1;
            } else {
                let row = BorrowerRow::seal(b, &key.sealer(), x.keys);
                x.c.prepare_cached(
                    "UPDATE borrowers SET name_enc = ?2, national_id_scheme = ?3, national_id_enc = ?4, national_id_bidx = ?5, \
                     locale = ?6, time_zone = ?7, jurisdiction = ?8, updated_at = ?9 WHERE id = ?1",
                )?
                .execute(params![
                    id.0,
                    row.name_enc,
                    row.national_id_scheme,
                    row.national_id_enc,
                    row.national_id_bidx,
                    row.locale,
                    row.time_zone,
                    row.jurisdiction,
                    x.at,
                ])?;
                x.report.borrowers_updated += 1;
            }
            x.data_keys.insert(id, key);
            Ok(id)
        }
    }
}

fn load_borrower_row(c: &Connection, id: BorrowerId) -> Result<BorrowerRow> {
    Ok(c.prepare_cached(
        "SELECT external_id, name_enc, national_id_scheme, national_id_enc, national_id_bidx, locale, time_zone, jurisdiction \
         FROM borrowers WHERE id = ?1",
    )?
    .query_row([id.0], |r| {
        Ok(BorrowerRow {
            external_id: r.get(0)?,
            name_enc: r.get(1)?,
            national_id_scheme: r.get(2)?,
            national_id_enc: r.get(3)?,
            national_id_bidx: r.get(4)?,
            locale: r.get(5)?,
            time_zone: r.get(6)?,
            jurisdiction: r.get(7)?,
        })
    })?)
}

#[async_trait]
impl ImportTx for SqliteImport {
    async fn upsert_borrowers(&mut self, rows: Vec<Borrower>) -> Result<Vec<BorrowerId>> {
        self.run(move |x| rows.iter().map(|b| upsert_borrower(x, b)).collect())
            .await
    }

    async fn upsert_contacts(&mut self, rows: Vec<(BorrowerId, ContactPoint)>) -> Result<()> {
        self.run(move |x| {
            for (borrower, point) in &rows {
                let sealer = match x.data_keys.get(borrower) {
                    Some(k) => k.sealer(),
                    None => {
                        let k = data_key_for(x.c, x.keys, *borrower)?;
                        let s = k.sealer();
                        x.data_keys.insert(*borrower, k);
                        s
                    }
                };
                let row = ContactRow::seal(point, &sealer, x.keys);
                let current = if borrower.0 > x.created_above {
                    None
                } else {
                    current_slot(x.c, *borrower, &row.slot)?
                };
                match codec::plan_slot(current.as_ref(), &row) {
                    SlotAction::Add => {
                        insert_contact(x.c, *borrower, &row, x.at, "book")?;
                        x.report.contacts_added += 1;
                    }
                    SlotAction::Unchanged(_) => x.report.contacts_unchanged += 1,
                    SlotAction::Verify(id, at) => {
                        mark(
                            x.c,
                            id,
                            ContactEventKind::Verified,
                            ts_micros(at),
                            "book",
                            "as stated in book",
                        )?;
                        x.report.contacts_verified += 1;
                    }
                    SlotAction::Replace(old) => {
                        mark(x.c, old, ContactEventKind::Retired, x.at, "book", REPLACED_BY_BOOK)?;
                        insert_contact(x.c, *borrower, &row, x.at, "book")?;
                        x.report.contacts_replaced += 1;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn upsert_loans(&mut self, rows: Vec<(BorrowerId, Loan)>) -> Result<Vec<LoanId>> {
        self.run(move |x| {
            let mut stmt = x.c.prepare_cached(
                "INSERT INTO loans (external_id, borrower_id, product, principal_minor, currency, disbursed_on, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (external_id) DO UPDATE SET product = excluded.product, principal_minor = excluded.principal_minor, \
                 currency = excluded.currency, disbursed_on = excluded.disbursed_on, updated_at = excluded.updated_at \
                 RETURNING id, borrower_id",
            )?;
            let mut ids = Vec::with_capacity(rows.len());
            for (borrower, loan) in &rows {
                let (id, owner): (i64, i64) = stmt.query_row(
                    params![
                        loan.external_id.as_str(),
                        borrower.0,
                        loan.product,
                        loan.principal.minor(),
                        loan.principal.currency().as_str(),
                        loan.disbursed_on.to_string(),
                        x.at,
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if owner != borrower.0 {
                    return Err(StoreError::Conflict(format!(
                        "loan {} already belongs to another borrower; a loan cannot change borrower",
                        loan.external_id
                    )));
                }
                ids.push(LoanId(id));
            }
            x.report.loans_written += rows.len() as u64;
            Ok(ids)
        })
        .await
    }

    async fn upsert_installments(&mut self, rows: Vec<(LoanId, Installment)>) -> Result<()> {
        self.run(move |x| {
            let mut stmt = x.c.prepare_cached(
                "INSERT INTO installments (loan_id, seq, due_date, amount_due_minor, amount_paid_minor, currency, paid_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (loan_id, seq) DO UPDATE SET due_date = excluded.due_date, amount_due_minor = excluded.amount_due_minor, \
                 amount_paid_minor = excluded.amount_paid_minor, currency = excluded.currency, paid_at = excluded.paid_at, \
                 updated_at = excluded.updated_at",
            )?;
            for (loan, i) in &rows {
                stmt.execute(params![
                    loan.0,
                    i.seq,
                    i.due_date.to_string(),
                    i.amount_due.minor(),
                    i.amount_paid.minor(),
                    i.amount_due.currency().as_str(),
                    i.paid_at.map(ts_micros),
                    x.at,
                ])?;
            }
            x.report.installments_written += rows.len() as u64;
            Ok(())
        })
        .await
    }

    async fn add_consents(&mut self, rows: Vec<(BorrowerId, Consent)>) -> Result<()> {
        self.run(move |x| {
            for (borrower, consent) in &rows {
                if insert_consent(x.c, *borrower, consent)? {
                    x.report.consents_added += 1;
                }
            }
            Ok(())
        })
        .await
    }

    async fn commit(mut self: Box<Self>) -> Result<ImportReport> {
        let report = self.report;
        self.run(|x| Ok(x.c.execute_batch("COMMIT")?)).await?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    /// Every file in `migrations/sqlite` is applied, in its order: a file written and not
    /// listed would never run (PostgreSQL's `migrate!` reads the folder itself).
    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        let texts: Vec<String> = files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        assert_eq!(
            texts.len(),
            super::MIGRATIONS.len(),
            "files in {}: {files:?}",
            dir.display()
        );
        for (i, (file, text)) in files.iter().zip(&texts).enumerate() {
            assert_eq!(super::MIGRATIONS[i], text, "migration {i} is not {}", file.display());
        }
    }

    /// SQLite is built as `.cargo/config.toml` asks (`LIBSQLITE3_FLAGS`): without the shared
    /// page-cache group and the allocation counter, each a lock every connection takes (the
    /// planning pass's readers spent about a tenth of their time waking one another on them).
    #[test]
    fn sqlite_is_built_without_process_wide_locks() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let opts: Vec<String> = c
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            !opts.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "SQLite shares one page cache between connections: {opts:?}"
        );
        assert!(
            opts.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "SQLite counts its allocations under a lock: {opts:?}"
        );
    }
}
