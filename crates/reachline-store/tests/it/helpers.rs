//! Test harness: a fresh store per test on either back end, fixtures, and a raw dump of
//! everything a back end holds for the plaintext check.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use reachline_domain::national_id::IdScheme;
use reachline_domain::*;
use reachline_store::{postgres, postgres::PgStore, sqlite::SqliteStore, Keyring, Store};

/// A change [`Harness::edit_leaf`] makes to a stored leaf.
pub enum LeafEdit {
    Set(Vec<u8>),
    Delete,
    Insert { notice: Option<i64>, data: Vec<u8> },
}

pub struct Harness {
    pub store: Box<dyn Store>,
    pub keys: Keyring,
    kind: Kind,
}

enum Kind {
    Sqlite { dir: tempfile::TempDir },
    Postgres { admin_url: String, db: String },
}

impl Harness {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keyring::random("test");
        let store = SqliteStore::open(dir.path().join("t.db"), keys.clone()).await.unwrap();
        Self {
            store: Box::new(store),
            keys,
            kind: Kind::Sqlite { dir },
        }
    }

    /// A store on a fresh database of the server `REACHLINE_TEST_DATABASE_URL` names, or `None`
    /// (with a note on stderr) when it is not set. With `REACHLINE_TEST_REQUIRE_POSTGRES=1`, a
    /// missing URL fails the test instead, so CI cannot skip the suite by accident.
    pub async fn postgres() -> Option<Self> {
        let Ok(admin_url) = std::env::var("REACHLINE_TEST_DATABASE_URL") else {
            assert!(
                std::env::var("REACHLINE_TEST_REQUIRE_POSTGRES").is_err(),
                "REACHLINE_TEST_REQUIRE_POSTGRES is set but REACHLINE_TEST_DATABASE_URL is not"
            );
            eprintln!("REACHLINE_TEST_DATABASE_URL not set: PostgreSQL half of this story not run");
            return None;
        };
        let db = format!("rl_test_{}", rand::random::<u64>());
        postgres::create_database(&admin_url, &db)
            .await
            .expect("create a database on the test server");
        let keys = Keyring::random("test");
        let store = PgStore::connect(&postgres::url_with_database(&admin_url, &db), keys.clone())
            .await
            .unwrap();
        Some(Self {
            store: Box::new(store),
            keys,
            kind: Kind::Postgres { admin_url, db },
        })
    }

    /// The ledger tables of this harness's database.
    pub async fn ledger(&self) -> Box<dyn reachline_store::ledger::LedgerStore> {
        match &self.kind {
            Kind::Sqlite { dir } => Box::new(
                reachline_store::sqlite::SqliteLedger::open(dir.path().join("t.db"), self.keys.clone())
                    .await
                    .unwrap(),
            ),
            Kind::Postgres { admin_url, db } => Box::new(
                reachline_store::postgres::PgLedger::connect(
                    &postgres::url_with_database(admin_url, db),
                    self.keys.clone(),
                )
                .await
                .unwrap(),
            ),
        }
    }

    /// Another handle on this harness's database, as the engine sees it: each has its own
    /// connections, as two nodes (or two dispatchers) would.
    pub async fn engine(&self) -> Box<dyn reachline_store::engine::EngineStore> {
        match &self.kind {
            Kind::Sqlite { dir } => Box::new(
                SqliteStore::open(dir.path().join("t.db"), self.keys.clone())
                    .await
                    .unwrap(),
            ),
            Kind::Postgres { admin_url, db } => Box::new(
                PgStore::connect(&postgres::url_with_database(admin_url, db), self.keys.clone())
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Another handle on this harness's database, as the server sees it.
    pub async fn server(&self) -> std::sync::Arc<dyn reachline_store::server::ServerStore> {
        match &self.kind {
            Kind::Sqlite { dir } => std::sync::Arc::new(
                SqliteStore::open(dir.path().join("t.db"), self.keys.clone())
                    .await
                    .unwrap(),
            ),
            Kind::Postgres { admin_url, db } => std::sync::Arc::new(
                PgStore::connect(&postgres::url_with_database(admin_url, db), self.keys.clone())
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Another handle on this harness's database, as the self-service pages see it.
    pub async fn selfservice(&self) -> std::sync::Arc<dyn reachline_store::selfservice::SelfServiceStore> {
        match &self.kind {
            Kind::Sqlite { dir } => std::sync::Arc::new(
                SqliteStore::open(dir.path().join("t.db"), self.keys.clone())
                    .await
                    .unwrap(),
            ),
            Kind::Postgres { admin_url, db } => std::sync::Arc::new(
                PgStore::connect(&postgres::url_with_database(admin_url, db), self.keys.clone())
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Another handle on this harness's database, as erasure and retention see it.
    pub async fn privacy(&self) -> std::sync::Arc<dyn reachline_store::privacy::PrivacyStore> {
        match &self.kind {
            Kind::Sqlite { dir } => std::sync::Arc::new(
                SqliteStore::open(dir.path().join("t.db"), self.keys.clone())
                    .await
                    .unwrap(),
            ),
            Kind::Postgres { admin_url, db } => std::sync::Arc::new(
                PgStore::connect(&postgres::url_with_database(admin_url, db), self.keys.clone())
                    .await
                    .unwrap(),
            ),
        }
    }

    /// Runs one SQL statement straight on the database, with optional blob and integer
    /// parameters (`?1`/`$1` for the blob, `?2`/`$2` for the integer): how the tamper tests edit
    /// what the store wrote.
    pub async fn raw_exec(&self, sql: &str, blob: Option<Vec<u8>>, int: Option<i64>) {
        match &self.kind {
            Kind::Sqlite { dir } => {
                let c = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
                let sql = sql.replace('$', "?");
                match (blob, int) {
                    (Some(b), Some(i)) => c.execute(&sql, rusqlite::params![b, i]),
                    (None, Some(i)) => c.execute(&sql, rusqlite::params![rusqlite::types::Null, i]),
                    (None, None) => c.execute(&sql, []),
                    (Some(b), None) => c.execute(&sql, rusqlite::params![b]),
                }
                .unwrap();
            }
            Kind::Postgres { admin_url, db } => {
                let pool = sqlx::PgPool::connect(&postgres::url_with_database(admin_url, db))
                    .await
                    .unwrap();
                // Without a blob the integer is the only parameter: PostgreSQL numbers it $1.
                let sql = if blob.is_none() {
                    sql.replace("$2", "$1")
                } else {
                    sql.to_string()
                };
                let mut q = sqlx::query(&sql);
                if let Some(b) = blob {
                    q = q.bind(b);
                }
                if let Some(i) = int {
                    q = q.bind(i);
                }
                q.execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    /// Tampers with one stored leaf behind the store's back, wherever the back end keeps it:
    /// SQLite one row per leaf; PostgreSQL a row per leaf until its bundle of 256 is full, then
    /// an entry of the bundle's row (so a deleted entry shifts the ones after it, as a byte
    /// editor would).
    pub async fn edit_leaf(&self, index: u64, edit: LeafEdit) {
        let bundle = match self.pg_pool().await {
            None => None,
            Some(pool) => {
                let row: Option<(Vec<Option<i64>>, Vec<u8>)> =
                    sqlx::query_as("SELECT notices, data FROM ledger_bundles WHERE idx = $1")
                        .bind((index / 256) as i64)
                        .fetch_optional(&pool)
                        .await
                        .unwrap();
                row.map(|r| (pool, r))
            }
        };
        let Some((pool, (mut notices, data))) = bundle else {
            return match edit {
                LeafEdit::Set(data) => {
                    self.raw_exec(
                        "UPDATE ledger_leaves SET data = $1 WHERE idx = $2",
                        Some(data),
                        Some(index as i64),
                    )
                    .await
                }
                LeafEdit::Delete => {
                    self.raw_exec("DELETE FROM ledger_leaves WHERE idx = $2", None, Some(index as i64))
                        .await
                }
                LeafEdit::Insert { notice, data } => {
                    let notice = notice.map_or("NULL".to_string(), |n| n.to_string());
                    self.raw_exec(
                        &format!("INSERT INTO ledger_leaves (idx, notice, data) VALUES ($2, {notice}, $1)"),
                        Some(data),
                        Some(index as i64),
                    )
                    .await
                }
            };
        };
        let mut entries = reachline_ledger::tiles::parse_bundle(&data).unwrap();
        let k = (index % 256) as usize;
        match edit {
            LeafEdit::Set(data) => entries[k] = data,
            LeafEdit::Delete => {
                entries.remove(k);
                notices.remove(k);
            }
            LeafEdit::Insert { notice, data } => {
                entries.insert(k, data);
                notices.insert(k, notice);
            }
        }
        sqlx::query("UPDATE ledger_bundles SET notices = $1, data = $2 WHERE idx = $3")
            .bind(notices)
            .bind(reachline_ledger::tiles::encode_bundle(&entries).unwrap())
            .bind((index / 256) as i64)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }

    /// Removes every leaf from `index` on, as restoring a backup taken at that size would leave
    /// the log (on PostgreSQL, the bundle that was filling then holds single rows again).
    pub async fn truncate_leaves(&self, index: u64) {
        self.unbundle_leaves(index).await;
        self.raw_exec("DELETE FROM ledger_leaves WHERE idx >= $2", None, Some(index as i64))
            .await;
    }

    /// PostgreSQL: turns the bundles holding leaf `index` and after back into a row per leaf
    /// (the layout before migration `0014`). SQLite: nothing to do.
    pub async fn unbundle_leaves(&self, index: u64) {
        if let Some(pool) = self.pg_pool().await {
            let rows: Vec<(i64, Vec<Option<i64>>, Vec<u8>)> =
                sqlx::query_as("DELETE FROM ledger_bundles WHERE idx >= $1 RETURNING idx, notices, data")
                    .bind((index / 256) as i64)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            for (b, notices, data) in rows {
                let entries = reachline_ledger::tiles::parse_bundle(&data).unwrap();
                for (k, (notice, data)) in notices.into_iter().zip(entries).enumerate() {
                    sqlx::query("INSERT INTO ledger_leaves (idx, notice, data) VALUES ($1, $2, $3)")
                        .bind(b * 256 + k as i64)
                        .bind(notice)
                        .bind(data)
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }
            pool.close().await;
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.kind, Kind::Postgres { .. })
    }

    async fn pg_pool(&self) -> Option<sqlx::PgPool> {
        match &self.kind {
            Kind::Sqlite { .. } => None,
            Kind::Postgres { admin_url, db } => Some(
                sqlx::PgPool::connect(&postgres::url_with_database(admin_url, db))
                    .await
                    .unwrap(),
            ),
        }
    }

    pub async fn drop_database(self) {
        if let Kind::Postgres { admin_url, db } = &self.kind {
            drop(self.store);
            postgres::drop_database(admin_url, db).await.unwrap();
        }
    }

    /// Fails if any installment or contact event points at a row that does not exist (these two
    /// tables carry no foreign key; the store keeps them whole).
    pub async fn assert_no_orphans(&self) {
        let sql = "SELECT (SELECT count(*) FROM installments i WHERE NOT EXISTS (SELECT 1 FROM loans l WHERE l.id = i.loan_id)) \
                   + (SELECT count(*) FROM contact_events e WHERE NOT EXISTS \
                      (SELECT 1 FROM contact_points c WHERE c.id = e.contact_id AND c.borrower_id = e.borrower_id))";
        assert_eq!(self.raw_count(sql).await, 0, "orphaned installments or contact events");
    }

    /// One integer a query (without parameters) returns, read straight from the database.
    pub async fn raw_count(&self, sql: &str) -> i64 {
        match &self.kind {
            Kind::Sqlite { dir } => {
                let c = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
                c.query_row(sql, [], |r| r.get(0)).unwrap()
            }
            Kind::Postgres { admin_url, db } => {
                let pool = sqlx::PgPool::connect(&postgres::url_with_database(admin_url, db))
                    .await
                    .unwrap();
                let n = sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap();
                pool.close().await;
                n
            }
        }
    }

    /// Every byte the back end holds, as text a grep can search: the SQLite file (after folding
    /// the WAL in), or every PostgreSQL table rendered row by row.
    pub async fn raw_dump(&self) -> Vec<u8> {
        match &self.kind {
            Kind::Sqlite { dir } => {
                // Fold the WAL into the file through a second connection, then read every file.
                let c = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
                c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
                let mut all = Vec::new();
                for e in std::fs::read_dir(dir.path()).unwrap() {
                    all.extend(std::fs::read(e.unwrap().path()).unwrap());
                }
                all
            }
            Kind::Postgres { admin_url, db } => {
                let pool = sqlx::PgPool::connect(&postgres::url_with_database(admin_url, db))
                    .await
                    .unwrap();
                let tables: Vec<String> =
                    sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                let mut all = String::new();
                for t in tables {
                    let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT x::text FROM {t} x"))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                    all.push_str(&rows.join("\n"));
                }
                all.into_bytes()
            }
        }
    }
}

pub fn t(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
}

pub fn ext(s: &str) -> ExternalId {
    ExternalId::parse(s).unwrap()
}

pub fn borrower(id: &str, name: &str) -> Borrower {
    Borrower {
        external_id: ext(id),
        name: PersonName::parse(name).unwrap(),
        national_id: Some(NationalId::parse(IdScheme::CnResident, "11010519491231002X").unwrap()),
        locale: Locale::ZhCn,
        time_zone: chrono_tz::Asia::Shanghai,
        jurisdiction: Jurisdiction::Cn,
    }
}

pub fn mobile(slot: &str, number: &str, role: ContactRole) -> ContactPoint {
    ContactPoint {
        slot: ext(slot),
        kind: ContactKind::Mobile,
        address: ContactAddress::parse(ContactKind::Mobile, number, &PhoneParser::default()).unwrap(),
        role,
        holder_name: role.is_third_party().then(|| PersonName::parse("李娜").unwrap()),
        bound_since: NaiveDate::from_ymd_opt(2024, 5, 1).unwrap(),
        source: ContactSource::Book,
        verified_at: None,
    }
}

pub fn email(slot: &str, addr: &str) -> ContactPoint {
    ContactPoint {
        slot: ext(slot),
        kind: ContactKind::Email,
        address: ContactAddress::parse(ContactKind::Email, addr, &PhoneParser::default()).unwrap(),
        role: ContactRole::Primary,
        holder_name: None,
        bound_since: NaiveDate::from_ymd_opt(2024, 5, 1).unwrap(),
        source: ContactSource::Book,
        verified_at: Some(t(1, 9)),
    }
}

pub fn loan(id: &str, borrower: &str) -> Loan {
    Loan {
        external_id: ext(id),
        borrower: ext(borrower),
        product: "consumer-12m".into(),
        principal: Money::from_minor(1_200_000, Currency::CNY),
        disbursed_on: NaiveDate::from_ymd_opt(2026, 1, 15).unwrap(),
    }
}

pub fn installment(loan: &str, seq: u32, paid: bool) -> Installment {
    Installment {
        loan: ext(loan),
        seq,
        due_date: NaiveDate::from_ymd_opt(2026, 1 + seq, 15).unwrap(),
        amount_due: Money::from_minor(105_000, Currency::CNY),
        amount_paid: Money::from_minor(if paid { 105_000 } else { 0 }, Currency::CNY),
        paid_at: paid.then(|| t(seq, 10)),
    }
}

pub fn consent(purpose: Purpose, channel: Option<Channel>, state: ConsentState, at: DateTime<Utc>) -> Consent {
    Consent {
        purpose,
        channel,
        state,
        at,
        source: ConsentSource::Contract,
        text_version: "2026-01".into(),
    }
}
