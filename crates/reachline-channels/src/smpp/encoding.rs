//! Text to SMPP short messages: GSM 03.38 (7-bit alphabet, one septet per byte as SMSCs take
//! it with `data_coding` 0) when every character fits, UCS-2 (UTF-16BE, `data_coding` 8)
//! otherwise — Chinese text always. Long text is split with an 8-bit-reference concatenation
//! UDH: GSM-7 160 characters in one part or 153 per part, UCS-2 70 or 67.

/// The GSM 03.38 default alphabet, by code.
const GSM_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', 'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω',
    'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+',
    ',', '-', '.', '/', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', '¡', 'A', 'B',
    'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', 'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y',
    'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p',
    'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à',
];

/// The extension table, reached by the escape code 0x1B; each costs two septets.
const GSM_EXT: [(char, u8); 10] = [
    ('\u{0c}', 0x0A),
    ('^', 0x14),
    ('{', 0x28),
    ('}', 0x29),
    ('\\', 0x2F),
    ('[', 0x3C),
    ('~', 0x3D),
    (']', 0x3E),
    ('|', 0x40),
    ('€', 0x65),
];

fn gsm_codes(c: char) -> Option<Vec<u8>> {
    if c == '\u{1b}' {
        return None;
    }
    if let Some(i) = GSM_BASIC.iter().position(|&g| g == c) {
        return Some(vec![i as u8]);
    }
    GSM_EXT.iter().find(|(g, _)| *g == c).map(|(_, code)| vec![0x1B, *code])
}

/// `data_coding` values used here.
pub const DC_DEFAULT: u8 = 0x00;
pub const DC_UCS2: u8 = 0x08;

/// One `submit_sm` worth of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub data_coding: u8,
    /// With the UDH in front when `udhi` is set.
    pub short_message: Vec<u8>,
    /// Sets `esm_class` bit 0x40.
    pub udhi: bool,
}

/// Splits and encodes a text. `reference` is the concatenation reference shared by the parts.
pub fn encode(text: &str, reference: u8) -> Vec<Part> {
    let gsm: Option<Vec<Vec<u8>>> = text.chars().map(gsm_codes).collect();
    let (units, dc, single, per_part): (Vec<Vec<u8>>, u8, usize, usize) = match gsm {
        Some(codes) => (codes, DC_DEFAULT, 160, 153),
        None => {
            // UTF-16 code units; a character outside the BMP stays one indivisible unit of two.
            let units = text
                .chars()
                .map(|c| {
                    let mut buf = [0u16; 2];
                    c.encode_utf16(&mut buf).iter().flat_map(|u| u.to_be_bytes()).collect()
                })
                .collect();
            (units, DC_UCS2, 140, 134)
        }
    };
    // Both encodings here spend one byte per septet or two per UTF-16 unit, so length is cost.
    let total: usize = units.iter().map(Vec::len).sum();
    if total <= single {
        return vec![Part {
            data_coding: dc,
            short_message: units.concat(),
            udhi: false,
        }];
    }
    let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
    for u in &units {
        // `unwrap`: chunks starts non-empty and only grows.
        if chunks.last().unwrap().len() + u.len() > per_part {
            chunks.push(Vec::new());
        }
        chunks.last_mut().unwrap().extend_from_slice(u);
    }
    let n = chunks.len().min(255) as u8;
    chunks
        .into_iter()
        .take(255)
        .enumerate()
        .map(|(i, body)| {
            let mut sm = vec![0x05, 0x00, 0x03, reference, n, i as u8 + 1];
            sm.extend(body);
            Part {
                data_coding: dc,
                short_message: sm,
                udhi: true,
            }
        })
        .collect()
}

/// Decodes a short message back to text (for receipts' `text:` and the sandbox's logs).
pub fn decode(data_coding: u8, bytes: &[u8], udhi: bool) -> String {
    let body = if udhi && !bytes.is_empty() {
        bytes.get(1 + bytes[0] as usize..).unwrap_or(&[])
    } else {
        bytes
    };
    if data_coding == DC_UCS2 {
        let units: Vec<u16> = body
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            .collect();
        return String::from_utf16_lossy(&units);
    }
    let mut out = String::new();
    let mut esc = false;
    for &b in body {
        if esc {
            out.push(GSM_EXT.iter().find(|(_, c)| *c == b).map_or('?', |(g, _)| *g));
            esc = false;
        } else if b == 0x1B {
            esc = true;
        } else {
            out.push(*GSM_BASIC.get(b as usize).unwrap_or(&'?'));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(p: &Part) -> usize {
        decode(p.data_coding, &p.short_message, p.udhi).chars().count()
    }

    #[test]
    fn gsm7_fits_160_then_153_per_part() {
        let one = encode(&"a".repeat(160), 1);
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].data_coding, one[0].udhi, one[0].short_message.len()),
            (0, false, 160)
        );
        let two = encode(&"a".repeat(161), 9);
        assert_eq!(two.len(), 2);
        assert_eq!(chars(&two[0]), 153);
        assert_eq!(chars(&two[1]), 8);
        assert_eq!(&two[1].short_message[..6], &[5, 0, 3, 9, 2, 2]);
    }

    #[test]
    fn chinese_is_ucs2_70_then_67_per_part() {
        let t: String = "还款提醒".chars().cycle().take(70).collect();
        let one = encode(&t, 1);
        assert_eq!(
            (one.len(), one[0].data_coding, one[0].short_message.len()),
            (1, DC_UCS2, 140)
        );
        let t: String = "还款提醒".chars().cycle().take(71).collect();
        let parts = encode(&t, 3);
        assert_eq!(parts.len(), 2);
        assert_eq!(chars(&parts[0]), 67);
        assert_eq!(chars(&parts[1]), 4);
        let back: String = parts
            .iter()
            .map(|p| decode(p.data_coding, &p.short_message, p.udhi))
            .collect();
        assert_eq!(back, t);
        let t: String = "还".repeat(134);
        assert_eq!(encode(&t, 0).len(), 2);
        assert_eq!(encode(&"还".repeat(135), 0).len(), 3);
    }

    #[test]
    fn extension_characters_cost_two_and_never_split() {
        let t = format!("{}€{}", "a".repeat(152), "a".repeat(10));
        let parts = encode(&t, 0);
        assert_eq!(parts.len(), 2);
        assert_eq!(chars(&parts[0]), 152, "the escape pair moved whole to the next part");
        assert_eq!(decode(0, &encode("[x]~€", 0)[0].short_message, false), "[x]~€");
        assert_eq!(encode(&"€".repeat(80), 0).len(), 1);
        assert_eq!(encode(&"€".repeat(81), 0).len(), 2);
    }

    #[test]
    fn emoji_surrogates_stay_together() {
        let t = format!("{}😀{}", "好".repeat(66), "好".repeat(3));
        let parts = encode(&t, 0);
        assert_eq!(parts.len(), 2);
        assert_eq!(chars(&parts[0]), 66, "the surrogate pair moved whole to the next part");
        let back: String = parts
            .iter()
            .map(|p| decode(p.data_coding, &p.short_message, p.udhi))
            .collect();
        assert_eq!(back, t);
    }
}
