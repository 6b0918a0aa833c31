//! A key's value written as text (a command-line flag, an environment variable): read by the
//! key's type only as far as text needs it, so it means what a config file would hold. Every
//! bound, choice and form is then checked once, by the core's validation of the whole
//! configuration, whose error names the key.

use serde_json::Value;

use super::keys::{KeySpec, Type};

impl KeySpec {
    /// The configuration value of `raw` for this key: a number is a number, `true`/`false` a
    /// boolean, a bare number a duration in milliseconds (as in a config file: `"600000"` is ten
    /// minutes, `"10m"` stays text, which the duration rule reads). Text that does not read as
    /// the type stays a string, so validation rejects it with its own message.
    pub fn value_from_text(&self, raw: &str) -> Value {
        let text = || Value::from(raw);
        match self.ty {
            Type::Bool { .. } => match raw {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => text(),
            },
            Type::Integer { .. } | Type::Port { .. } | Type::Duration { .. } => raw
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| text()),
            Type::Number { .. } => match raw.parse::<f64>() {
                Ok(n) if n.is_finite() => Value::from(n),
                _ => text(),
            },
            Type::Text { .. } | Type::OneOf { .. } | Type::Sources | Type::SourceType => text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::config::keys;

    #[test]
    fn text_reads_by_the_keys_type() {
        let v = |raw| keys::TLS_VALIDITY.value_from_text(raw);
        assert_eq!(v("600000"), json!(600000));
        assert_eq!(v("10m"), json!("10m"));
        assert_eq!(v("ten"), json!("ten"));
        assert_eq!(keys::TLS_CA.value_from_text("123"), json!("123"));
    }
}
