//! Runs the binary in a scratch directory with its own keys and SQLite database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Scratch {
    pub dir: tempfile::TempDir,
    /// The database, when not this scratch's own SQLite file.
    url: Option<String>,
}

impl Scratch {
    pub fn new() -> Self {
        Self::with_url(None)
    }

    /// A scratch directory whose commands use the database at `url`.
    pub fn on_database(url: String) -> Self {
        Self::with_url(Some(url))
    }

    fn with_url(url: Option<String>) -> Self {
        let s = Self {
            dir: tempfile::tempdir().unwrap(),
            url,
        };
        let out = s.run(&["keys", "init", "--out", s.keys().to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        s
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn keys(&self) -> PathBuf {
        self.path("test.keys")
    }

    pub fn db(&self) -> PathBuf {
        self.path("test.db")
    }

    pub fn db_url(&self) -> String {
        self.url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.db().display()))
    }

    /// Runs `reachline ARGS` against this scratch's database and keys.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_reachline"))
            .args(args)
            .current_dir(self.dir.path())
            .env("REACHLINE_KEYS__FILE", self.keys())
            .env("REACHLINE_DATABASE__URL", self.db_url())
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "reachline {args:?} failed:\n{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn gen(&self, name: &str, borrowers: u64, revision: u32, format: &str) -> PathBuf {
        let out = self.path(name);
        self.ok(&[
            "gen-book",
            "--borrowers",
            &borrowers.to_string(),
            "--seed",
            "11",
            "--as-of",
            "2026-11-01",
            "--revision",
            &revision.to_string(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ]);
        out
    }

    pub fn import_json(&self, book: &Path) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["import", "--json", book.to_str().unwrap()])).unwrap()
    }

    pub fn counts(&self) -> String {
        self.ok(&["summary"])
    }

    /// `reachline ARGS` as a node of this scratch that sends to the SMSC on `port`: its keys
    /// and database, logging warnings, stdout discarded. The caller adds to it and spawns it.
    pub fn node_command(&self, args: &[&str], port: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_reachline"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("REACHLINE_KEYS__FILE", self.keys())
            .env("REACHLINE_DATABASE__URL", self.db_url())
            .env("REACHLINE_SMPP__HOST", "127.0.0.1")
            .env("REACHLINE_SMPP__PORT", port)
            .env("REACHLINE_LOG__LEVEL", "warn")
            .stdout(std::process::Stdio::null());
        c
    }
}

/// A fresh PostgreSQL database for one test, `reachline_NAME_PID` on the server
/// [`postgres_admin`] names (dropped first if a killed run left it), with a small pool for the
/// test's own queries; dropped with the value, failing or not.
pub struct PgDatabase {
    pub admin: String,
    pub url: String,
    name: String,
    rt: tokio::runtime::Runtime,
    pool: sqlx::PgPool,
}

impl PgDatabase {
    /// `None` where no server is configured (see [`postgres_admin`]).
    pub fn fresh(name: &str) -> Option<Self> {
        let admin = postgres_admin()?;
        let name = format!("reachline_{name}_{}", std::process::id());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _ = rt.block_on(reachline_store::postgres::drop_database(&admin, &name));
        rt.block_on(reachline_store::postgres::create_database(&admin, &name))
            .unwrap();
        let url = reachline_store::postgres::url_with_database(&admin, &name);
        let pool = rt
            .block_on(sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url))
            .unwrap();
        Some(PgDatabase {
            admin,
            url,
            name,
            rt,
            pool,
        })
    }

    /// A scratch directory whose commands use this database.
    pub fn scratch(&self) -> Scratch {
        Scratch::on_database(self.url.clone())
    }

    /// The one integer `sql` returns.
    pub fn count(&self, sql: &str) -> i64 {
        self.rt
            .block_on(sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.pool))
            .unwrap()
    }

    /// The strings `sql` returns, one per row.
    pub fn strings(&self, sql: &str) -> Vec<String> {
        self.rt
            .block_on(sqlx::query_scalar::<_, String>(sql).fetch_all(&self.pool))
            .unwrap()
    }

    /// The (text, count) pairs `sql` returns.
    pub fn counted(&self, sql: &str) -> Vec<(String, i64)> {
        self.rt
            .block_on(sqlx::query_as::<_, (String, i64)>(sql).fetch_all(&self.pool))
            .unwrap()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        self.rt.block_on(self.pool.close());
        let _ = self
            .rt
            .block_on(reachline_store::postgres::drop_database(&self.admin, &self.name));
    }
}

/// Held by the tests that run several `reachline` processes flat out and measure them (the
/// crash harness, the three-node test), so they do not run side by side and skew each other's
/// timings on a small machine; other tests still run beside them.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

/// The PostgreSQL server the tests may use (`REACHLINE_TEST_DATABASE_URL`, an admin URL), or
/// `None` — and then a test on PostgreSQL is skipped, unless `REACHLINE_TEST_REQUIRE_POSTGRES`
/// is set (CI sets both), which fails it.
pub fn postgres_admin() -> Option<String> {
    let url = std::env::var("REACHLINE_TEST_DATABASE_URL").ok();
    assert!(
        url.is_some() || std::env::var("REACHLINE_TEST_REQUIRE_POSTGRES").is_err(),
        "REACHLINE_TEST_REQUIRE_POSTGRES is set but REACHLINE_TEST_DATABASE_URL is not"
    );
    url
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Rewrites line `line` (1-based) of `file` with `f`.
pub fn edit_line(file: &Path, line: usize, f: impl FnOnce(&str) -> String) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[line - 1] = f(&lines[line - 1]);
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

/// Replaces field `col` (0-based) of CSV line `line` with `value` (no quoting needed in tests).
pub fn set_field(file: &Path, line: usize, col: usize, value: &str) {
    edit_line(file, line, |l| {
        let mut fields: Vec<String> = l.split(',').map(String::from).collect();
        fields[col] = value.to_string();
        fields.join(",")
    });
}

/// The 1-based line numbers of rows of `file` matching `pred` (header excluded).
pub fn lines_where(file: &Path, pred: impl Fn(&[&str]) -> bool) -> Vec<usize> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| pred(&l.split(',').collect::<Vec<_>>()))
        .map(|(i, _)| i + 1)
        .collect()
}
