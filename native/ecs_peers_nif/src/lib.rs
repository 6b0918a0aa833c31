//! Rustler adapter for ecs-peers: converts terms, runs the core's poller on a tokio runtime owned
//! by this library, and *sends* every update to an Elixir pid. It decides nothing itself.
//!
//! Every NIF returns at once: config validation is microseconds of work, and everything that
//! waits (AWS calls, timers) runs on the runtime's own threads. A panic inside a NIF becomes an
//! Elixir exception (rustler catches it); a panic inside a poll becomes a failing source (the
//! core catches it).
//!
//! Messages to each subscriber (the pid given to `start/4`, and any added with `subscribe/3`):
//! - `{:ecs_peers, tag, {:update, update}}` after every poll: `%{poll:, taken_at:, duration_ms:,
//!   peer_count:, membership:, nodes:, sources: [status], conflicts:, local:, left:, added:
//!   [peer], removed: [peer], draining: [peer], events: [event]}`. Every update is
//!   self-contained, whatever the receiver skipped: `nodes` is a handle to every peer's node
//!   name (a resource shared by every message of the same membership; `names/1` turns it into
//!   one `"\n"`-joined binary without copying), and `membership` is its fingerprint, so a
//!   receiver that already holds that membership does nothing with it. A poll of 10,000
//!   unchanged peers costs the receiver a few hundred bytes, and no binary that would make its
//!   garbage collector run (an off-heap binary in every message did: measured). `dial` is where each of those
//!   peers is dialled, for the EPMD-less distribution bridge (`EcsPeers.Epmd.put_peers/1`): a
//!   handle of the same kind (`names/1` reads it), one line per peer,
//!   `"<node>\t<address>\t<port>"`, joined by `"\n"`, the port empty when the source reported
//!   none (then the one configured distribution port applies), reused while it is byte-for-byte
//!   the same. `added`/`removed`/`draining`/`events` are the changes
//!   since the previous update sent to this subscriber; each event is the core's
//!   (`%{event: "source_failing" | "source_recovered" | "conflict_found" | "local_left" |
//!   "tasks_skipped" | "poller_changed" | "poller_silent", ...}`) with `message:`, the sentence
//!   to log. `shared: [binary]` are the encoded results of the sources this node polled for its
//!   sharing group since the previous update (fleet-shared polling; empty when not sharing):
//!   opaque bytes to send, unchanged, to every other member, whose NIF takes them with
//!   `receive_shared/3`. `sharing_with` is the sharing group's size (0: not sharing) and
//!   `shared_dropped` the received results dropped that named no source here or did not decode
//!   (those for a source are in its status's `shared_dropped`).
//! - `{:ecs_peers, tag, {:discovered, snapshot}}` once, for `discover/4`, with every peer in full
//!   (`peers: [peer]`) and no changes.
//!
//! `this` (the second argument of `start/4`, `discover/4`, `validate/2`) is `{node(),
//! release_name | nil}`: who this node is. The core derives this node's name and the default
//! basename from it ([`ecs_peers::config::ThisNode::from_erlang`]); nothing here decides.
//!
//! Maps have atom keys (the snapshot's field names only) and binary values.

use std::sync::{Mutex, OnceLock};

use rustler::types::tuple::get_tuple;
use rustler::{Atom, Encoder, Env, LocalPid, NifResult, OwnedEnv, ResourceArc, Term, TermType};
use serde_json::{Map, Number, Value};

/// The NIF's allocator: mimalloc, as the Explorer/Polars NIFs ship. A poll decodes and names
/// thousands of small strings; with the system allocator `malloc`/`free` were about 45 % of the
/// decode's instructions (BENCHMARKS.md, CPU per poll). Only this cdylib's own Rust allocations
/// use it; the BEAM's allocators are untouched.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::runtime::Runtime;

mod atoms {
    rustler::atoms! { ok, error, ecs_peers, update, discovered, nodes, dial, events, message, shared, nil, r#true = "true", r#false = "false" }
}

/// The runtime every poller of this VM runs on (two worker threads, created when the NIF loads).
fn runtime() -> Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("ecs-peers")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the ecs-peers runtime: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A running poller. Dropping it (the owner exits, or the term is garbage-collected) stops it.
pub struct PollerResource {
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Requests to the running poller.
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
}

/// What a NIF asks of a running poller; forwarded to the core's [`ecs_peers::PollerHandle`].
enum Request {
    /// Add a subscriber (pid, tag).
    Subscribe(LocalPid, u64),
    /// The sharing group's members now (node names).
    Share(Vec<String>),
    /// A result from another member: (its node name, the bytes).
    Receive(String, Vec<u8>),
}

impl PollerResource {
    fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

impl Drop for PollerResource {
    fn drop(&mut self) {
        self.stop();
    }
}

#[rustler::resource_impl]
impl rustler::Resource for PollerResource {}

/// One membership's node names, `"\n"`-joined: the bytes behind the `nodes` binary of every
/// update with that membership (a resource binary: shared, never copied into a process heap).
/// The same type holds the `dial` lines (node, address, port) of every update that has them.
pub struct NodesResource {
    bytes: Vec<u8>,
}

/// The `dial` lines of a snapshot: `"<node>\t<ip>\t<port>"` per peer (port empty when the
/// source reported none), in the snapshot's order, joined by `"\n"`. What the distribution
/// bridge needs to reach each peer, copied from the core's `Peer` (`node`, `ip`, `port`).
fn dial_lines(snapshot: &ecs_peers::Snapshot) -> Vec<u8> {
    let mut out = String::new();
    for (i, p) in snapshot.peers.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&p.node);
        out.push('\t');
        out.push_str(&p.ip.to_string());
        out.push('\t');
        if let Some(port) = p.port {
            out.push_str(&port.to_string());
        }
    }
    out.into_bytes()
}

#[rustler::resource_impl]
impl rustler::Resource for NodesResource {}

/// Validates `config` and starts polling; every update goes to `pid` tagged with `tag`, and to
/// every subscriber added with `subscribe/3`. The poller stops when every subscriber has exited,
/// or when the resource is dropped.
#[rustler::nif]
fn start(
    config: Term,
    this: Term,
    pid: LocalPid,
    tag: u64,
) -> Result<ResourceArc<PollerResource>, String> {
    let config = to_config(config, this)?;
    let rt = runtime()?;
    let (sender, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let task = rt.spawn(async move {
        let running = ecs_peers::Poller::new(config).await.spawn();
        let mut forwards = tokio::task::JoinSet::new();
        forwards.spawn(forward(running.subscribe(), pid, tag));
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Subscribe(pid, tag)) => {
                        forwards.spawn(forward(running.subscribe(), pid, tag));
                    }
                    Some(Request::Share(members)) => {
                        let _ = running.share(members);
                    }
                    Some(Request::Receive(from, result)) => {
                        let _ = running.receive_shared(from, result);
                    }
                    None => break,
                },
                Some(_) = forwards.join_next() => {
                    if forwards.is_empty() {
                        // Every subscriber is gone: stop polling.
                        break;
                    }
                }
            }
        }
    });
    Ok(ResourceArc::new(PollerResource {
        task: Mutex::new(Some(task.abort_handle())),
        requests: sender,
    }))
}

/// Adds a subscriber to a running poller: its updates also go to `pid`, tagged with `tag`,
/// starting with the latest one.
#[rustler::nif]
fn subscribe(
    resource: ResourceArc<PollerResource>,
    pid: LocalPid,
    tag: u64,
) -> Result<Atom, String> {
    resource
        .requests
        .send(Request::Subscribe(pid, tag))
        .map(|_| atoms::ok())
        .map_err(|_| "the poller has stopped".to_string())
}

/// `:ok`, or `{:error, message}` when the request could not be sent or its arguments are not
/// what the NIF takes.
fn sent<'a>(env: Env<'a>, result: Result<(), String>) -> Term<'a> {
    match result {
        Ok(()) => atoms::ok().encode(env),
        Err(message) => (atoms::error(), message).encode(env),
    }
}

/// Fleet-shared polling: `members` (a list of node-name binaries, this node included) are the
/// nodes sharing polls with this one now; the core elects who polls each source. Returns `:ok`
/// at once, or `{:error, message}` (the poller has stopped, or `members` is not a list of
/// binaries).
#[rustler::nif]
fn share<'a>(env: Env<'a>, resource: ResourceArc<PollerResource>, members: Term<'a>) -> Term<'a> {
    let members = members
        .decode::<Vec<Term>>()
        .map_err(|_| {
            format!("share: members must be a list of node-name binaries, got {members:?}")
        })
        .and_then(|items| {
            items
                .into_iter()
                .map(|m| {
                    m.decode::<String>().map_err(|_| {
                        format!("share: each member must be a node-name binary, got {m:?}")
                    })
                })
                .collect::<Result<Vec<String>, String>>()
        });
    sent(
        env,
        members.and_then(|m| {
            resource
                .requests
                .send(Request::Share(m))
                .map_err(|_| "the poller has stopped".to_string())
        }),
    )
}

/// Fleet-shared polling: a result (a binary of another member's `update.shared`) `from` that
/// member (its node-name binary). Returns `:ok` at once (or `{:error, message}` when the poller
/// has stopped or the arguments are not binaries); the core decodes, checks and applies it on
/// its own threads, and drops (and counts) what it must not apply. Nothing it carries becomes
/// an atom.
#[rustler::nif]
fn receive_shared<'a>(
    env: Env<'a>,
    resource: ResourceArc<PollerResource>,
    from: Term<'a>,
    result: Term<'a>,
) -> Term<'a> {
    let from = from
        .decode::<String>()
        .map_err(|_| format!("receive_shared: from must be a node-name binary, got {from:?}"));
    let bytes = result
        .decode::<rustler::Binary>()
        .map(|b| b.as_slice().to_vec())
        .map_err(|_| "receive_shared: result must be a binary".to_string());
    sent(
        env,
        from.and_then(|f| bytes.map(|b| (f, b))).and_then(|(f, b)| {
            resource
                .requests
                .send(Request::Receive(f, b))
                .map_err(|_| "the poller has stopped".to_string())
        }),
    )
}

/// Sends one subscription's updates to `pid` until it exits (or the poller stops).
async fn forward(mut subscription: ecs_peers::Subscription, pid: LocalPid, tag: u64) {
    let mut env = OwnedEnv::new();
    let mut nodes: Option<(u64, ResourceArc<NodesResource>)> = None;
    let mut dial: Option<ResourceArc<NodesResource>> = None;
    while let Some(update) = subscription.next().await {
        let membership = update.snapshot.membership();
        let shared = match &nodes {
            Some((m, shared)) if *m == membership => shared.clone(),
            _ => {
                let names: Vec<&str> = update
                    .snapshot
                    .peers
                    .iter()
                    .map(|p| p.node.as_str())
                    .collect();
                let shared = ResourceArc::new(NodesResource {
                    bytes: names.join("\n").into_bytes(),
                });
                nodes = Some((membership, shared.clone()));
                shared
            }
        };
        let lines = dial_lines(&update.snapshot);
        let dial_shared = match &dial {
            Some(d) if d.bytes == lines => d.clone(),
            _ => {
                let d = ResourceArc::new(NodesResource { bytes: lines });
                dial = Some(d.clone());
                d
            }
        };
        let sent = env.send_and_clear(&pid, |env| {
            let update = encode_update(env, &update, membership, &shared, &dial_shared);
            (atoms::ecs_peers(), tag, (atoms::update(), update)).encode(env)
        });
        if sent.is_err() {
            // The subscriber is gone.
            return;
        }
    }
}

/// The node names behind an update's `nodes` handle: one `"\n"`-joined binary that points into
/// the shared resource (no copy; O(1)).
#[rustler::nif]
fn names(env: Env, nodes: ResourceArc<NodesResource>) -> rustler::Binary {
    nodes.make_binary(env, |n| n.bytes.as_slice())
}

/// Stops a poller now (dropping the resource does the same, later).
#[rustler::nif]
fn stop(resource: ResourceArc<PollerResource>) -> Atom {
    resource.stop();
    atoms::ok()
}

/// Polls every source once; the snapshot is sent to `pid` as `{:ecs_peers, tag, {:discovered, snapshot}}`.
#[rustler::nif]
fn discover(config: Term, this: Term, pid: LocalPid, tag: u64) -> Result<Atom, String> {
    let config = to_config(config, this)?;
    runtime()?.spawn(async move {
        let mut poller = ecs_peers::Poller::new(config).await;
        let update = poller.poll().await;
        let mut snapshot = serde_json::to_value(&*update.snapshot).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut snapshot {
            m.remove("schema");
        }
        let mut env = OwnedEnv::new();
        let _ = env.send_and_clear(&pid, |env| {
            let snapshot = value_to_term(env, &snapshot);
            (atoms::ecs_peers(), tag, (atoms::discovered(), snapshot)).encode(env)
        });
    });
    Ok(atoms::ok())
}

/// Validates a configuration without starting anything: `{:ok, %{polling_interval: ms,
/// poll_timeout: ms, local_node: name | nil, node_basename: name | nil, share_polling: boolean,
/// sharing_key: binary}}` (this node's name and the basename peers are named by, as the core
/// derived them; `sharing_key`: 16 lowercase hex digits, equal on nodes that may share poll
/// results, see `ecs_peers::sharing_key`) or `{:error, message}`.
#[rustler::nif]
fn validate<'a>(env: Env<'a>, config: Term<'a>, this: Term<'a>) -> Result<Term<'a>, String> {
    let c = to_config(config, this)?;
    let basename = match &c.node {
        ecs_peers::NodeNaming::Basename(b) => Some(b.clone()),
        ecs_peers::NodeNaming::Epmd { prefer } => prefer.clone(),
        _ => None,
    };
    let timings = serde_json::json!({
        "polling_interval": c.polling_interval.as_millis() as u64,
        "poll_timeout": c.poll_timeout.as_millis() as u64,
        "local_node": c.local_node,
        "node_basename": basename,
        "share_polling": c.share_polling,
        "sharing_key": format!("{:016x}", ecs_peers::sharing_key(&c)),
    });
    Ok(value_to_term(env, &timings))
}

/// The configuration key table: `[%{key:, scope:, kind:, default:, doc:}]`, for docs and checks.
#[rustler::nif]
fn keys(env: Env) -> NifResult<Term> {
    let rows: Vec<Value> = ecs_peers::KEYS
        .iter()
        .map(|k| {
            serde_json::json!({
                "key": k.key,
                "scope": match k.scope {
                    ecs_peers::config::Scope::Top => "top",
                    ecs_peers::config::Scope::Ecs => "ecs",
                    ecs_peers::config::Scope::CloudMap => "cloudmap",
                },
                "kind": k.kind,
                "default": k.default,
                "doc": k.doc,
            })
        })
        .collect();
    Ok(value_to_term(env, &Value::Array(rows)))
}

fn to_config(term: Term, this: Term) -> Result<ecs_peers::Config, String> {
    let value = term_to_value(term, "(config)", 0)?;
    ecs_peers::Config::from_value_for(value, &this_node(this)?).map_err(|e| e.to_string())
}

/// `{node(), release_name | nil}` or `{node(), release_name | nil, :net_kernel.longnames()}`
/// → the core's description of this node (`longnames() == false`: short names, `-sname`).
fn this_node(term: Term) -> Result<ecs_peers::config::ThisNode, String> {
    let bad =
        || format!("this node: expected {{node(), release_name | nil, longnames}}, got {term:?}");
    let parts = get_tuple(term).map_err(|_| bad())?;
    let (node, release, short) = match parts.as_slice() {
        [node, release] => (node, release, false),
        [node, release, longnames] => {
            let l = longnames.atom_to_string().map_err(|_| bad())?;
            (node, release, l == "false")
        }
        _ => return Err(bad()),
    };
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
fn term_to_value(term: Term, path: &str, depth: usize) -> Result<Value, String> {
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

/// A poller's update: statuses, conflicts and changes in full; the node names as one shared
/// binary (`nodes`) with its fingerprint (`membership`); each event with its sentence.
fn encode_update<'a>(
    env: Env<'a>,
    update: &ecs_peers::Update,
    membership: u64,
    nodes: &ResourceArc<NodesResource>,
    dial: &ResourceArc<NodesResource>,
) -> Term<'a> {
    let s = &update.snapshot;
    let c = &update.changes;
    let v = serde_json::json!({
        "poll": s.poll,
        "taken_at": s.taken_at,
        "duration_ms": s.duration_ms,
        "peer_count": s.peers.len(),
        "membership": membership,
        "sources": s.sources,
        "conflicts": s.conflicts,
        "local": s.local,
        "left": s.left,
        "sharing_with": s.sharing_with,
        "shared_dropped": s.shared_dropped,
        "added": c.added,
        "removed": c.removed,
        "draining": c.draining,
    });
    let term = value_to_term(env, &v);
    let events: Vec<Term> = c
        .events
        .iter()
        .map(|e| {
            let t = value_to_term(env, &serde_json::to_value(e).unwrap_or(Value::Null));
            t.map_put(atoms::message(), e.to_string()).unwrap_or(t)
        })
        .collect();
    let term = term.map_put(atoms::events(), events).unwrap_or(term);
    let shared: Vec<Term> = update
        .shared
        .iter()
        .map(|bytes| {
            let mut b = rustler::NewBinary::new(env, bytes.len());
            b.as_mut_slice().copy_from_slice(bytes);
            rustler::Binary::from(b).to_term(env)
        })
        .collect();
    let term = term.map_put(atoms::shared(), shared).unwrap_or(term);
    let term = term
        .map_put(atoms::dial(), dial.encode(env))
        .unwrap_or(term);
    term.map_put(atoms::nodes(), nodes.encode(env))
        .unwrap_or(term)
}

/// Value → term. Object keys that are plain lowercase identifiers (the snapshot's field names)
/// become atoms; any other key (e.g. `ecs:ListTasks`) stays a binary, so no atom is made from data.
fn value_to_term<'a>(env: Env<'a>, v: &Value) -> Term<'a> {
    match v {
        Value::Null => atoms::nil().encode(env),
        Value::Bool(true) => atoms::r#true().encode(env),
        Value::Bool(false) => atoms::r#false().encode(env),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.encode(env)
            } else if let Some(u) = n.as_u64() {
                u.encode(env)
            } else {
                n.as_f64().unwrap_or(0.0).encode(env)
            }
        }
        Value::String(s) => s.encode(env),
        Value::Array(items) => items
            .iter()
            .map(|i| value_to_term(env, i))
            .collect::<Vec<_>>()
            .encode(env),
        Value::Object(m) => {
            let mut map = rustler::types::map::map_new(env);
            for (k, v) in m {
                let key = if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                {
                    Atom::from_str(env, k)
                        .map(|a| a.encode(env))
                        .unwrap_or_else(|_| k.encode(env))
                } else {
                    k.encode(env)
                };
                map = map.map_put(key, value_to_term(env, v)).unwrap_or(map);
            }
            map
        }
    }
}

/// Creates the runtime when the library is loaded, so no later NIF call spawns threads on a
/// scheduler. A failure here is reported by the first call that needs the runtime.
fn load(_env: Env, _info: Term) -> bool {
    let _ = runtime();
    true
}

rustler::init!("Elixir.EcsPeers.Native", load = load);
