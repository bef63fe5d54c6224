//! The one notion of time in the project: [`Time`], milliseconds on a monotonic-ish
//! axis chosen by the driver (Unix epoch in production, zero at the start of a
//! simulation). Nothing here reads a clock.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in milliseconds since an origin the driver picks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(pub u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);

    /// A time `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Time(millis)
    }

    /// A time `secs` seconds after the origin.
    pub const fn from_secs(secs: u64) -> Self {
        // Saturates: a time read from an annotation may be absurdly far away, and
        // an absurd time must not be a panic.
        Time(secs.saturating_mul(1000))
    }

    /// Milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Seconds since the origin, as a float (for reports).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// How long after `earlier` this is; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// This time moved back by `d`, stopping at the origin.
    pub fn saturating_sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(millis_saturating(d)))
    }
}

/// A duration in milliseconds, `u64::MAX` if it does not fit (`as u64` would wrap).
fn millis_saturating(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, rhs: Duration) -> Time {
        Time(self.0.saturating_add(millis_saturating(rhs)))
    }
}

impl Sub<Time> for Time {
    type Output = Duration;
    fn sub(self, rhs: Time) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{}", format_duration(Duration::from_millis(self.0)))
    }
}

/// A duration that could not be parsed; names the offending text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationParseError {
    pub text: String,
    pub reason: &'static str,
}

impl fmt::Display for DurationParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: {} (expected e.g. 90s, 10m, 1h30m, 500ms or plain seconds)",
            self.text, self.reason
        )
    }
}

impl std::error::Error for DurationParseError {}

/// The longest duration accepted from text: anything longer is a typo or an attack,
/// and would overflow the arithmetic on times (`1e20` seconds does not fit).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a Go-style duration (`90s`, `10m`, `1h30m`, `500ms`, `1.5h`) or a plain
/// number of seconds (`3300`, the seed's flag style). Negative values and values
/// above [`MAX_DURATION`] are rejected.
pub fn parse_duration(text: &str) -> Result<Duration, DurationParseError> {
    let err = |reason| DurationParseError {
        text: text.to_owned(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(err("empty"));
    }
    if trimmed.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    if let Ok(secs) = trimmed.parse::<f64>() {
        if !secs.is_finite() {
            return Err(err("not a finite number"));
        }
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(err("longer than 100 years"));
        }
        return Ok(Duration::from_secs_f64(secs));
    }
    let mut total_ms: f64 = 0.0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(err("expected a number"));
        }
        let value: f64 = rest[..number_len].parse().map_err(|_| err("bad number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit (use ms, s, m, h or d)")),
        };
        rest = &rest[unit_len..];
        total_ms += value * unit_ms;
    }
    if !(total_ms.is_finite() && total_ms <= MAX_DURATION.as_millis() as f64) {
        return Err(err("longer than 100 years"));
    }
    Ok(Duration::from_millis(total_ms.round() as u64))
}

/// Formats a duration compactly (`1h30m`, `90s` → `1m30s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total_secs = ms / 1000;
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Serde helpers for durations written as text (`10m`) or as seconds.
pub mod serde_duration {
    use super::{format_duration, parse_duration};
    use serde::{de, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration such as 90s, 10m or 1h30m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse_duration(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                if v < 0 {
                    return Err(E::custom(format!(
                        "invalid duration {v}: negative durations are not allowed"
                    )));
                }
                Ok(Duration::from_secs(v as u64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(E::custom(format!(
                        "invalid duration {v}: negative durations are not allowed"
                    )));
                }
                if v > super::MAX_DURATION.as_secs_f64() {
                    return Err(E::custom(format!(
                        "invalid duration {v}: longer than 100 years"
                    )));
                }
                Ok(Duration::from_secs_f64(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_are_errors_not_panics() {
        for text in [
            "1e20",
            "1e300",
            "99999999999999999999s",
            "1e15d",
            "18446744073709551616",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        assert_eq!(
            parse_duration("36500d").unwrap(),
            Duration::from_secs(36500 * 86400)
        );
    }

    #[test]
    fn parses_go_style_and_plain_seconds() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("3300").unwrap(), Duration::from_secs(3300));
    }

    #[test]
    fn rejects_bad_durations_naming_the_text() {
        for bad in ["", "-5s", "10x", "m", "1h5", "abc"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn time_arithmetic_saturates() {
        let t = Time::from_secs(10);
        assert_eq!(t + Duration::from_secs(5), Time::from_secs(15));
        assert_eq!(Time::from_secs(3) - t, Duration::ZERO);
        assert_eq!(t.saturating_sub(Duration::from_secs(60)), Time::ZERO);
    }
}
