//! A number-status vendor over HTTP, described by configuration rather than code.
//!
//! Each query is a GET of `base_url` + a path template (`{number}` is the E.164 number without
//! the `+`, `{e164}` with it, `{since}` the date as `YYYY-MM-DD`), with an optional bearer token.
//! The answer is read from the JSON body at a JSON Pointer (`/data/status`), and the vendor's
//! value is mapped to Reachline's by a table (`normal = ["0", "NORMAL"]`). A value the table does
//! not know is logged (without the number) and read as `unknown` / `no_data`, never guessed.
//!
//! ```toml
//! [intel.http]
//! name = "acme-numbers"
//! base_url = "https://api.acme.example"
//! token = "…"
//! [intel.http.status]
//! path = "/v2/status?msisdn={number}"
//! field = "/data/state"
//! values = { normal = ["1"], empty = ["2"], suspended = ["3"], cancelled = ["4"], powered_off = ["5"] }
//! [intel.http.recycled]
//! path = "/v2/recycle?msisdn={number}&since={since}"
//! field = "/data/result"
//! values = { yes = ["Y"], no = ["N"], no_data = ["U"] }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use reachline_domain::PhoneNumber;
use reachline_policy::intel::{ChangeSince, NumberStatus, RecycleAnswer};
use serde::{Deserialize, Serialize};

use crate::{unsupported, IntelError, NumberIntel, Query, Result};

/// One query against the vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySpec {
    /// Path and query string, appended to `base_url`, with `{number}`, `{e164}`, `{since}`.
    pub path: String,
    /// JSON Pointer to the answer in the response body.
    pub field: String,
    /// Reachline's answer → the vendor's values for it. Status answers: normal, empty,
    /// suspended, cancelled, powered_off, unknown. Recycled: yes, no, no_data. SIM swap and
    /// port: yes, no.
    pub values: BTreeMap<String, Vec<String>>,
    /// For SIM swap and port: JSON Pointer to the date of the change, if the vendor gives one.
    #[serde(default)]
    pub date_field: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIntelConfig {
    pub name: String,
    pub base_url: String,
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub status: Option<QuerySpec>,
    #[serde(default)]
    pub recycled: Option<QuerySpec>,
    #[serde(default)]
    pub sim_swap: Option<QuerySpec>,
    #[serde(default)]
    pub ported: Option<QuerySpec>,
}

fn default_timeout() -> u64 {
    3_000
}

impl std::fmt::Debug for HttpIntelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpIntelConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

pub struct HttpIntel {
    cfg: HttpIntelConfig,
    client: reqwest::Client,
}

impl HttpIntel {
    pub fn new(cfg: HttpIntelConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .build()
            .map_err(|e| IntelError::Transport {
                source_name: cfg.name.clone(),
                message: e.to_string(),
            })?;
        Ok(Self { cfg, client })
    }

    fn spec(&self, q: Query) -> Result<&QuerySpec> {
        let spec = match q {
            Query::Status => &self.cfg.status,
            Query::Recycled => &self.cfg.recycled,
            Query::SimSwap => &self.cfg.sim_swap,
            Query::Ported => &self.cfg.ported,
        };
        spec.as_ref().map_or_else(|| unsupported(&self.cfg.name, q), Ok)
    }

    /// Asks one query; returns the mapped answer name (or `None` for an unmapped value) and the
    /// body, for the date field.
    async fn ask(
        &self,
        q: Query,
        number: &PhoneNumber,
        since: Option<NaiveDate>,
    ) -> Result<(Option<String>, serde_json::Value)> {
        let spec = self.spec(q)?;
        let e164 = number.e164();
        let path = spec
            .path
            .replace("{number}", e164.trim_start_matches('+'))
            .replace("{e164}", &e164.replace('+', "%2B"))
            .replace("{since}", &since.map(|d| d.to_string()).unwrap_or_default());
        let url = format!("{}{}", self.cfg.base_url.trim_end_matches('/'), path);
        let mut req = self.client.get(&url);
        if let Some(t) = &self.cfg.token {
            req = req.bearer_auth(t);
        }
        // reqwest's errors can include the URL, which holds the number: report the kind only.
        let transport = |e: reqwest::Error| IntelError::Transport {
            source_name: self.cfg.name.clone(),
            message: if e.is_timeout() {
                "timed out".into()
            } else if e.is_connect() {
                "could not connect".into()
            } else if e.is_decode() {
                "the body is not JSON".into()
            } else {
                "request error".into()
            },
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(IntelError::Vendor {
                source_name: self.cfg.name.clone(),
                message: format!("HTTP {status} for a {} query", q.as_str()),
            });
        }
        let body: serde_json::Value = resp.json().await.map_err(transport)?;
        let Some(value) = body.pointer(&spec.field) else {
            return Err(IntelError::Vendor {
                source_name: self.cfg.name.clone(),
                message: format!("the answer has no field {} for a {} query", spec.field, q.as_str()),
            });
        };
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let name = spec
            .values
            .iter()
            .find(|(_, vendor)| vendor.iter().any(|v| v == &text))
            .map(|(ours, _)| ours.clone());
        if name.is_none() {
            tracing::warn!(source = %self.cfg.name, query = q.as_str(), value = %text, "unmapped vendor value; read as unknown");
        }
        Ok((name, body))
    }

    async fn change(&self, q: Query, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince> {
        let (name, body) = self.ask(q, number, Some(since)).await?;
        let changed = match name.as_deref() {
            Some("yes") => true,
            Some("no") => false,
            _ => {
                return Err(IntelError::Vendor {
                    source_name: self.cfg.name.clone(),
                    message: format!("no yes/no answer to a {} query", q.as_str()),
                })
            }
        };
        let spec = self.spec(q)?;
        let on = spec
            .date_field
            .as_ref()
            .and_then(|f| body.pointer(f))
            .and_then(|v| v.as_str())
            .and_then(|s| s.get(..10))
            .and_then(|s| s.parse().ok());
        Ok(ChangeSince { since, changed, on })
    }
}

#[async_trait]
impl NumberIntel for HttpIntel {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn status(&self, number: &PhoneNumber) -> Result<NumberStatus> {
        let (name, _) = self.ask(Query::Status, number, None).await?;
        Ok(name.and_then(|n| n.parse().ok()).unwrap_or(NumberStatus::Unknown))
    }

    async fn recycled_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<RecycleAnswer> {
        let (name, _) = self.ask(Query::Recycled, number, Some(since)).await?;
        Ok(name.and_then(|n| n.parse().ok()).unwrap_or(RecycleAnswer::NoData))
    }

    async fn sim_swap_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince> {
        self.change(Query::SimSwap, number, since).await
    }

    async fn ported_since(&self, number: &PhoneNumber, since: NaiveDate) -> Result<ChangeSince> {
        self.change(Query::Ported, number, since).await
    }
}
