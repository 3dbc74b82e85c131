//! Borrower replies (SMS text, any language, any bytes) through the reply classifier.

use std::sync::OnceLock;

use reachline_policy::reply::normalise;
use reachline_policy::{ReplyClass, ReplyClassifier};

pub(crate) fn classifier() -> &'static ReplyClassifier {
    static C: OnceLock<ReplyClassifier> = OnceLock::new();
    C.get_or_init(ReplyClassifier::default)
}

pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = normalise(&text);
    let c = classifier().classify(&text);
    // The signals are distinct classes in precedence order; the class is the first of them, or
    // `other` with no cue.
    assert!(c.signals.windows(2).all(|w| w[0] < w[1]), "signals out of order: {c:?}");
    match c.signals.first() {
        Some(&first) => assert_eq!(c.class, first, "{c:?}"),
        None => {
            assert_eq!(c.class, ReplyClass::Other, "{c:?}");
            assert_eq!(c.rule, "no_cue");
        }
    }
    assert!(!c.rule.is_empty());
    if c.new_number.is_some() {
        assert!(
            c.signals.contains(&ReplyClass::NewNumber),
            "a stated number is no signal: {c:?}"
        );
    }
    let _ = c.to_string();
    let _ = c.class.stops_contact();
}
