//! Matching receipts to the messages they answer, by provider message id.
//!
//! Providers do not echo ids the way they issued them: leading zeros come and go, hex turns
//! into decimal, case changes. Ids are stored raw and matched on normalised variants, exact
//! text first. A receipt can also arrive before the `submit_sm_resp` carrying its id has been
//! processed, so an unmatched receipt is held for a while and matched when the id is
//! registered, not dropped. Time is handed in, so this is pure.
//!
//! A receipt matches at once only on its own text (case and leading zeros aside). One that
//! matches only by a numeric reading — decimal `16` is hex `10` — waits `variant_wait` first:
//! small ids collide that way, and the receipt for `16` often comes before the `submit_sm_resp`
//! that registers `16`, while `10` is already registered. Matched at once, it would be given to
//! the wrong message (seen in the engine's test against the sandbox SMSC); after the wait, the
//! exact id has had its chance and a variant match is what the upstream means.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How an upstream writes a message's id in its receipts, compared with its `submit_sm_resp`
/// (Kannel calls this `msg-id-type`). Set per upstream when it is known; `auto` copes with any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdForm {
    /// Unknown: the same text matches at once, a numeric reading (hex ↔ decimal) after
    /// `variant_wait`.
    #[default]
    Auto,
    /// The same id (case and leading zeros aside); a numeric reading never matches.
    Same,
    /// Hex in `submit_sm_resp`, decimal in receipts: matched at once by value.
    HexToDecimal,
    /// Decimal in `submit_sm_resp`, hex in receipts: matched at once by value.
    DecimalToHex,
}

/// The key an id is registered under (`issued`) or looked up by (a receipt's), in a known form.
fn form_key(form: IdForm, raw: &str, issued: bool) -> Option<String> {
    let t = raw.trim().to_ascii_lowercase();
    let t = t.strip_prefix("0x").unwrap_or(&t).to_string();
    let radix = match (form, issued) {
        (IdForm::HexToDecimal, true) | (IdForm::DecimalToHex, false) => 16,
        (IdForm::HexToDecimal, false) | (IdForm::DecimalToHex, true) => 10,
        (IdForm::Auto | IdForm::Same, _) => return id_keys(raw).into_iter().next(),
    };
    u128::from_str_radix(&t, radix).ok().map(|v| format!("n:{v}"))
}

/// The lookup keys of an id, best first: the trimmed, case-folded text without leading zeros,
/// then its value read as decimal, then as hex.
pub fn id_keys(raw: &str) -> Vec<String> {
    let t = raw.trim().to_ascii_lowercase();
    let t = t.strip_prefix("0x").unwrap_or(&t);
    let stripped = t.trim_start_matches('0');
    let stripped = if stripped.is_empty() && !t.is_empty() {
        "0"
    } else {
        stripped
    };
    let mut keys = vec![format!("s:{stripped}")];
    if !stripped.is_empty() && stripped.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(v) = stripped.parse::<u128>() {
            keys.push(format!("n:{v}"));
        }
    }
    if !stripped.is_empty() && stripped.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Ok(v) = u128::from_str_radix(stripped, 16) {
            let k = format!("n:{v}");
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

struct Entry<M> {
    raw: String,
    keys: Vec<String>,
    meta: M,
    at: Instant,
}

struct Held<R> {
    raw: String,
    receipt: R,
    final_state: bool,
    at: Instant,
}

/// What a pass of [`Matcher::expire`] settled.
#[derive(Debug, PartialEq, Eq)]
pub struct Expired<M, R> {
    /// Held receipts matched by a numeric reading of their id, after waiting for an exact one.
    pub matched: Vec<(M, String, R)>,
    /// Held receipts no id came for; report them unmatched.
    pub unmatched: Vec<(String, R)>,
}

/// Registered ids with their messages (`M`), and receipts (`R`) waiting for an id.
pub struct Matcher<M, R> {
    form: IdForm,
    next: u64,
    entries: HashMap<u64, Entry<M>>,
    index: HashMap<String, Vec<u64>>,
    held: Vec<Held<R>>,
    /// How long a receipt waits for its id before it is given up as unmatched.
    pub hold_for: Duration,
    /// How long a receipt that matches only by a numeric reading of its id waits for an exact
    /// match first.
    pub variant_wait: Duration,
    /// How long a registered id waits for its final receipt.
    pub keep_for: Duration,
}

/// What became of a receipt handed to the matcher.
#[derive(Debug, PartialEq, Eq)]
pub enum Matched<M, R> {
    /// It answers this message; `raw_id` is the id as the provider issued it.
    Now { meta: M, raw_id: String, receipt: R },
    /// No such id yet; it is held.
    Held,
}

impl<M: Clone, R> Matcher<M, R> {
    pub fn new(hold_for: Duration, keep_for: Duration) -> Self {
        Matcher {
            form: IdForm::Auto,
            next: 0,
            entries: HashMap::new(),
            index: HashMap::new(),
            held: Vec::new(),
            hold_for,
            variant_wait: hold_for.min(Duration::from_secs(2)),
            keep_for,
        }
    }

    /// The same matcher for an upstream whose id form is known.
    pub fn with_form(mut self, form: IdForm) -> Self {
        self.form = form;
        self
    }

    /// The keys an issued id is registered under.
    fn issued_keys(&self, raw: &str) -> Vec<String> {
        match self.form {
            IdForm::Auto => id_keys(raw),
            form => form_key(form, raw, true).into_iter().collect(),
        }
    }

    /// The key a receipt's id matches at once.
    fn receipt_key(&self, raw: &str) -> Vec<String> {
        form_key(self.form, raw, false).into_iter().collect()
    }

    fn lookup(&self, keys: &[String]) -> Option<u64> {
        keys.iter().find_map(|k| {
            // The oldest candidate wins when two ids normalise alike; exact text is tried first.
            self.index
                .get(k)
                .and_then(|c| c.iter().copied().min_by_key(|id| self.entries[id].at))
        })
    }

    /// Registers a provider id for a message; returns the held receipts that answer it.
    pub fn register(&mut self, raw_id: &str, meta: M, now: Instant) -> Vec<(M, String, R)> {
        let keys = self.issued_keys(raw_id);
        let n = self.next;
        self.next += 1;
        for k in &keys {
            self.index.entry(k.clone()).or_default().push(n);
        }
        self.entries.insert(
            n,
            Entry {
                raw: raw_id.to_string(),
                keys,
                meta,
                at: now,
            },
        );
        // Held receipts with this exact id; variant matches wait for `expire`.
        let mut out = Vec::new();
        let mut i = 0;
        let mut retire = false;
        while i < self.held.len() {
            if self.lookup(&self.receipt_key(&self.held[i].raw)) == Some(n) {
                let h = self.held.remove(i);
                retire |= h.final_state;
                out.push((self.entries[&n].meta.clone(), self.entries[&n].raw.clone(), h.receipt));
            } else {
                i += 1;
            }
        }
        if retire {
            self.remove(n);
        }
        out
    }

    /// Matches a receipt, or holds it. A `final_state` receipt retires the id.
    pub fn receipt(&mut self, raw_id: &str, receipt: R, final_state: bool, now: Instant) -> Matched<M, R> {
        match self.lookup(&self.receipt_key(raw_id)) {
            Some(n) => {
                let (meta, raw) = {
                    let e = &self.entries[&n];
                    (e.meta.clone(), e.raw.clone())
                };
                if final_state {
                    self.remove(n);
                }
                Matched::Now {
                    meta,
                    raw_id: raw,
                    receipt,
                }
            }
            None => {
                self.held.push(Held {
                    raw: raw_id.to_string(),
                    receipt,
                    final_state,
                    at: now,
                });
                Matched::Held
            }
        }
    }

    fn remove(&mut self, n: u64) {
        if let Some(e) = self.entries.remove(&n) {
            for k in e.keys {
                if let Some(v) = self.index.get_mut(&k) {
                    v.retain(|x| *x != n);
                    if v.is_empty() {
                        self.index.remove(&k);
                    }
                }
            }
        }
    }

    /// Matches held receipts that have waited `variant_wait` by a numeric reading of their
    /// id, gives up those older than `hold_for` (to be reported unmatched) and forgets ids older
    /// than `keep_for`.
    pub fn expire(&mut self, now: Instant) -> Expired<M, R> {
        let mut out = Expired {
            matched: Vec::new(),
            unmatched: Vec::new(),
        };
        for h in std::mem::take(&mut self.held) {
            let waited = now.duration_since(h.at);
            if waited >= self.variant_wait && self.form == IdForm::Auto {
                if let Some(n) = self.lookup(&id_keys(&h.raw)) {
                    let e = &self.entries[&n];
                    out.matched.push((e.meta.clone(), e.raw.clone(), h.receipt));
                    if h.final_state {
                        self.remove(n);
                    }
                    continue;
                }
            }
            if waited >= self.hold_for {
                out.unmatched.push((h.raw, h.receipt));
            } else {
                self.held.push(h);
            }
        }
        let stale: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| now.duration_since(e.at) >= self.keep_for)
            .map(|(n, _)| *n)
            .collect();
        for n in stale {
            self.remove(n);
        }
        out
    }

    pub fn registered(&self) -> usize {
        self.entries.len()
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Matcher<&'static str, u32> {
        Matcher::new(Duration::from_secs(60), Duration::from_secs(3600))
    }

    #[test]
    fn keys_of_ids() {
        assert_eq!(id_keys(" 000123 "), vec!["s:123", "n:123", "n:291"]);
        assert_eq!(id_keys("7A3F0B"), vec!["s:7a3f0b", "n:8011531"]);
        assert_eq!(id_keys("msg-1"), vec!["s:msg-1"]);
        assert_eq!(id_keys("000"), vec!["s:0", "n:0"]);
    }

    #[test]
    fn matches_variants() {
        let t = Instant::now();
        for (issued, seen) in [
            ("0000ABC1", "abc1"),
            ("7A3F0B", "8011531"),
            ("8011531", "7a3f0b"),
            ("  42", "00042"),
            ("X-9", "x-9"),
        ] {
            let mut m = m();
            assert!(m.register(issued, "msg", t).is_empty());
            let same_text = id_keys(issued)[0] == id_keys(seen)[0];
            match m.receipt(seen, 1, true, t) {
                Matched::Now { meta, raw_id, receipt } => {
                    assert!(same_text, "{issued} vs {seen}: a numeric reading matched at once");
                    assert_eq!((meta, raw_id.as_str(), receipt), ("msg", issued, 1));
                }
                Matched::Held => {
                    assert!(!same_text, "{issued} vs {seen}: the same text was held");
                    assert!(m.expire(t + m.variant_wait / 2).matched.is_empty(), "it waits first");
                    let e = m.expire(t + m.variant_wait);
                    assert_eq!(e.matched, vec![("msg", issued.to_string(), 1)], "{issued} vs {seen}");
                }
            }
            assert_eq!(m.registered(), 0, "a final receipt retires the id");
        }
    }

    #[test]
    fn exact_text_beats_a_numeric_coincidence() {
        let t = Instant::now();
        let mut m = m();
        m.register("10", "hex-ten-is-sixteen", t); // n:10 and n:16
        m.register("16", "sixteen", t + Duration::from_secs(1));
        match m.receipt("16", 0, true, t) {
            Matched::Now { meta, .. } => assert_eq!(meta, "sixteen"),
            Matched::Held => panic!("held"),
        }
    }

    #[test]
    fn an_early_receipt_waits_for_its_own_id_not_a_numeric_coincidence() {
        let t = Instant::now();
        let mut m = m();
        m.register("10", "ten", t); // n:10 and n:16 (hex)
        assert_eq!(
            m.receipt("16", 0, true, t),
            Matched::Held,
            "16's own resp is still on its way"
        );
        let got = m.register("16", "sixteen", t + Duration::from_millis(30));
        assert_eq!(got, vec![("sixteen", "16".to_string(), 0)]);
        assert_eq!(
            m.registered(),
            1,
            "16 is retired by its final receipt; 10 waits for its own"
        );
        assert_eq!(
            m.receipt("10", 1, true, t),
            Matched::Now {
                meta: "ten",
                raw_id: "10".into(),
                receipt: 1
            }
        );
    }

    #[test]
    fn a_known_id_form_matches_at_once_and_only_so() {
        let t = Instant::now();
        let mut hex = m().with_form(IdForm::HexToDecimal);
        hex.register("7A3F0B", "hex", t);
        hex.register("10", "sixteen", t);
        assert_eq!(
            hex.receipt("8011531", 0, true, t),
            Matched::Now {
                meta: "hex",
                raw_id: "7A3F0B".into(),
                receipt: 0
            }
        );
        assert_eq!(
            hex.receipt("16", 1, true, t),
            Matched::Now {
                meta: "sixteen",
                raw_id: "10".into(),
                receipt: 1
            }
        );
        let mut same = m().with_form(IdForm::Same);
        same.register("10", "ten", t);
        assert_eq!(same.receipt("16", 0, true, t), Matched::Held);
        assert!(
            same.expire(t + Duration::from_secs(30)).matched.is_empty(),
            "no numeric reading"
        );
        assert_eq!(
            same.receipt("010", 1, true, t),
            Matched::Now {
                meta: "ten",
                raw_id: "10".into(),
                receipt: 1
            }
        );
        let mut dec = m().with_form(IdForm::DecimalToHex);
        dec.register("255", "dec", t);
        assert_eq!(
            dec.receipt("FF", 0, true, t),
            Matched::Now {
                meta: "dec",
                raw_id: "255".into(),
                receipt: 0
            }
        );
    }

    #[test]
    fn an_early_receipt_is_held_then_matched() {
        let t = Instant::now();
        let mut m = m();
        assert_eq!(m.receipt("00FF", 7, true, t), Matched::Held);
        assert_eq!(m.held(), 1);
        let got = m.register("ff", "late resp", t + Duration::from_millis(5));
        assert_eq!(got, vec![("late resp", "ff".to_string(), 7)]);
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn non_final_receipts_keep_the_id_and_held_ones_expire() {
        let t = Instant::now();
        let mut m = m();
        m.register("1", "a", t);
        assert!(matches!(m.receipt("1", 0, false, t), Matched::Now { .. }));
        assert!(matches!(m.receipt("1", 1, true, t), Matched::Now { .. }));
        assert_eq!(m.receipt("1", 2, true, t), Matched::Held);
        assert!(m.expire(t + Duration::from_secs(59)).unmatched.is_empty());
        assert_eq!(
            m.expire(t + Duration::from_secs(60)).unmatched,
            vec![("1".to_string(), 2)]
        );
        m.register("2", "b", t);
        m.expire(t + Duration::from_secs(3600));
        assert_eq!(m.registered(), 0);
    }
}
