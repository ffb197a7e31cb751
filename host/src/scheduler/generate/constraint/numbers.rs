//! Numbers with bounds (`minimum`, `maximum`, `exclusiveMinimum`,
//! `exclusiveMaximum`), enforced byte by byte: a digit is allowed only when some
//! completion of the number so far still lies in the range, and the number may end
//! only when its value does.
//!
//! A bounded number is written without an exponent, with at most [`MAX_DIGITS`]
//! digits before the point and as many after it, and never as negative zero: a
//! narrower grammar than JSON's, so what is written is always valid JSON in range.
//! Values are exact: integers in units of 1, numbers in units of 10^-18 (`i128`).

use serde_json::{Map, Value};

/// Most digits of a bounded number's integer part, and of its fraction.
pub const MAX_DIGITS: u8 = 18;
/// 10^18: a number's unit is 1/SCALE.
const SCALE: i128 = 1_000_000_000_000_000_000;

fn pow10(n: u8) -> i128 {
    10i128.pow(n as u32)
}

/// The values a bounded number may take, inclusive, in its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberRange {
    pub integer: bool,
    lo: Option<i128>,
    hi: Option<i128>,
}

/// A bound as an exact multiple of 1/SCALE; None when it is not one, or when it is
/// beyond ±10^18.
fn scaled(v: &Value) -> Option<i128> {
    let text = if let Some(i) = v.as_i64() {
        i.to_string()
    } else if let Some(u) = v.as_u64() {
        u.to_string()
    } else {
        let f = v.as_f64().filter(|f| f.is_finite())?;
        // The shortest decimal that reads back as `f` (never an exponent).
        format!("{f}")
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    if int.len() > MAX_DIGITS as usize || frac.len() > MAX_DIGITS as usize {
        return None;
    }
    let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_value: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let magnitude = int * SCALE + frac_value * pow10(MAX_DIGITS - frac.len() as u8);
    Some(if negative { -magnitude } else { magnitude })
}

impl NumberRange {
    /// The bounds of `map` for a number (`integer`: an integer) at `path`; None when
    /// it has none. Bounds beyond ±10^18, with more than 18 decimals, or that no
    /// number meets are refused.
    pub fn parse(
        map: &Map<String, Value>,
        integer: bool,
        path: &str,
    ) -> Result<Option<Self>, String> {
        let mut range = NumberRange {
            integer,
            lo: None,
            hi: None,
        };
        for (key, upper, exclusive) in [
            ("minimum", false, false),
            ("exclusiveMinimum", false, true),
            ("maximum", true, false),
            ("exclusiveMaximum", true, true),
        ] {
            let Some(value) = map.get(key) else { continue };
            if !value.is_number() {
                return Err(format!("{path}.{key} must be a number"));
            }
            let Some(s) = scaled(value) else {
                return Err(format!(
                    "{path}.{key}: bounds beyond ±10^18 or with more than 18 decimals are not supported"
                ));
            };
            let bound = if integer {
                let (floor, exact) = (s.div_euclid(SCALE), s.rem_euclid(SCALE) == 0);
                match (upper, exclusive, exact) {
                    (false, false, true) => floor,
                    (false, true, true) => floor + 1,
                    (false, _, false) => floor + 1,
                    (true, false, _) => floor,
                    (true, true, true) => floor - 1,
                    (true, true, false) => floor,
                }
            } else {
                match (upper, exclusive) {
                    (false, true) => s + 1,
                    (true, true) => s - 1,
                    _ => s,
                }
            };
            if upper {
                range.hi = Some(range.hi.map_or(bound, |h| h.min(bound)));
            } else {
                range.lo = Some(range.lo.map_or(bound, |l| l.max(bound)));
            }
        }
        if range.lo.is_none() && range.hi.is_none() {
            return Ok(None);
        }
        let starts = std::iter::once(b'-')
            .chain(b'0'..=b'9')
            .any(|b| BoundedNumber::start(b, &range).is_some());
        if !starts {
            return Err(format!(
                "{path}: no {} of at most {MAX_DIGITS} digits meets its bounds",
                if integer { "integer" } else { "number" }
            ));
        }
        Ok(Some(range))
    }

    fn unit(&self) -> i128 {
        if self.integer {
            1
        } else {
            SCALE
        }
    }

    /// The magnitudes (inclusive; None: unbounded) of the values of this sign in
    /// range. Negative values are never zero.
    fn magnitudes(&self, negative: bool) -> (i128, Option<i128>) {
        if negative {
            (self.hi.map_or(1, |h| (-h).max(1)), self.lo.map(|l| -l))
        } else {
            (self.lo.map_or(0, |l| l.max(0)), self.hi)
        }
    }

    /// Some magnitude in [a, b] is in range.
    fn meets(&self, negative: bool, a: i128, b: i128) -> bool {
        let (low, high) = self.magnitudes(negative);
        a.max(low) <= high.map_or(b, |h| h.min(b))
    }
}

/// A bounded number's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundedNumber {
    negative: bool,
    int: u64,
    int_len: u8,
    dot: bool,
    frac: u64,
    frac_len: u8,
}

impl BoundedNumber {
    /// The state after a number's first byte, if some number in range begins so.
    pub fn start(b: u8, range: &NumberRange) -> Option<Self> {
        let mut n = BoundedNumber {
            negative: b == b'-',
            int: 0,
            int_len: 0,
            dot: false,
            frac: 0,
            frac_len: 0,
        };
        if b.is_ascii_digit() {
            n.int = (b - b'0') as u64;
            n.int_len = 1;
        } else if b != b'-' {
            return None;
        }
        n.viable(range).then_some(n)
    }

    /// The state after `b`, if some number in range begins with the bytes so far.
    pub fn next(self, b: u8, range: &NumberRange) -> Option<Self> {
        let mut n = self;
        match b {
            b'0'..=b'9' if n.dot => {
                if n.frac_len >= MAX_DIGITS {
                    return None;
                }
                n.frac = n.frac * 10 + (b - b'0') as u64;
                n.frac_len += 1;
            }
            b'0'..=b'9' => {
                // No leading zero, no more digits than the cap.
                if (n.int_len == 1 && n.int == 0) || n.int_len >= MAX_DIGITS {
                    return None;
                }
                n.int = n.int * 10 + (b - b'0') as u64;
                n.int_len += 1;
            }
            b'.' if !range.integer && !n.dot && n.int_len > 0 => n.dot = true,
            _ => return None,
        }
        n.viable(range).then_some(n)
    }

    /// The number may end here: it is complete and in range.
    pub fn may_end(self, range: &NumberRange) -> bool {
        if self.int_len == 0 || (self.dot && self.frac_len == 0) {
            return false;
        }
        let mut m = self.int as i128 * range.unit();
        if self.dot {
            m += self.frac as i128 * pow10(MAX_DIGITS - self.frac_len);
        }
        range.meets(self.negative, m, m)
    }

    /// Some completion of this prefix (within the digit caps) is in range.
    fn viable(self, range: &NumberRange) -> bool {
        let (u, neg) = (range.unit(), self.negative);
        if self.int_len == 0 {
            return range.meets(neg, 0, pow10(MAX_DIGITS) * u - 1);
        }
        let d = self.int as i128;
        if self.dot {
            // d.frac followed by anything: [d.frac, d.frac + 10^-frac_len).
            let width = pow10(MAX_DIGITS - self.frac_len);
            let base = d * SCALE + self.frac as i128 * width;
            return range.meets(neg, base, base + width - 1);
        }
        if d == 0 {
            // "0", or (numbers) "0." and a fraction.
            return range.meets(neg, 0, u - 1);
        }
        // d followed by k more digits (and, for numbers, any fraction).
        (0..=MAX_DIGITS - self.int_len)
            .any(|k| range.meets(neg, d * pow10(k) * u, (d + 1) * pow10(k) * u - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn range(schema: Value, integer: bool) -> NumberRange {
        NumberRange::parse(schema.as_object().unwrap(), integer, "x")
            .unwrap()
            .unwrap()
    }

    /// Some(true): a complete number in range; Some(false): a live prefix; None: refused.
    fn feed(r: &NumberRange, text: &str) -> Option<bool> {
        let bytes = text.as_bytes();
        let mut n = BoundedNumber::start(bytes[0], r)?;
        for &b in &bytes[1..] {
            n = n.next(b, r)?;
        }
        Some(n.may_end(r))
    }

    #[test]
    fn bounds_are_read_exactly_and_rounded_for_integers() {
        assert_eq!(scaled(&json!(0.1)), Some(SCALE / 10));
        assert_eq!(scaled(&json!(-2)), Some(-2 * SCALE));
        assert_eq!(scaled(&json!(1e30)), None);
        assert_eq!(scaled(&json!(1e-20)), None);
        let r = range(json!({"minimum": 0.5, "exclusiveMaximum": 3}), true);
        assert_eq!((r.lo, r.hi), (Some(1), Some(2)));
        let r = range(json!({"exclusiveMinimum": -1.5, "maximum": 2.5}), true);
        assert_eq!((r.lo, r.hi), (Some(-1), Some(2)));
        let r = range(json!({"exclusiveMinimum": 0}), false);
        assert_eq!((r.lo, r.hi), (Some(1), None));
        assert!(
            NumberRange::parse(json!({}).as_object().unwrap(), true, "x")
                .unwrap()
                .is_none()
        );
        for (schema, says) in [
            (json!({"minimum": "1"}), "must be a number"),
            (json!({"minimum": 1e19}), "not supported"),
            (json!({"minimum": 0.4, "maximum": 0.6}), "no integer"),
            (
                json!({"exclusiveMinimum": 1, "exclusiveMaximum": 2}),
                "no integer",
            ),
        ] {
            let err = NumberRange::parse(schema.as_object().unwrap(), true, "x").unwrap_err();
            assert!(err.contains(says), "{schema}: {err}");
        }
    }

    #[test]
    fn integers_keep_to_their_range_digit_by_digit() {
        let r = range(json!({"minimum": 1, "maximum": 10}), true);
        for (text, want) in [
            ("1", Some(true)),
            ("10", Some(true)),
            ("5", Some(true)),
            ("0", None),
            ("11", None),
            ("100", None),
            ("-", None),
            ("2", Some(true)),
        ] {
            assert_eq!(feed(&r, text), want, "{text}");
        }
        let r = range(json!({"minimum": 10, "maximum": 20}), true);
        assert_eq!(feed(&r, "1"), Some(false));
        assert_eq!(feed(&r, "2"), Some(false));
        assert_eq!(feed(&r, "3"), None);
        assert_eq!(feed(&r, "21"), None);
    }
}
