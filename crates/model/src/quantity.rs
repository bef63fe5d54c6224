//! Kubernetes resource quantities (`500m`, `1.5`, `16Gi`, `100M`, `1e3`).
//!
//! A quantity is held as an exact count of milli-units, rounded up like the API
//! server's `MilliValue()`: `0.1m` of cpu becomes `1m`, never `0`.

use std::fmt;

/// A parsed quantity, in thousandths of the base unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    milli: i128,
}

impl Quantity {
    /// Thousandths of the unit (cpu millicores).
    pub fn milli_value(self) -> i64 {
        self.milli.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Whole units, rounded up (bytes of memory, GPUs).
    pub fn value(self) -> i64 {
        let whole = self.milli.div_euclid(1000) + i128::from(self.milli.rem_euclid(1000) != 0);
        whole.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

/// A quantity that could not be parsed. The message quotes the bad text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantityError {
    pub text: String,
    pub reason: &'static str,
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid quantity {:?}: {} (expected e.g. 500m, 2, 1.5, 16Gi, 100M, 1e3)",
            self.text, self.reason
        )
    }
}

impl std::error::Error for QuantityError {}

/// Parses a Kubernetes quantity.
pub fn parse_quantity(text: &str) -> Result<Quantity, QuantityError> {
    let err = |reason| QuantityError {
        text: text.to_owned(),
        reason,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let (negative, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_len);
    if number.is_empty() || number == "." {
        return Err(err("missing number"));
    }
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => {
            if f.contains('.') {
                return Err(err("more than one decimal point"));
            }
            (i, f)
        }
        None => (number, ""),
    };
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 30 {
        return Err(err("too many digits"));
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| err("bad number"))?
    };

    // value = mantissa * 10^(pow10) * 2^(pow2), then times 1000 for milli-units.
    let mut pow10: i32 = 3 - frac_part.len() as i32;
    let mut pow2: u32 = 0;
    match suffix {
        "" => {}
        "n" => pow10 -= 9,
        "u" => pow10 -= 6,
        "m" => pow10 -= 3,
        "k" => pow10 += 3,
        "M" => pow10 += 6,
        "G" => pow10 += 9,
        "T" => pow10 += 12,
        "P" => pow10 += 15,
        "E" => pow10 += 18,
        "Ki" => pow2 = 10,
        "Mi" => pow2 = 20,
        "Gi" => pow2 = 30,
        "Ti" => pow2 = 40,
        "Pi" => pow2 = 50,
        "Ei" => pow2 = 60,
        other if other.starts_with(['e', 'E']) => {
            let exponent: i32 = other[1..].parse().map_err(|_| err("bad exponent"))?;
            if exponent.abs() > 30 {
                return Err(err("exponent out of range"));
            }
            pow10 += exponent;
        }
        _ => return Err(err(
            "unknown suffix (use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent)",
        )),
    }
    let overflow = || err("value out of range");
    let mut milli = mantissa.checked_mul(1i128 << pow2).ok_or_else(overflow)?;
    if pow10 >= 0 {
        milli = milli
            .checked_mul(10i128.checked_pow(pow10 as u32).ok_or_else(overflow)?)
            .ok_or_else(overflow)?;
    } else {
        let divisor = 10i128.checked_pow((-pow10) as u32).ok_or_else(overflow)?;
        // Round up, as the API server does for MilliValue.
        milli = milli / divisor + i128::from(milli % divisor != 0);
    }
    Ok(Quantity {
        milli: if negative { -milli } else { milli },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(s: &str) -> i64 {
        parse_quantity(s).unwrap().milli_value()
    }

    #[test]
    fn parses_the_common_forms() {
        assert_eq!(milli("500m"), 500);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli("2"), 2000);
        assert_eq!(
            parse_quantity("16Gi").unwrap().value(),
            16 * 1024 * 1024 * 1024
        );
        assert_eq!(parse_quantity("100M").unwrap().value(), 100_000_000);
        assert_eq!(parse_quantity("1e3").unwrap().value(), 1000);
        assert_eq!(parse_quantity("1E3").unwrap().value(), 1000);
        assert_eq!(parse_quantity("128Mi").unwrap().value(), 128 << 20);
        assert_eq!(parse_quantity("1k").unwrap().value(), 1000);
        assert_eq!(parse_quantity("0.5Gi").unwrap().value(), 512 << 20);
        assert_eq!(milli("0"), 0);
        assert_eq!(milli(".5"), 500);
        assert_eq!(milli("+1"), 1000);
        assert_eq!(milli("-1"), -1000);
    }

    #[test]
    fn rounds_up_like_the_api_server() {
        assert_eq!(milli("0.1m"), 1);
        assert_eq!(milli("100u"), 1);
        assert_eq!(parse_quantity("1m").unwrap().value(), 1);
        assert_eq!(parse_quantity("1500m").unwrap().value(), 2);
    }

    #[test]
    fn errors_name_the_bad_value() {
        for bad in ["", "abc", "1x", "1.2.3", "Gi", "1e", "1ee3", "12Qi"] {
            let e = parse_quantity(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn integer_millis_round_trip(n in 0i64..1_000_000_000) {
            proptest::prop_assert_eq!(milli(&format!("{n}m")), n);
            proptest::prop_assert_eq!(parse_quantity(&n.to_string()).unwrap().value(), n);
        }
    }
}
