//! Charts as SVG, drawn here: a few rectangles, polylines and text. Written by hand rather than
//! with a plotting crate because every figure stays in the markup as text — a `<title>` per bar
//! and point and a table beside each chart — so a screen reader, a test and a person printing
//! the page read the same numbers the picture shows.

use std::fmt::Write;

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Colours that stay apart for the common colour-vision deficiencies (Okabe–Ito).
const PALETTE: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
];

/// Horizontal bars, one per item, each labelled with its value.
pub fn bars(id: &str, title: &str, items: &[(String, u64)]) -> String {
    let row = 26;
    let (label_w, bar_w) = (190.0, 330.0);
    let h = 30 + row * items.len().max(1);
    let max = items.iter().map(|i| i.1).max().unwrap_or(0).max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" role="img" aria-labelledby="{id}-t" viewBox="0 0 600 {h}" width="100%"><title id="{id}-t">{}</title>"#,
        esc(title)
    );
    if items.is_empty() {
        let _ = write!(s, r#"<text x="10" y="40" class="empty">nothing yet</text>"#);
    }
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 20 + i * row;
        let w = (*v as f64 / max * bar_w).max(1.0);
        let _ = write!(
            s,
            r#"<g class="bar" data-label="{l}" data-value="{v}"><title>{l}: {v}</title><text x="{tx}" y="{ty}" text-anchor="end">{l}</text><rect x="{label_w}" y="{y}" width="{w:.1}" height="18" fill="{c}"/><text x="{vx:.1}" y="{ty}">{v}</text></g>"#,
            l = esc(label),
            tx = label_w - 6.0,
            ty = y + 14,
            c = PALETTE[0],
            vx = label_w + w + 6.0,
        );
    }
    s.push_str("</svg>");
    s
}

/// One line per series over days, y from 0 to `y_max`, values shown as `fmt` gives them.
pub fn lines(
    id: &str,
    title: &str,
    series: &[(String, Vec<(chrono::NaiveDate, f64)>)],
    y_max: f64,
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let (w, h, left, top, bottom) = (600.0, 260.0, 50.0, 20.0, 40.0);
    let days: Vec<chrono::NaiveDate> = {
        let mut d: Vec<_> = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).collect();
        d.sort();
        d.dedup();
        d
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" role="img" aria-labelledby="{id}-t" viewBox="0 0 {w} {h}" width="100%"><title id="{id}-t">{}</title>"#,
        esc(title)
    );
    let plot_w = w - left - 20.0;
    let plot_h = h - top - bottom;
    let x_of = |d: chrono::NaiveDate| {
        let i = days.iter().position(|x| *x == d).unwrap_or(0) as f64;
        left + if days.len() > 1 {
            i / (days.len() - 1) as f64 * plot_w
        } else {
            plot_w / 2.0
        }
    };
    let y_of = |v: f64| top + plot_h - (v / y_max.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0) * plot_h;
    // Axes and the y scale's ends.
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{yb}" stroke="#555"/><line x1="{left}" y1="{yb}" x2="{xr}" y2="{yb}" stroke="#555"/><text x="{lx}" y="{yt}" text-anchor="end">{}</text><text x="{lx}" y="{yb}" text-anchor="end">{}</text>"##,
        esc(&fmt(y_max)),
        esc(&fmt(0.0)),
        yb = top + plot_h,
        xr = left + plot_w,
        lx = left - 4.0,
        yt = top + 4.0,
    );
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            s,
            r#"<text x="{left}" y="{y}">{first}</text><text x="{xr}" y="{y}" text-anchor="end">{last}</text>"#,
            y = h - bottom + 16.0,
            xr = left + plot_w,
        );
    }
    if days.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="empty">nothing yet</text>"#,
            left + 10.0,
            top + 30.0
        );
    }
    for (k, (name, points)) in series.iter().enumerate() {
        let c = PALETTE[k % PALETTE.len()];
        let pts: Vec<String> = points
            .iter()
            .map(|(d, v)| format!("{:.1},{:.1}", x_of(*d), y_of(*v)))
            .collect();
        let _ = write!(
            s,
            r#"<g class="series" data-name="{n}"><polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            pts.join(" "),
            n = esc(name)
        );
        for (d, v) in points {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}" data-day="{d}" data-value="{v:.4}"><title>{n} {d}: {}</title></circle>"#,
                x_of(*d),
                y_of(*v),
                esc(&fmt(*v)),
                n = esc(name)
            );
        }
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{y}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{ty}">{n}</text></g>"#,
            x = left + 10.0 + 110.0 * k as f64,
            y = h - 14.0,
            tx = left + 24.0 + 110.0 * k as f64,
            ty = h - 5.0,
            n = esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_carry_their_numbers_as_text_and_escape_labels() {
        let b = bars("b", "Outcomes", &[("delivered".into(), 40), ("<dead>".into(), 10)]);
        assert!(b.contains(r#"data-label="delivered" data-value="40""#));
        assert!(b.contains("&lt;dead&gt;: 10"));
        assert!(!b.contains("<dead>"));
        let d = |n| chrono::NaiveDate::from_ymd_opt(2026, 3, n).unwrap();
        let l = lines(
            "l",
            "Reach",
            &[("sms".into(), vec![(d(1), 0.5), (d(2), 0.75)])],
            1.0,
            &|v| format!("{:.0}%", v * 100.0),
        );
        assert!(l.contains("sms 2026-03-02: 75%"));
        assert!(l.contains("2026-03-01</text>"));
        assert_eq!(l.matches("<circle").count(), 2);
    }
}
