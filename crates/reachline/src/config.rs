//! Configuration: one TOML file, then `REACHLINE_SECTION__KEY` environment overrides; typed,
//! validated before anything starts, secrets redacted in `Debug`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use reachline_domain::{borrower::parse_time_zone, Locale, PhoneParser, RangeOverride};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub database: DatabaseConfig,
    pub keys: KeysConfig,
    pub phone: PhoneConfig,
    pub book: BookConfig,
    pub ledger: LedgerConfig,
    pub log: LogConfig,
    pub intel: reachline_intel::IntelConfig,
    pub health: reachline_policy::HealthConfig,
    pub engine: EngineSection,
    /// The SMSC `reachline run` sends SMS through (none: SMS is not sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smpp: Option<reachline_channels::smpp::SmppConfig>,
    /// The mail server `reachline run` and `reachline serve` send email through (none: email
    /// is not sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<reachline_channels::smtp::SmtpConfig>,
    /// HTTP providers: an SMS aggregator, FCM push, WeChat template messages, a voice/IVR
    /// service. Several for one channel are tried in order (after `[smpp]` for SMS), each
    /// behind its own circuit breaker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<reachline_channels::http::HttpConfig>,
    /// `reachline serve`: where it listens, limits, webhooks.
    pub server: reachline_server::ServerConfig,
    /// How long each class of record is kept (defaults: the legal floors, and five years at
    /// most); `reachline retention` applies it.
    pub retention: reachline_store::privacy::RetentionRules,
    /// Where `reachline backup` writes.
    pub backup: BackupConfig,
}

/// `[backup]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// The directory `reachline backup` writes into. Erasure shreds the erased borrower in
    /// every SQLite backup here, so keep backups here (copy them elsewhere only encrypted, or
    /// not at all).
    pub dir: PathBuf,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./backups"),
        }
    }
}

/// How the notice engine runs (`reachline run`, `reachline demo`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// The lender's name as notices sign it.
    pub lender_name: String,
    /// The number notices give for questions.
    pub service_phone: String,
    /// The base of the links notices carry; a 23-character signed token follows.
    pub link_base: String,
    /// Where the borrower's self-service pages are served (`reachline serve`), ending in `/`:
    /// contact-check links go to `<base>c/<token>`.
    pub self_service_base: String,
    /// Seconds between two passes of the planner and the dispatchers.
    pub tick_seconds: u64,
    /// Seconds a dispatcher holds a row before another may take it.
    pub lease_seconds: u64,
    /// Several nodes on one PostgreSQL database: seconds a node's claim on a slice of the
    /// planning pass keeps the other nodes off it (each slice planned once per pass).
    pub plan_hold_seconds: u64,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Milliseconds a carrier or recycled-number lookup may take before the pass goes on
    /// without its answer (asked again the next day).
    pub lookup_timeout_ms: u64,
    /// Tries when a provider is down before an attempt is failed as transient.
    pub max_tries: u32,
    /// The escalation ladder: channel order, hours to wait for an outcome.
    pub ladder: reachline_policy::LadderConfig,
    /// The send-time model: first sends at the hour the borrower's history favours.
    pub timing: reachline_policy::TimingConfig,
    /// Cadences per loan product (`*` for every product not listed); default: T−7, T−3,
    /// T−1, due day, T+1, T+3, T+7, T+15, T+30.
    pub cadences: Vec<reachline_policy::Cadence>,
}

impl Default for EngineSection {
    fn default() -> Self {
        let e = reachline_engine::EngineConfig::default();
        EngineSection {
            lender_name: e.lender_name,
            service_phone: e.service_phone,
            link_base: e.link_base,
            self_service_base: e.self_service_base,
            tick_seconds: 60,
            lease_seconds: e.lease.num_seconds() as u64,
            plan_hold_seconds: 30,
            concurrency: e.concurrency,
            lookup_timeout_ms: e.lookup_timeout.as_millis() as u64,
            max_tries: e.max_tries,
            ladder: e.ladder,
            timing: e.timing,
            cadences: e.cadences,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// The log's origin: the first line of every checkpoint and the signing key's name.
    pub origin: String,
    /// A batch closes at this many leaves…
    pub batch_max_entries: usize,
    /// …or this many milliseconds after its first leaf.
    pub batch_max_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: DatabaseConfig {
                url: DatabaseUrl("sqlite://./reachline.db".into()),
            },
            keys: KeysConfig {
                file: PathBuf::from("./reachline.keys"),
                master_key: None,
                blind_index_key: None,
                key_id: "env".into(),
                ledger_signing_key: None,
            },
            phone: PhoneConfig {
                default_region: "CN".into(),
                overrides: RangeOverride::builtin(),
            },
            book: BookConfig {
                default_locale: "zh-CN".into(),
                default_time_zone: "Asia/Shanghai".into(),
                default_jurisdiction: "cn".into(),
                batch_size: 2000,
            },
            ledger: LedgerConfig {
                origin: "reachline.example/ledger".into(),
                batch_max_entries: 256,
                batch_max_ms: 0,
            },
            log: LogConfig {
                level: "info,rusqlite_migration=warn,sqlx=warn".into(),
                format: LogFormat::Text,
            },
            intel: reachline_intel::IntelConfig::default(),
            health: reachline_policy::HealthConfig::default(),
            engine: EngineSection::default(),
            smpp: None,
            smtp: None,
            http: Vec::new(),
            server: reachline_server::ServerConfig::default(),
            retention: Default::default(),
            backup: BackupConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: DatabaseUrl,
}

/// A database URL; `Debug` hides any password in it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, for logs and messages.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some((scheme, rest)) = s.split_once("://") else {
            return s.clone();
        };
        match rest.split_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => s.clone(),
            },
            None => s.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The key file `reachline keys init` writes. Used when the keys are not given directly.
    pub file: PathBuf,
    /// The master key (base64 of 32 bytes), instead of the file; usually from the environment
    /// as `REACHLINE_KEYS__MASTER_KEY`.
    #[serde(skip_serializing)]
    pub master_key: Option<SecretString>,
    /// The blind-index key (base64 of 32 bytes), with `master_key`.
    #[serde(skip_serializing)]
    pub blind_index_key: Option<SecretString>,
    /// The name of the master key given through `master_key`.
    pub key_id: String,
    /// The ledger's signing key (base64 of a 32-byte Ed25519 seed), instead of the file's.
    #[serde(skip_serializing)]
    pub ledger_signing_key: Option<SecretString>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneConfig {
    pub default_region: String,
    pub overrides: Vec<RangeOverride>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookConfig {
    pub default_locale: String,
    pub default_time_zone: String,
    pub default_jurisdiction: String,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The defaults a book row falls back on, parsed.
pub use reachline_book::parse::BookDefaults;

impl Config {
    /// Reads `path` (if it exists; it must, when given explicitly) and the environment.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) => {
                if !p.exists() {
                    bail!("configuration file {} does not exist", p.display());
                }
                fig = fig.merge(Toml::file_exact(p));
            }
            None => {
                if Path::new("reachline.toml").exists() {
                    fig = fig.merge(Toml::file_exact("reachline.toml"));
                }
            }
        }
        // Only sectioned names (`REACHLINE_DATABASE__URL`) are configuration; other
        // `REACHLINE_*` variables (the test suite's, say) are not ours to refuse.
        fig = fig.merge(
            Env::prefixed("REACHLINE_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let cfg: Config = fig.extract().context("reading configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every value that can be checked without touching the outside world.
    pub fn validate(&self) -> anyhow::Result<()> {
        let url = self.database.url.as_str();
        if !(url.starts_with("sqlite://") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            bail!(
                "database.url must start with sqlite:// or postgres:// (got {})",
                self.database.url.redacted()
            );
        }
        self.phone_parser().context("phone.default_region")?;
        self.retention.validate().map_err(anyhow::Error::msg)?;
        for (i, o) in self.phone.overrides.iter().enumerate() {
            if !o.prefix.starts_with('+') || !o.prefix[1..].bytes().all(|b| b.is_ascii_digit()) || o.prefix.len() < 3 {
                bail!("phone.overrides[{i}].prefix must be + and digits, e.g. +86161");
            }
            if !(o.prefix.len() - 1..=15).contains(&o.digits) {
                bail!("phone.overrides[{i}].digits must be between the prefix length and 15");
            }
        }
        self.book_defaults()?;
        if !(1..=100_000).contains(&self.book.batch_size) {
            bail!("book.batch_size must be between 1 and 100000");
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level).context("log.level is not a valid filter")?;
        if !reachline_ledger::note::is_valid_key_name(&self.ledger.origin) {
            bail!("ledger.origin must be one word without spaces or '+', e.g. reachline.example/ledger");
        }
        if !(1..=100_000).contains(&self.ledger.batch_max_entries) {
            bail!("ledger.batch_max_entries must be between 1 and 100000");
        }
        if self.ledger.batch_max_ms > 10_000 {
            bail!("ledger.batch_max_ms must be at most 10000");
        }
        for (i, w) in self.server.webhooks.iter().enumerate() {
            if let Some(m) = &w.safe_mode {
                reachline_channels::wechat::SafeMode::new(&w.secret, &m.encoding_aes_key, &m.app_id)
                    .map_err(|e| anyhow::anyhow!("server.webhooks[{i}].safe_mode.encoding_aes_key: {e}"))?;
            }
        }
        if self.keys.master_key.is_some() != self.keys.blind_index_key.is_some() {
            bail!("keys.master_key and keys.blind_index_key must be given together");
        }
        Ok(())
    }

    pub fn phone_parser(&self) -> anyhow::Result<PhoneParser> {
        Ok(PhoneParser::new(
            &self.phone.default_region,
            self.phone.overrides.clone(),
        )?)
    }

    pub fn book_defaults(&self) -> anyhow::Result<BookDefaults> {
        Ok(BookDefaults {
            locale: Locale::parse_tag(&self.book.default_locale).context("book.default_locale")?,
            time_zone: parse_time_zone(&self.book.default_time_zone).context("book.default_time_zone")?,
            jurisdiction: self
                .book
                .default_jurisdiction
                .parse()
                .context("book.default_jurisdiction")?,
        })
    }

    /// The keyring, from the environment/config values if given, else from the key file.
    pub fn keyring(&self) -> anyhow::Result<reachline_store::Keyring> {
        match (&self.keys.master_key, &self.keys.blind_index_key) {
            (Some(m), Some(b)) => {
                let m = reachline_store::Secret32::from_base64(m.expose_secret(), "keys.master_key")?;
                let b = reachline_store::Secret32::from_base64(b.expose_secret(), "keys.blind_index_key")?;
                Ok(reachline_store::Keyring::new(&self.keys.key_id, &m, &b))
            }
            _ => crate::keys::KeyFile::read(&self.keys.file)
                .with_context(|| {
                    format!(
                        "reading key file {} (create one with `reachline keys init`, or set \
                         REACHLINE_KEYS__MASTER_KEY and REACHLINE_KEYS__BLIND_INDEX_KEY)",
                        self.keys.file.display()
                    )
                })?
                .keyring(),
        }
    }
}

impl Config {
    /// What erasure needs: the retention rules and the backup directory.
    pub fn privacy(&self) -> reachline_server::privacy::PrivacySettings {
        reachline_server::privacy::PrivacySettings {
            retention: self.retention,
            backup_dir: Some(self.backup.dir.clone()),
        }
    }

    /// The ledger's signer: from `keys.ledger_signing_key` if given, else from the key file.
    pub fn ledger_signer(&self) -> anyhow::Result<reachline_ledger::note::SignerKey> {
        match &self.keys.ledger_signing_key {
            Some(seed) => crate::keys::signer_from_seed(seed.expose_secret(), &self.ledger.origin),
            None => crate::keys::KeyFile::read(&self.keys.file)
                .with_context(|| format!("reading key file {}", self.keys.file.display()))?
                .ledger_signer(&self.keys.file, &self.ledger.origin),
        }
    }

    pub fn sequencer_config(&self) -> reachline_store::ledger::SequencerConfig {
        reachline_store::ledger::SequencerConfig {
            origin: self.ledger.origin.clone(),
            batch_max_entries: self.ledger.batch_max_entries,
            batch_max_ms: self.ledger.batch_max_ms,
        }
    }
}

/// The commented example `reachline config example` prints. A test parses it, so it cannot
/// drift from the types above.
pub const EXAMPLE: &str = r#"# Reachline configuration. Every key can be overridden from the environment as
# REACHLINE_<SECTION>__<KEY>, e.g. REACHLINE_DATABASE__URL=postgres://reachline@db/reachline

[database]
# sqlite://PATH (embedded, the default; the file is created) or postgres://USER@HOST:PORT/DB
url = "sqlite://./reachline.db"

[keys]
# The key file written by `reachline keys init`: the master key that wraps each borrower's
# data key, and the key of the blind index used for lookups by number. Keep it apart from
# the database backups; losing it makes the personal data unreadable.
file = "./reachline.keys"
# Alternatively give both keys directly (base64 of 32 bytes each), best from the environment:
#   REACHLINE_KEYS__MASTER_KEY=...  REACHLINE_KEYS__BLIND_INDEX_KEY=...
# with the name of that master key:
key_id = "env"
# The ledger's signing key (base64 of a 32-byte Ed25519 seed) is in the key file too; give it
# directly as REACHLINE_KEYS__LEDGER_SIGNING_KEY=... when the keys come from the environment.

[phone]
# Region for numbers written without a country code (ISO 3166 alpha-2).
default_region = "CN"

# Ranges the bundled numbering-plan metadata does not know yet. Listing any replaces the
# built-in list, which holds the China Broadnet 161 range.
[[phone.overrides]]
prefix = "+86161"
digits = 13
line = "mobile"
since = "2023-01-01"
note = "China Broadnet 161 mobile range, missing from metadata 9.0.33"

[book]
# Used when a borrower row leaves locale, time_zone or jurisdiction empty.
default_locale = "zh-CN"
default_time_zone = "Asia/Shanghai"
default_jurisdiction = "cn"
# Rows written per batch during an import.
batch_size = 2000

[ledger]
# The log's origin: the first line of every signed checkpoint and the name of its key. Verifiers
# and witnesses know the log by it; changing it starts a different log.
origin = "reachline.example/ledger"
# The sequencer commits a batch (leaves, tiles and a newly signed checkpoint in one
# transaction) of what arrived while the last one committed, at most this many leaves; with
# batch_max_ms above 0 it also waits that long after the first leaf for more. An append
# returns once its batch is committed.
batch_max_entries = 256
batch_max_ms = 0

[retention]
# Days each class of record is kept (docs/privacy.md). Values below the legal floors are refused:
# collection records at least 730 (2 years), processing records at least 1095 (3 years).
# `reachline retention` reports what the rules reach now; `--apply` erases and deletes it.
collection_min_days = 730
collection_max_days = 1825
processing_min_days = 1095
processing_max_days = 1825
# A borrower with nothing unpaid and no activity for this long is erased.
personal_data_max_days = 1825
# Sessions, one-time-link nonces, code-failure counters, webhook replay digests.
operational_max_days = 30

[backup]
# `reachline backup` writes here; erasure shreds the erased borrower in the SQLite backups here.
dir = "./backups"

[log]
# A tracing filter, e.g. "info" or "reachline=debug,info".
level = "info,rusqlite_migration=warn,sqlx=warn"
# text or json
format = "text"

[health]
# Contact-health thresholds, in days (see `reachline-policy`'s health module for the rules).
healthy_window_days = 90            # engaged or proven within: healthy; after: verified
long_healthy_days = 30              # healthy this long: a failure is an anomaly
degrade_after_transient_days = 3    # days of transient failures, nothing delivered: degraded
suspect_after_transient_days = 7    # ... suspect, with a carrier check
carrier_confirm_days = 7            # a hard failure and a carrier "empty" this close: dead
silent_days = 90                    # delivered but never engaged this long: recycled-number check
silent_days_paying_elsewhere = 45   # ... when the borrower pays by other means
silent_min_deliveries = 3
score_half_life_days = 60

[intel]
# The first day the loaded disconnection registry (`reachline intel load-disconnects`) is
# complete for: a number it does not hold answers "no" for dates from this day, "no data"
# before. The FCC Reassigned Numbers Database is complete from 2021-01-27.
registry_complete_since = "2021-01-27"

[intel.guard]
# Answers are cached (seconds); a number is asked about at most once per kind of query per
# min_interval_secs, because carriers block rapid repeats.
status_ttl_secs = 21600
history_ttl_secs = 86400
min_interval_secs = 60
max_entries = 100000

# A number-status vendor over HTTP (optional). Paths take {number} (E.164 without '+'),
# {e164} and {since}; `field` is a JSON Pointer into the answer; `values` maps Reachline's
# answers to the vendor's. A value not listed is logged and read as unknown / no_data.
# [intel.http]
# name = "acme-numbers"
# base_url = "https://api.acme.example"
# token = "..."            # better: REACHLINE_INTEL__HTTP__TOKEN
# timeout_ms = 3000
# [intel.http.status]
# path = "/v2/status?msisdn={number}"
# field = "/data/state"
# values = { normal = ["1"], empty = ["2"], suspended = ["3"], cancelled = ["4"], powered_off = ["5"] }
# [intel.http.recycled]
# path = "/v2/recycle?msisdn={number}&since={since}"
# field = "/data/result"
# values = { yes = ["Y"], no = ["N"], no_data = ["U"] }

[engine]
lender_name = "示例金融"
service_phone = "95500"
link_base = "https://r.example/n/"   # a 23-character signed token follows
self_service_base = "https://r.example/"  # the borrower's pages (contact-check links)
tick_seconds = 60                    # between two planning and dispatch passes
lease_seconds = 300                  # a dispatcher's hold on a row
plan_hold_seconds = 30               # several nodes: a node's hold on a slice of a planning pass
concurrency = 64                     # sends in flight
lookup_timeout_ms = 3000             # a carrier lookup's deadline; the pass goes on without it
max_tries = 5                        # provider down this often: the attempt fails as transient

[engine.ladder]
channels = ["sms", "push", "im", "email", "voice"]   # order on a contact point; only configured ones are used
wait_hours = 24                      # for an outcome before climbing
voice_for_service = false

# A notice's first send waits, within the allowed hours left that day, for the hour the
# borrower's own attempts say they engage at (Thompson sampling; later rungs go at once).
[engine.timing]
enabled = true
prior_rate = 0.25                    # engagement rate a borrower without history starts from…
prior_strength = 20.0                # …worth this many sends at each hour
# Open each notice on the message channel the borrower answers most (a bandit over the channels
# the gates allow on their primary points, trading engagement against cost); off by default.
choose_channel = false
cost_weight = 1.0
channels = [
  { channel = "sms", prior_rate = 0.25, cost = 0.05 },
  { channel = "push", prior_rate = 0.05, cost = 0.0 },
  { channel = "im", prior_rate = 0.10, cost = 0.0 },
  { channel = "email", prior_rate = 0.06, cost = 0.0 },
]

# Cadence per product; `*` covers every product not listed. Offsets are days from the due date.
[[engine.cadences]]
product = "*"
steps = [
  { kind = "pre_due", offset_days = -7 },
  { kind = "pre_due", offset_days = -3 },
  { kind = "pre_due", offset_days = -1 },
  { kind = "due_today", offset_days = 0 },
  { kind = "overdue", offset_days = 1 },
  { kind = "overdue", offset_days = 3 },
  { kind = "overdue", offset_days = 7 },
  { kind = "overdue", offset_days = 15 },
  { kind = "overdue", offset_days = 30 },
]

# The SMSC for SMS (omit to send no SMS). Durations in milliseconds.
# [smpp]
# name = "smsc"
# host = "127.0.0.1"
# port = 2775
# system_id = "reachline"
# password = "..."         # better: REACHLINE_SMPP__PASSWORD
# source_addr = "Reachline"
# window = 32
# receipt_ids = "auto"     # how receipts write ids: auto, same, hex_to_decimal, decimal_to_hex
# tls = false              # SMPP over TLS (the SMSC's TLS port)
# tls_ca_file = "/etc/reachline/smsc-ca.pem"   # certificates to trust; the public roots if unset
# tls_server_name = "smsc.carrier.example"     # when the certificate names another host

# The mail server for email (omit to send no email): notices, contact-check links and codes.
# Bounces come back to `bounce_prefix+REF@bounce_domain`. Durations in milliseconds.
# [smtp]
# name = "mail"
# host = "127.0.0.1"
# port = 25
# from = "notices@lender.example"
# bounce_prefix = "bounce"
# bounce_domain = "lender.example"
# subject = "Your loan"
# accepted_is_delivered = false   # true only when the server is the recipients' own
# bounce_maildir = "/var/mail/reachline-bounces"   # where the mail system delivers bounces
# bounce_poll_ms = 5000

# HTTP providers, one section each (omit for none). `api`: sms_aggregator, fcm, wechat, voice.
# Their receipts and outcomes come to `reachline serve`'s webhooks ([[server.webhooks]]).
# [[http]]
# name = "fcm"
# api = "fcm"
# base_url = "https://fcm.googleapis.com"
# token = "..."              # better: REACHLINE_HTTP__0__TOKEN or a file the service reads
# template = "my-project"    # FCM project id; the aggregator's template code; WeChat's template id
# webhook_secret = "..."
# timeout_ms = 5000

# `reachline serve`: the API (docs at /docs), webhooks, /metrics, /healthz, /readyz.
[server]
listen = "127.0.0.1:8080"
max_body_bytes = 1048576             # a larger request is refused (413)
token_rate_per_second = 200          # per API token, bursts to twice this
ip_rate_per_second = 2000            # per client address
secure_cookies = false               # true behind a TLS proxy: the session cookie is then Secure
# tls_cert = "/etc/reachline/cert.pem"  # serve HTTPS (rustls) with this chain and key, both PEM;
# tls_key = "/etc/reachline/key.pem"    # cookies are then always Secure
token_cache_seconds = 60             # a verified token is trusted this long (a revocation on
                                     # another node takes effect within it)
# metrics_token = "..."              # /metrics then needs Authorization: Bearer <it> (Prometheus:
                                     # authorization.credentials_file); better from the environment,
                                     # REACHLINE_SERVER__METRICS_TOKEN. Unset, /metrics is open.

# One per provider that posts receipts, call outcomes or replies to /v1/webhooks/<name>,
# signed HMAC-SHA256(secret, timestamp + "." + body) in X-Signature, X-Timestamp in seconds.
# [[server.webhooks]]
# name = "sms-aggregator"
# kind = "sms_receipt"       # sms_receipt, voice_outcome, sms_reply, push_outcome, wechat_event
# secret = "..."             # better from the environment
# window_seconds = 300       # replay window

# A WeChat official account's server URL, /v1/webhooks/<name>: template-message outcomes
# (matched by MsgID, so `name` is the [[http]] wechat provider's), unsubscribes and messages
# from followers (IM contact points `wechat:<openid>`). WeChat signs the query, not the body:
# SHA-1 of the sorted token, timestamp and nonce, the token being `secret` (the one set in the
# account's console). GET with echostr is its URL check. In safe mode (the body encrypted and
# signed too) add safe_mode; plaintext bodies are then refused.
# [[server.webhooks]]
# name = "wechat"
# kind = "wechat_event"
# secret = "..."             # WeChat's token
# window_seconds = 300
# safe_mode = { app_id = "wx...", encoding_aes_key = "<43 characters>" }

# The borrower's pages (/n/<token>, /c/<token>, /me) and the number-change flow.
[server.self_service]
identity = "none"            # who may authorise a change by an identity check: none, sandbox
[server.self_service.change]
cooling_days = 7             # after a change, another is refused this long
sim_swap_days = 7            # a SIM swap of the new number this recent sends it to review
port_days = 7                # so does a port
max_starts_per_day = 3       # changes one borrower may start in 24 hours
refuse_voip = true
valid_minutes = 30           # a change lapses if not proven by then
[server.self_service.codes]
digits = 6                   # at least 6
valid_minutes = 10           # at most 10
max_guesses = 5
max_sends = 5
max_consecutive_failures = 100
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_below_the_floor_is_refused_naming_the_key() {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[retention]\ncollection_min_days = 365\n"))
            .extract()
            .unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("retention.collection_min_days = 365") && e.contains("730"),
            "{e}"
        );
    }

    #[test]
    fn example_parses_and_validates() {
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(EXAMPLE))
            .extract()
            .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.retention, reachline_store::privacy::RetentionRules::default());
        assert_eq!(cfg.backup.dir, BackupConfig::default().dir);
        assert_eq!(cfg.phone.overrides, RangeOverride::builtin());
        assert_eq!(cfg.database.url.as_str(), Config::default().database.url.as_str());
    }

    /// The commented `[smpp]` and `[smtp]` sections of the example, uncommented, configure
    /// the gateways they describe.
    #[test]
    fn example_gateway_sections_parse() {
        let block = |head: &str| -> String {
            EXAMPLE
                .lines()
                .skip_while(|l| *l != head)
                .take_while(|l| !l.is_empty())
                .map(|l| l.strip_prefix("# ").unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let text = format!("{}\n{}\n{}", block("# [smpp]"), block("# [smtp]"), block("# [[http]]"));
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(&text))
            .extract()
            .unwrap();
        assert_eq!(cfg.smpp.unwrap().port, 2775);
        let smtp = cfg.smtp.unwrap();
        assert_eq!((smtp.name.as_str(), smtp.port), ("mail", 25));
        assert_eq!(smtp.bounce_domain, "lender.example");
        assert_eq!(
            smtp.bounce_maildir.unwrap(),
            PathBuf::from("/var/mail/reachline-bounces")
        );
        assert_eq!(cfg.http.len(), 1);
        assert_eq!(cfg.http[0].api, reachline_channels::http::HttpApi::Fcm);
    }

    /// Each commented `[[server.webhooks]]` of the example, uncommented, configures a webhook.
    #[test]
    fn example_webhook_sections_parse() {
        let lines: Vec<&str> = EXAMPLE.lines().collect();
        let text = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == "# [[server.webhooks]]")
            .flat_map(|(i, _)| {
                lines[i..]
                    .iter()
                    .take_while(|l| !l.is_empty())
                    .map(|l| l.strip_prefix("# ").unwrap_or(l))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let cfg: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(&text))
            .extract()
            .unwrap();
        let hooks: Vec<_> = cfg.server.webhooks.iter().map(|w| (w.name.as_str(), w.kind)).collect();
        assert_eq!(
            hooks,
            [
                ("sms-aggregator", reachline_server::WebhookKind::SmsReceipt),
                ("wechat", reachline_server::WebhookKind::WechatEvent)
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let bad = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[database]\nurl = \"sqlite://x\"\nport = 5"))
            .extract::<Config>();
        assert!(bad.unwrap_err().to_string().contains("port"));
        let mut cfg = Config::default();
        cfg.database.url = DatabaseUrl("mysql://x".into());
        assert!(cfg.validate().is_err());
        let mut cfg = Config::default();
        cfg.book.default_time_zone = "Mars/Base".into();
        assert!(format!("{:#}", cfg.validate().unwrap_err()).contains("book.default_time_zone"));
        // A WeChat safe-mode key that is not one is refused at start, not at the first push.
        let mut cfg = Config::default();
        cfg.server.webhooks.push(reachline_server::WebhookConfig {
            name: "wechat".into(),
            kind: reachline_server::WebhookKind::WechatEvent,
            secret: "token".into(),
            window_seconds: 300,
            safe_mode: Some(reachline_server::webhooks::WechatSafeMode {
                app_id: "wx0".into(),
                encoding_aes_key: "too-short".into(),
            }),
        });
        assert!(format!("{:#}", cfg.validate().unwrap_err()).contains("server.webhooks[0].safe_mode"));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let mut cfg = Config::default();
        cfg.database.url = DatabaseUrl("postgres://rl:hunter2@db/rl".into());
        cfg.keys.master_key = Some(SecretString::from("bWFzdGVyLWtleS1tYXRlcmlhbA=="));
        let d = format!("{cfg:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(!d.contains("bWFzdGVy"), "{d}");
        assert!(d.contains("postgres://rl:***@db/rl"));
    }
}
