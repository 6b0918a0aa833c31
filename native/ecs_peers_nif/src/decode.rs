//! Term → the core's validated [`ecs_peers::Config`], once per start.
//!
//! `config/2` validates and returns a handle to the validated config with the settings the
//! Elixir side needs; `start/3` and `discover/3` take the handle, so a running topology (and a
//! poller its watchdog restarts) never validates the same configuration twice.

use rustler::types::tuple::get_tuple;
use rustler::{NifMap, ResourceArc, Term, TermType};
use serde_json::{Map, Number, Value};

/// A validated configuration, as `config/2` returns it (an opaque reference in Elixir).
pub struct ConfigResource {
    pub config: ecs_peers::Config,
}

#[rustler::resource_impl]
impl rustler::Resource for ConfigResource {}

/// What the Elixir side reads of a validated configuration: `%{polling_interval: ms,
/// poll_timeout: ms, share_polling: boolean, share_polling_given: boolean, sharing_key: binary}`
/// (`share_polling_given`: the key was given rather than left to its default; `sharing_key`: 16
/// lowercase hex digits, equal on nodes that may share poll results; see
/// `ecs_peers::sharing_key`).
#[derive(NifMap)]
pub struct Settings {
    polling_interval: u64,
    poll_timeout: u64,
    share_polling: bool,
    share_polling_given: bool,
    sharing_key: String,
}

/// Validates `config` (a keyword list or map of the keys in `EcsPeers.Strategy`) for `this`
/// node (`{node(), release_name | nil, :net_kernel.longnames()}`): `{:ok, {config, settings}}`,
/// or `{:error, message}` naming the key, the bad value and what is expected.
#[rustler::nif]
fn config(term: Term, this: Term) -> Result<(ResourceArc<ConfigResource>, Settings), String> {
    let value = term_to_value(term, "(config)", 0)?;
    let config =
        ecs_peers::Config::from_value_for(value, &this_node(this)?).map_err(|e| e.to_string())?;
    let settings = Settings {
        polling_interval: millis(config.polling_interval),
        poll_timeout: millis(config.poll_timeout),
        share_polling: config.share_polling,
        share_polling_given: config.share_polling_given,
        sharing_key: format!("{:016x}", ecs_peers::sharing_key(&config)),
    };
    Ok((ResourceArc::new(ConfigResource { config }), settings))
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `{node(), release_name | nil, :net_kernel.longnames()}` (`EcsPeers.this_node/0`) → the core's
/// description of this node (`longnames() == false`: short names, `-sname`). The core derives
/// this node's name and the default basename from it; nothing here decides.
fn this_node(term: Term) -> Result<ecs_peers::config::ThisNode, String> {
    let bad =
        || format!("this node: expected {{node(), release_name | nil, longnames}}, got {term:?}");
    let parts = get_tuple(term).map_err(|_| bad())?;
    let [node, release, longnames] = parts.as_slice() else {
        return Err(bad());
    };
    let short = longnames.atom_to_string().map_err(|_| bad())? == "false";
    let node = node.atom_to_string().map_err(|_| bad())?;
    let release = match release.get_type() {
        TermType::Binary => Some(release.decode::<String>().map_err(|_| bad())?),
        TermType::Atom => None,
        _ => return Err(bad()),
    };
    Ok(ecs_peers::config::ThisNode::from_erlang(&node, release.as_deref()).short_named(short))
}

/// Converts configuration terms to a value tree: maps and keyword lists → maps, atoms → strings
/// (`true`/`false`/`nil` → booleans/null), binaries → strings, numbers → numbers. Anything else
/// (pids, refs, funs, other tuples) is an error naming the key path.
pub(crate) fn term_to_value(term: Term, path: &str, depth: usize) -> Result<Value, String> {
    if depth > 32 {
        return Err(format!("{path}: nested too deeply"));
    }
    let at = |k: &str| {
        if path == "(config)" {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match term.get_type() {
        TermType::Atom => {
            let a = term
                .atom_to_string()
                .map_err(|_| format!("{path}: unreadable atom"))?;
            Ok(match a.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "nil" => Value::Null,
                _ => Value::String(a),
            })
        }
        TermType::Binary => term
            .decode::<String>()
            .map(Value::String)
            .map_err(|_| format!("{path}: is a binary that is not UTF-8 text")),
        TermType::Integer => {
            if let Ok(i) = term.decode::<i64>() {
                Ok(Value::Number(i.into()))
            } else {
                term.decode::<u64>()
                    .map(|u| Value::Number(u.into()))
                    .map_err(|_| format!("{path}: integer out of range"))
            }
        }
        TermType::Float => {
            let f: f64 = term
                .decode()
                .map_err(|_| format!("{path}: unreadable float"))?;
            Number::from_f64(f)
                .map(Value::Number)
                .ok_or_else(|| format!("{path}: {f} is not a finite number"))
        }
        TermType::Map => {
            let mut out = Map::new();
            let iter = rustler::types::map::MapIterator::new(term)
                .ok_or_else(|| format!("{path}: unreadable map"))?;
            for (k, v) in iter {
                let key = key_name(k).ok_or_else(|| {
                    format!("{path}: map keys must be atoms or strings, got {k:?}")
                })?;
                let value = term_to_value(v, &at(&key), depth + 1)?;
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
        TermType::List => {
            let items: Vec<Term> = term
                .decode()
                .map_err(|_| format!("{path}: is an improper list"))?;
            let keyword: Option<Vec<(String, Term)>> = (!items.is_empty())
                .then(|| {
                    items
                        .iter()
                        .map(|i| {
                            let t = get_tuple(*i).ok()?;
                            (t.len() == 2 && t[0].get_type() == TermType::Atom)
                                .then(|| Some((t[0].atom_to_string().ok()?, t[1])))?
                        })
                        .collect()
                })
                .flatten();
            match keyword {
                Some(pairs) => {
                    let mut out = Map::new();
                    for (k, v) in pairs {
                        if out.contains_key(&k) {
                            return Err(format!("{}: is given twice", at(&k)));
                        }
                        let value = term_to_value(v, &at(&k), depth + 1)?;
                        out.insert(k, value);
                    }
                    Ok(Value::Object(out))
                }
                None => items
                    .iter()
                    .enumerate()
                    .map(|(i, t)| term_to_value(*t, &format!("{path}[{i}]"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array),
            }
        }
        other => Err(format!(
            "{path}: is a {}; expected a string, number, boolean, atom, list or map",
            match other {
                TermType::Tuple => "tuple",
                TermType::Pid => "pid",
                TermType::Ref => "reference",
                TermType::Fun => "function",
                TermType::Port => "port",
                _ => "term of an unsupported type",
            }
        )),
    }
}

fn key_name(k: Term) -> Option<String> {
    match k.get_type() {
        TermType::Atom => k.atom_to_string().ok(),
        TermType::Binary => k.decode::<String>().ok(),
        _ => None,
    }
}
