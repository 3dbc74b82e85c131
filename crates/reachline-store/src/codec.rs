//! The column values both back ends store, and the conversions to and from domain types. All
//! sealing and blind-indexing happens here, so a back end only moves bytes and text.

use chrono::{DateTime, NaiveDate, Utc};
use reachline_domain::national_id::IdScheme;
use reachline_domain::{
    borrower::parse_time_zone, Borrower, BorrowerId, Consent, ContactAddress, ContactId, ContactKind, ContactPoint,
    ContactRole, ExternalId, LineType, NationalId, PersonName, PhoneNumber,
};

use crate::crypto::{Keyring, Sealer};
use crate::{Result, StoreError};

pub const F_NAME: &str = "borrower.name";
pub const F_NATIONAL_ID: &str = "borrower.national_id";
pub const F_ADDRESS: &str = "contact.address";
pub const F_HOLDER: &str = "contact.holder_name";

/// A borrower's columns, personal fields sealed.
#[derive(Debug, Clone)]
pub struct BorrowerRow {
    pub external_id: String,
    pub name_enc: Vec<u8>,
    pub national_id_scheme: Option<String>,
    pub national_id_enc: Option<Vec<u8>>,
    pub national_id_bidx: Option<Vec<u8>>,
    pub locale: String,
    pub time_zone: String,
    pub jurisdiction: String,
}

impl BorrowerRow {
    pub fn seal(b: &Borrower, sealer: &Sealer, keys: &Keyring) -> Self {
        Self {
            external_id: b.external_id.as_str().to_string(),
            name_enc: sealer.seal(F_NAME, b.name.as_str()),
            national_id_scheme: b.national_id.as_ref().map(|n| n.scheme().as_str().to_string()),
            national_id_enc: b.national_id.as_ref().map(|n| sealer.seal(F_NATIONAL_ID, n.as_str())),
            national_id_bidx: b.national_id.as_ref().map(|n| national_id_bidx(keys, n).to_vec()),
            locale: b.locale.as_str().to_string(),
            time_zone: b.time_zone.name().to_string(),
            jurisdiction: b.jurisdiction.as_str().to_string(),
        }
    }

    pub fn open(&self, sealer: &Sealer) -> Result<Borrower> {
        let name = PersonName::parse(&sealer.open(F_NAME, &self.name_enc)?).map_err(corrupt)?;
        let national_id = match (&self.national_id_scheme, &self.national_id_enc) {
            (Some(scheme), Some(enc)) => {
                let scheme: IdScheme = scheme.parse().map_err(corrupt)?;
                Some(NationalId::parse(scheme, &sealer.open(F_NATIONAL_ID, enc)?).map_err(corrupt)?)
            }
            _ => None,
        };
        Ok(Borrower {
            external_id: ExternalId::parse(&self.external_id).map_err(corrupt)?,
            name,
            national_id,
            locale: self.locale.parse().map_err(corrupt)?,
            time_zone: parse_time_zone(&self.time_zone).map_err(corrupt)?,
            jurisdiction: self.jurisdiction.parse().map_err(corrupt)?,
        })
    }
}

/// A contact point's columns, personal fields sealed.
#[derive(Debug, Clone)]
pub struct ContactRow {
    pub slot: String,
    pub kind: String,
    pub role: String,
    pub relation: Option<String>,
    pub line_type: Option<String>,
    pub address_enc: Vec<u8>,
    pub address_bidx: Vec<u8>,
    pub holder_name_enc: Option<Vec<u8>>,
    pub bound_since: NaiveDate,
    pub source: String,
    pub verified_at: Option<DateTime<Utc>>,
}

impl ContactRow {
    pub fn seal(p: &ContactPoint, sealer: &Sealer, keys: &Keyring) -> Self {
        Self {
            slot: p.slot.as_str().to_string(),
            kind: p.kind.as_str().to_string(),
            role: p.role.name().to_string(),
            relation: p.role.relation().map(|r| r.as_str().to_string()),
            line_type: p.address.line_type().map(|l| l.as_str().to_string()),
            address_enc: sealer.seal(F_ADDRESS, &p.address.canonical()),
            address_bidx: address_bidx(keys, &p.address).to_vec(),
            holder_name_enc: p.holder_name.as_ref().map(|n| sealer.seal(F_HOLDER, n.as_str())),
            bound_since: p.bound_since,
            source: p.source.as_str().to_string(),
            verified_at: p.verified_at,
        }
    }

    pub fn open(&self, sealer: &Sealer) -> Result<ContactPoint> {
        let kind: ContactKind = self.kind.parse().map_err(corrupt)?;
        let line: Option<LineType> = self.line_type.as_deref().map(str::parse).transpose().map_err(corrupt)?;
        let address =
            ContactAddress::from_canonical(kind, &sealer.open(F_ADDRESS, &self.address_enc)?, line).map_err(corrupt)?;
        let holder_name = match &self.holder_name_enc {
            Some(enc) => Some(PersonName::parse(&sealer.open(F_HOLDER, enc)?).map_err(corrupt)?),
            None => None,
        };
        Ok(ContactPoint {
            slot: ExternalId::parse(&self.slot).map_err(corrupt)?,
            kind,
            address,
            role: ContactRole::from_parts(&self.role, self.relation.as_deref()).map_err(corrupt)?,
            holder_name,
            bound_since: self.bound_since,
            source: self.source.parse().map_err(corrupt)?,
            verified_at: self.verified_at,
        })
    }
}

/// The blind index of a contact address, domain-separated by kind of address.
pub fn address_bidx(keys: &Keyring, a: &ContactAddress) -> [u8; 32] {
    let domain = match a {
        ContactAddress::Phone(n) => return phone_bidx(keys, n),
        ContactAddress::Email(_) => "email",
        ContactAddress::PushToken(_) => "push",
        ContactAddress::Im { .. } => "im",
    };
    keys.blind_index(domain, &a.canonical())
}

/// The blind index of a phone number: the one contact points, lookups by number and the
/// disconnection registry share, so they can be joined without plaintext.
pub fn phone_bidx(keys: &Keyring, n: &PhoneNumber) -> [u8; 32] {
    keys.blind_index("phone", n.e164())
}

pub fn national_id_bidx(keys: &Keyring, n: &NationalId) -> [u8; 32] {
    keys.blind_index(&format!("national_id/{}", n.scheme()), n.as_str())
}

/// The data keys of the borrowers an import touched most recently, so their contact points can
/// be sealed without unwrapping the key again. Bounded: books list a borrower's contacts close
/// together, so a few thousand keys hit nearly always, and a million-borrower import does not
/// hold a million keys. A miss unwraps the key from the database.
pub(crate) struct KeyCache {
    map: std::collections::HashMap<BorrowerId, crate::crypto::DataKey>,
    order: std::collections::VecDeque<BorrowerId>,
}

impl KeyCache {
    const CAPACITY: usize = 8192;

    pub fn new() -> Self {
        Self {
            map: Default::default(),
            order: Default::default(),
        }
    }

    pub fn get(&self, b: &BorrowerId) -> Option<&crate::crypto::DataKey> {
        self.map.get(b)
    }

    pub fn insert(&mut self, b: BorrowerId, key: crate::crypto::DataKey) {
        if self.map.insert(b, key).is_none() {
            self.order.push_back(b);
            if self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                }
            }
        }
    }
}

/// The current contact point in a slot, as the import diff needs it.
#[derive(Debug, Clone)]
pub struct CurrentSlot {
    pub contact_id: ContactId,
    pub kind: String,
    pub address_bidx: Vec<u8>,
    pub verified_at: Option<DateTime<Utc>>,
}

/// What an import does with one incoming contact point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotAction {
    Add,
    Unchanged(ContactId),
    /// Same address, and the book says it was verified later than the store knew.
    Verify(ContactId, DateTime<Utc>),
    Replace(ContactId),
}

/// Decides what to do with `incoming` given the slot's current contact point. The same address
/// is the same blind index and kind; anything else replaces.
pub fn plan_slot(current: Option<&CurrentSlot>, incoming: &ContactRow) -> SlotAction {
    match current {
        None => SlotAction::Add,
        Some(c) if c.address_bidx == incoming.address_bidx && c.kind == incoming.kind => {
            match (incoming.verified_at, c.verified_at) {
                (Some(new), Some(old)) if new > old => SlotAction::Verify(c.contact_id, new),
                (Some(new), None) => SlotAction::Verify(c.contact_id, new),
                _ => SlotAction::Unchanged(c.contact_id),
            }
        }
        Some(c) => SlotAction::Replace(c.contact_id),
    }
}

/// The consent columns; an all-channel consent is stored with channel `all` so that the
/// uniqueness that makes re-imports idempotent also holds for it.
pub fn consent_channel(c: &Consent) -> &'static str {
    c.channel.map(|ch| ch.as_str()).unwrap_or("all")
}

/// A borrower's preferences from their columns (see `0010_preferences.sql`).
pub fn preferences_from_columns(
    channels: Option<&str>,
    quiet_start: Option<i32>,
    quiet_end: Option<i32>,
) -> Result<reachline_domain::Preferences> {
    let channels = channels
        .unwrap_or_default()
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<reachline_domain::Channel>().map_err(corrupt))
        .collect::<Result<Vec<_>>>()?;
    let minute = |m: i32| {
        u32::try_from(m)
            .ok()
            .and_then(|m| chrono::NaiveTime::from_hms_opt(m / 60, m % 60, 0))
            .ok_or_else(|| corrupt(format!("minute of the day {m}")))
    };
    let quiet = match (quiet_start, quiet_end) {
        (Some(s), Some(e)) => Some(reachline_domain::QuietHours::new(minute(s)?, minute(e)?).map_err(corrupt)?),
        _ => None,
    };
    reachline_domain::Preferences::new(channels, quiet).map_err(corrupt)
}

/// A borrower's preferences as columns: channels, quiet start and end in minutes.
pub fn preferences_to_columns(p: &reachline_domain::Preferences) -> (String, Option<i32>, Option<i32>) {
    use chrono::Timelike;
    let channels: Vec<&str> = p.channels.iter().map(|c| c.as_str()).collect();
    let minute = |t: chrono::NaiveTime| (t.hour() * 60 + t.minute()) as i32;
    (
        channels.join(","),
        p.quiet.map(|q| minute(q.start)),
        p.quiet.map(|q| minute(q.end)),
    )
}

pub fn consent_from_columns(
    purpose: &str,
    channel: &str,
    state: &str,
    at: DateTime<Utc>,
    source: &str,
    text_version: String,
) -> Result<Consent> {
    Ok(Consent {
        purpose: purpose.parse().map_err(corrupt)?,
        channel: if channel == "all" {
            None
        } else {
            Some(channel.parse().map_err(corrupt)?)
        },
        state: state.parse().map_err(corrupt)?,
        at,
        source: source.parse().map_err(corrupt)?,
        text_version,
    })
}

pub fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Timestamps in SQLite are microseconds since the Unix epoch.
pub fn ts_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn ts_from_micros(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(format!("timestamp {us} out of range")))
}

/// Timestamps in COPY text are RFC 3339 in UTC with microseconds, so text order is time order.
pub fn ts_text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub fn date_parse(s: &str) -> Result<NaiveDate> {
    reachline_domain::date::parse_ymd(s).ok_or_else(|| corrupt(format!("date {s:?} is not YYYY-MM-DD")))
}
