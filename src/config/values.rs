//! Scalar value types of the configuration: interpolated strings, durations, rates, sizes.
//!
//! Every type here deserializes from a YAML scalar, replaces `${VAR}` from the environment first,
//! and reports errors through serde so that the loader can attach file, line, column and path.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Per-request variables of transforms: kept literally at load time, filled per request.
pub const REQUEST_VARIABLES: &[&str] = &[
    "rate_limit_remaining",
    "rate_limit_limit",
    "rate_limit_reset",
    "agent_id",
    "request_id",
    "route",
    "client_ip",
];

/// Replaces `${VAR}`, `${VAR:-default}` and `${env:VAR}` with values from `lookup`.
/// Per-request variables (see [`REQUEST_VARIABLES`]) are left as written.
pub fn interpolate_with(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if !input.contains("${") {
        return Ok(input.to_string());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated \"${{\" in {input:?}"))?;
        let expr = &after[..end];
        rest = &after[end + 1..];
        if REQUEST_VARIABLES.contains(&expr) {
            out.push_str("${");
            out.push_str(expr);
            out.push('}');
            continue;
        }
        let expr = expr.strip_prefix("env:").unwrap_or(expr);
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("\"${{{expr}}}\" is not a valid variable reference"));
        }
        match (lookup(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable {name} is not set")),
        }
    }
    out.push_str(rest);
    Ok(out)
}

pub fn interpolate(input: &str) -> Result<String, String> {
    interpolate_with(input, |name| std::env::var(name).ok())
}

/// Accepts any YAML scalar (string, number, bool) as text, for fields like `version: 1.0`.
fn scalar_text<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<String, D::Error> {
    struct V(&'static str);
    impl<'de> Visitor<'de> for V {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            interpolate(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(V(expecting))
}

/// A string with `${VAR}` resolved from the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar_text(d, "a string").map(Text)
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a value of one of the scalar types, naming what was expected on failure.
fn parse_scalar<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = scalar_text(d, expecting)?;
    parse(&text).map_err(de::Error::custom)
}

/// `500ms`, `30s`, `5m`, `24h`, `7d`; a bare number is seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

pub fn parse_duration(s: &str) -> Result<Dur, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| {
            format!("{s:?} is not a duration; expected e.g. 500ms, 30s, 5m, 24h or 7d")
        })?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => n,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60.0,
        "h" | "hour" | "hours" => n * 3600.0,
        "d" | "day" | "days" => n * 86400.0,
        _ => {
            return Err(format!(
                "{s:?} is not a duration; expected a number with ms, s, m, h or d (e.g. 30s)"
            ))
        }
    };
    if secs > 10.0 * 365.0 * 86400.0 {
        return Err(format!("{s:?} is too long a duration"));
    }
    Ok(Dur(Duration::from_secs_f64(secs)))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "a duration such as 30s", parse_duration)
    }
}

/// `N/second|minute|hour|day`: a bucket of N tokens refilled continuously over the period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub per: Duration,
}

pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let bad = || format!("{s:?} is not a rate; expected N/second, N/minute, N/hour or N/day");
    let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
    let count: u64 = n.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!("{s:?} is not a rate; N must be at least 1"));
    }
    let per = match unit.trim() {
        "second" | "s" | "sec" => 1,
        "minute" | "min" | "m" => 60,
        "hour" | "h" => 3600,
        "day" | "d" => 86400,
        _ => return Err(bad()),
    };
    Ok(Rate {
        count,
        per: Duration::from_secs(per),
    })
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "a rate such as 100/minute", parse_rate)
    }
}

/// A byte size: `512`, `64KB`, `10MB`, `1GB` (1024-based; `KiB`/`MiB`/`GiB` accepted too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

pub fn parse_size(s: &str) -> Result<Size, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; expected e.g. 512KB or 10MB"))?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?} is not a size; expected a number with B, KB, MB or GB"
            ))
        }
    };
    n.checked_mul(mult)
        .map(Size)
        .ok_or_else(|| format!("{s:?} is too large"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "a size such as 10MB", parse_size)
    }
}

/// A count that may also be written as an interpolated string (`threads: "${THREADS:-4}"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "a whole number", |s| {
            s.trim()
                .parse()
                .map(Count)
                .map_err(|_| format!("{s:?} is not a whole number"))
        })
    }
}

/// A boolean that may also be written as an interpolated string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_scalar(d, "true or false", |s| match s.trim() {
            "true" | "yes" | "on" => Ok(Flag(true)),
            "false" | "no" | "off" => Ok(Flag(false)),
            _ => Err(format!("{s:?} is not true or false")),
        })
    }
}

/// One value or a list of them (`listen: "0.0.0.0:8080"` or `listen: [..]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum, so that the inner error keeps its location.
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(OneOrMany(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                T::deserialize(de::value::StrDeserializer::<E>::new(s)).map(|x| OneOrMany(vec![x]))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                self.visit_str(&s)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SECRET" => Some("s3".into()),
            _ => None,
        }
    }

    #[test]
    fn interpolation() {
        assert_eq!(interpolate_with("a${SECRET}b", env).unwrap(), "as3b");
        assert_eq!(interpolate_with("${env:SECRET}", env).unwrap(), "s3");
        assert_eq!(interpolate_with("${NOPE:-x:y}", env).unwrap(), "x:y");
        assert_eq!(
            interpolate_with("${rate_limit_remaining}", env).unwrap(),
            "${rate_limit_remaining}"
        );
        assert!(interpolate_with("${NOPE}", env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(interpolate_with("${OPEN", env).is_err());
        assert!(interpolate_with("${a b}", env).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("5m").unwrap().0, Duration::from_secs(300));
        assert_eq!(
            parse_duration("7d").unwrap().0,
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("30").unwrap().0, Duration::from_secs(30));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn rates() {
        let r = parse_rate("100/minute").unwrap();
        assert_eq!((r.count, r.per.as_secs()), (100, 60));
        assert_eq!(parse_rate("5/s").unwrap().per.as_secs(), 1);
        assert!(parse_rate("20/fortnight")
            .unwrap_err()
            .contains("is not a rate"));
        assert!(parse_rate("0/second").is_err());
        assert!(parse_rate("many/second").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MB").unwrap().0, 10 << 20);
        assert_eq!(parse_size("64KB").unwrap().0, 64 << 10);
        assert_eq!(parse_size("512").unwrap().0, 512);
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("99999999999GB").is_err());
    }
}
