//! A flag for every top-level configuration key, generated from the key table
//! ([`ecs_peers::KEYS`]): `distribution_port` is `--distribution-port`, `share_polling` is
//! `--share-polling`, and a key added to the table gets its flag, its `--help` line and its
//! place in error messages without an edit here.
//!
//! A flag's value is read by the key's type only as far as the command line needs it (a
//! number is a number, `true`/`false` a boolean, a bare number a duration in milliseconds as in
//! a config file); every bound, choice and form is checked once, by the core's validation of
//! the whole configuration, whose error names the key and then this flag.

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use ecs_peers::config::{KeySpec, Scope, Type};
use serde_json::{Map, Value};

/// Names kept from before the flags were generated: (key, alias). `--basename`, `--interval`
/// and `--timeout` are shorter than the keys they set, and scripts use them.
const ALIASES: &[(&str, &str)] = &[
    ("node_basename", "basename"),
    ("polling_interval", "interval"),
    ("poll_timeout", "timeout"),
];

/// The keys that get a flag: every top-level key but `sources`, which `--ecs`, `--cloudmap`,
/// `--from-metadata` and `--config` give.
fn flagged() -> impl Iterator<Item = &'static KeySpec> {
    ecs_peers::KEYS
        .iter()
        .filter(|k| k.scope == Scope::Top && !matches!(k.ty, Type::Sources | Type::SourceType))
}

/// Whether `key` is a top-level key with a flag.
pub fn is_flagged(key: &str) -> bool {
    flagged().any(|k| k.key == key)
}

/// The flag of a top-level key, without its dashes: `distribution-port`.
pub fn flag(key: &str) -> String {
    key.replace('_', "-")
}

/// The top-level keys given by flag, in table order, with the text given.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeyFlags(pub Vec<(&'static KeySpec, String)>);

impl KeyFlags {
    /// Writes every given key into the top-level map, over what the config file set there
    /// (flags win).
    pub fn apply(&self, map: &mut Map<String, Value>) {
        for (spec, raw) in &self.0 {
            map.insert(spec.key.into(), value(spec, raw));
        }
    }

    /// The text given for `key` by its flag, if any.
    pub fn given(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.key == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The configuration value of a flag's text, by the key's type: what a config file would hold
/// for it. Text that does not read as the type stays a string, so the core's validation
/// rejects it with its own message (one rule, in `src/config/`).
pub fn value(spec: &KeySpec, raw: &str) -> Value {
    let text = || Value::from(raw);
    match spec.ty {
        Type::Bool { .. } => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => text(),
        },
        Type::Integer { .. } | Type::Port { .. } => raw
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| text()),
        Type::Number { .. } => match raw.parse::<f64>() {
            Ok(n) if n.is_finite() => Value::from(n),
            _ => text(),
        },
        // A bare number is milliseconds, as in a config file; `5s` stays text.
        Type::Duration { .. } => raw
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| text()),
        Type::Text { .. } | Type::OneOf { .. } | Type::Sources | Type::SourceType => text(),
    }
}

/// The value name shown in `--help`.
fn value_name(spec: &KeySpec) -> &'static str {
    match spec.ty {
        Type::Bool { .. } => "BOOL",
        Type::Integer { .. } => "N",
        Type::Port { .. } => "PORT",
        Type::Number { .. } => "NUMBER",
        Type::Duration { .. } => "DURATION",
        Type::OneOf { .. } => "NAME",
        Type::Text { .. } | Type::Sources | Type::SourceType => "VALUE",
    }
}

/// The first sentence of a key's meaning, for `-h`; `--help` prints all of it. A sentence
/// ends at a full stop followed by a capital (so `e.g. \`app@{ip}\`` does not end one).
fn summary(doc: &str) -> &str {
    doc.match_indices(". ")
        .find(|(at, _)| doc[at + 2..].starts_with(|c: char| c.is_ascii_uppercase()))
        .map_or(doc, |(at, _)| &doc[..=at])
}

fn arg(spec: &'static KeySpec) -> Arg {
    let kind = match spec.default_text().as_str() {
        "-" => format!("[{}]", spec.kind()),
        default => format!("[{}; default {default}]", spec.kind()),
    };
    let mut arg = Arg::new(spec.key)
        .long(flag(spec.key))
        .value_name(value_name(spec))
        .action(ArgAction::Set)
        .help(format!("{} {kind}", summary(spec.doc)))
        .long_help(format!(
            "{} {kind} (the configuration key `{}`)",
            spec.doc, spec.key
        ))
        .help_heading("Configuration keys (each overrides the --config file's)");
    if let Type::Bool { .. } = spec.ty {
        // `--share-polling` alone means true; `--draining=false` switches a default off.
        arg = arg.num_args(0..=1).default_missing_value("true");
    }
    for (key, alias) in ALIASES {
        if *key == spec.key {
            arg = arg.visible_alias(*alias);
        }
    }
    arg
}

impl Args for KeyFlags {
    fn augment_args(cmd: Command) -> Command {
        flagged().fold(cmd, |cmd, spec| cmd.arg(arg(spec)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for KeyFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = KeyFlags::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for spec in flagged() {
            if let Some(raw) = matches.get_one::<String>(spec.key) {
                self.0.retain(|(k, _)| k.key != spec.key);
                self.0.push((spec, raw.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        keys: KeyFlags,
    }

    fn parse(args: &[&str]) -> Result<KeyFlags, clap::Error> {
        Cli::try_parse_from(std::iter::once("ecs-peers").chain(args.iter().copied()))
            .map(|c| c.keys)
    }

    #[test]
    fn every_top_level_key_but_sources_has_its_flag() {
        let cmd = Cli::augment_args(Command::new("ecs-peers"));
        for spec in ecs_peers::KEYS {
            let has = cmd
                .get_arguments()
                .any(|a| a.get_long() == Some(flag(spec.key).as_str()));
            let wanted = spec.scope == Scope::Top && spec.key != "sources";
            assert_eq!(has, wanted, "--{}", flag(spec.key));
        }
    }

    #[test]
    fn values_read_by_the_keys_type() {
        let flags = parse(&[
            "--distribution-port",
            "9100",
            "--share-polling",
            "--draining=false",
            "--jitter",
            "0.5",
            "--interval",
            "1500",
            "--poll-timeout",
            "2s",
            "--node-names",
            "epmd",
            "--max-attempts",
            "many",
        ])
        .unwrap();
        let mut map = Map::new();
        flags.apply(&mut map);
        assert_eq!(
            Value::Object(map),
            serde_json::json!({
                "distribution_port": 9100, "share_polling": true, "draining": false,
                "jitter": 0.5, "polling_interval": 1500, "poll_timeout": "2s",
                "node_names": "epmd", "max_attempts": "many"
            })
        );
    }

    #[test]
    fn short_help_is_the_first_sentence() {
        assert_eq!(summary("A port. More."), "A port.");
        assert_eq!(summary("Use e.g. `x`. Then"), "Use e.g. `x`.");
        assert_eq!(summary("No end"), "No end");
    }

    #[test]
    fn old_flag_names_still_set_their_keys() {
        let flags = parse(&["--basename", "app", "--timeout", "3s"]).unwrap();
        assert_eq!(flags.given("node_basename"), Some("app"));
        assert_eq!(flags.given("poll_timeout"), Some("3s"));
    }
}
