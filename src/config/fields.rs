//! Reading a map of keys: typed takes that name the key path in every error, takes that apply a
//! key's bounds and default from the key table, and the check that nothing unknown is left (with
//! a suggestion from the key table).

use std::time::Duration;

use serde_json::{Map, Value};

use super::keys::{show_ms, KeySpec, Scope, Type, KEYS};
use crate::error::Error;

/// Checks an AWS region name such as `eu-west-2`, `us-gov-west-1`, `cn-north-1` or
/// `eusc-de-east-1`: a region of an AWS partition (listed, or matching the partition's pattern,
/// so a region launched after this build is accepted), or of the `xx-name-N` shape, which a
/// partition launched after this build may use.
pub(super) fn validate_region(key: &str, r: String) -> Result<String, Error> {
    if crate::partition::is_region(&r) || has_region_shape(&r) {
        Ok(r)
    } else {
        Err(Error::config(
            key,
            format!(
                "{r:?} is not an AWS region name; expected e.g. \"eu-west-2\" or \"us-east-1\""
            ),
        ))
    }
}

/// `xx-name-N`: two lowercase letters, then hyphen-separated lowercase words, the last a number.
fn has_region_shape(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// Parses `500ms`, `5s`, `2m`, `1h`, or an integer number of milliseconds; errors name `key`.
///
/// ```
/// use std::time::Duration;
/// let v = serde_json::json!("500ms");
/// assert_eq!(ecs_peers::config::parse_duration("timeout", &v).unwrap(), Duration::from_millis(500));
/// ```
pub fn parse_duration(key: &str, v: &Value) -> Result<Duration, Error> {
    let bad = || {
        Error::config(
            key,
            format!("{} is not a duration; expected milliseconds as an integer (5000) or a string like \"5s\", \"500ms\", \"1m\"", show(v)),
        )
    };
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_millis).ok_or_else(bad),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().map_err(|_| bad())?;
            let ms = match unit.trim() {
                "ms" => Some(n),
                "s" | "" if !unit.is_empty() => n.checked_mul(1_000),
                "m" | "min" => n.checked_mul(60_000),
                "h" => n.checked_mul(3_600_000),
                _ => None,
            };
            ms.map(Duration::from_millis).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// Describes a value's type for error messages.
pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(_) => format!("a boolean ({v})"),
        Value::Number(_) => format!("a number ({v})"),
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a map".into(),
    }
}

/// Shows a value compactly for error messages.
pub(super) fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        // Cut on a character boundary: a value's text may be any Unicode.
        format!("{}...", &s[..s.floor_char_boundary(77)])
    } else {
        s
    }
}

/// A map of keys being consumed; what is left at the end is unknown.
pub(super) struct Fields {
    map: Map<String, Value>,
    path: String,
    scope: Scope,
}

impl Fields {
    pub(super) fn new(map: Map<String, Value>, path: String, scope: Scope) -> Self {
        Fields { map, path, scope }
    }

    pub(super) fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    /// `k` is given: present and not null (a null value is the key left out, as [`Fields::take`]
    /// reads it).
    pub(super) fn given(&self, k: &str) -> bool {
        self.map.get(k).is_some_and(|v| !v.is_null())
    }

    pub(super) fn take(&mut self, k: &str) -> Option<Value> {
        match self.map.remove(k) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    pub(super) fn take_string(&mut self, k: &str) -> Result<Option<String>, Error> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::config(
                self.key(k),
                format!("expected a string, got {}", describe(&other)),
            )),
        }
    }

    pub(super) fn take_nonempty(&mut self, k: &str) -> Result<Option<String>, Error> {
        match self.take_string(k)? {
            Some(s) if s.trim().is_empty() => Err(Error::config(
                self.key(k),
                "is empty; give a value or leave the key out",
            )),
            other => Ok(other),
        }
    }

    pub(super) fn require_string(&mut self, k: &str, what: &str) -> Result<String, Error> {
        match self.take_nonempty(k)? {
            Some(s) => Ok(s),
            None => Err(Error::config(self.key(k), format!("is required: {what}"))),
        }
    }

    pub(super) fn take_bool(&mut self, k: &str) -> Result<Option<bool>, Error> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(Error::config(
                self.key(k),
                format!("expected true or false, got {}", describe(&other)),
            )),
        }
    }

    pub(super) fn take_duration(&mut self, k: &str) -> Result<Option<Duration>, Error> {
        let key = self.key(k);
        self.take(k).map(|v| parse_duration(&key, &v)).transpose()
    }

    /// The error for a key whose row in the key table has another type than its parser reads:
    /// a bug in this crate, named as such rather than a panic.
    fn not_in_table_as(&self, spec: &KeySpec, want: &str) -> Error {
        Error::config(
            self.key(spec.key),
            format!(
                "the key table (src/config/keys.rs) describes this key as {}, but it is read as {want}: a bug in ecs-peers; please report it",
                spec.kind()
            ),
        )
    }

    /// A boolean key: its value, or the table's default.
    pub(super) fn bool_key(&mut self, spec: &KeySpec) -> Result<bool, Error> {
        let Type::Bool { default } = spec.ty else {
            return Err(self.not_in_table_as(spec, "a boolean"));
        };
        Ok(self.take_bool(spec.key)?.unwrap_or(default))
    }

    /// A duration key: its value (at least the table's minimum), or the table's default.
    pub(super) fn duration_key(&mut self, spec: &KeySpec) -> Result<Duration, Error> {
        let Type::Duration { min_ms, default_ms } = spec.ty else {
            return Err(self.not_in_table_as(spec, "a duration"));
        };
        let d = self
            .take_duration(spec.key)?
            .unwrap_or(Duration::from_millis(default_ms));
        if d < Duration::from_millis(min_ms) {
            return Err(Error::config(
                self.key(spec.key),
                format!(
                    "{} is too short; expected at least {} (the default is {})",
                    show_ms(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    show_ms(min_ms),
                    show_ms(default_ms)
                ),
            ));
        }
        Ok(d)
    }

    /// A whole-number key: its value within the table's bounds, or the table's default.
    pub(super) fn integer_key(&mut self, spec: &KeySpec) -> Result<u64, Error> {
        let Type::Integer { min, max, default } = spec.ty else {
            return Err(self.not_in_table_as(spec, "an integer"));
        };
        match self.take(spec.key) {
            None => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(Error::config(
                    self.key(spec.key),
                    format!("{} is not a whole number from {min} to {max}", show(&v)),
                )),
            },
        }
    }

    /// A number key: its value within the table's bounds, or the table's default.
    pub(super) fn number_key(&mut self, spec: &KeySpec) -> Result<f64, Error> {
        let Type::Number { min, max, default } = spec.ty else {
            return Err(self.not_in_table_as(spec, "a number"));
        };
        match self.take(spec.key) {
            None => Ok(default),
            Some(v) => match v.as_f64() {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(Error::config(
                    self.key(spec.key),
                    format!(
                        "{} is not a number between {min} and {max} (e.g. {default})",
                        show(&v)
                    ),
                )),
            },
        }
    }

    /// A port key: its value, or `None` when not given (the caller applies its default, which
    /// may come from the environment before the table's).
    pub(super) fn port_key(&mut self, spec: &KeySpec) -> Result<Option<u16>, Error> {
        let Type::Port { default } = spec.ty else {
            return Err(self.not_in_table_as(spec, "a port"));
        };
        match self.take(spec.key) {
            None => Ok(None),
            Some(v) => match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(Error::config(
                    self.key(spec.key),
                    format!(
                        "{} is not a port number; expected an integer 1..65535, e.g. {default}",
                        show(&v)
                    ),
                )),
            },
        }
    }

    /// Fails on the first key that was not consumed, suggesting the closest valid key.
    pub(super) fn finish(self) -> Result<(), Error> {
        let Some(unknown) = self.map.keys().next() else {
            return Ok(());
        };
        let valid: Vec<&str> = KEYS
            .iter()
            .filter(|k| k.scope == self.scope)
            .map(|k| k.key)
            .collect();
        let suggestion = valid
            .iter()
            .map(|k| (edit_distance(unknown, k), *k))
            .min()
            .filter(|(d, _)| *d <= 3)
            .map(|(_, k)| format!("did you mean {k:?}? "))
            .unwrap_or_default();
        Err(Error::config(
            self.key(unknown),
            format!(
                "is not a known key; {suggestion}valid keys here: {}",
                valid.join(", ")
            ),
        ))
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
