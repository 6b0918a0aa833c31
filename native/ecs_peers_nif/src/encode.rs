//! The core's update → the `%EcsPeers.Update{}` struct: the one definition of what crosses from
//! the NIF to Elixir ([`UpdateTerm`]; `EcsPeers.Update` in elixir/lib is its other half, and
//! `update_fields/0` lets the Elixir side check the two name the same fields).
//!
//! What keeps 10,000 unchanged peers cheap: the node names and the dial entries travel as
//! handles (resources shared by every update with the same membership, a few bytes in each
//! message), with the membership's fingerprint, so a receiver that holds that membership does
//! nothing; `nodes/1` and `dial/1` turn a handle into terms (and make the atoms) only when the
//! receiver needs them, i.e. when the membership changed.

use std::net::IpAddr;

use rustler::types::tuple::make_tuple;
use rustler::{Atom, Encoder, Env, NifResult, NifStruct, ResourceArc, Term};
use serde_json::Value;

mod atoms {
    rustler::atoms! { nil, r#true = "true", r#false = "false" }
}

/// Every peer's node name of one membership (in the snapshot's order, sorted by node name): the
/// `nodes` handle of each update with that membership.
pub struct NodesResource {
    names: Vec<String>,
}

#[rustler::resource_impl]
impl rustler::Resource for NodesResource {}

/// Where each peer is dialled, for the EPMD-less distribution bridge (`EcsPeers.Epmd`): node
/// name, address and port (`None` when the source reported none: then the one configured
/// distribution port applies), copied from the core's `Peer`, in the snapshot's order. The
/// `dial` handle of each update until one of them changes.
pub struct DialResource {
    entries: Vec<(String, IpAddr, Option<u16>)>,
}

#[rustler::resource_impl]
impl rustler::Resource for DialResource {}

impl DialResource {
    fn of(snapshot: &ecs_peers::Snapshot) -> Self {
        DialResource {
            entries: snapshot
                .peers
                .iter()
                .map(|p| (p.node.clone(), p.ip, p.port))
                .collect(),
        }
    }

    /// The snapshot's peers are dialled exactly as these entries say (compared in place: no
    /// copy of 10,000 names per poll to find out that nothing changed).
    fn matches(&self, snapshot: &ecs_peers::Snapshot) -> bool {
        self.entries.len() == snapshot.peers.len()
            && self
                .entries
                .iter()
                .zip(&snapshot.peers)
                .all(|((node, ip, port), p)| *node == p.node && *ip == p.ip && *port == p.port)
    }
}

/// The core's serde form of a value as a value tree. The core's types serialize infallibly
/// (plain structs of strings and numbers), so a failure is a bug shown as `nil`, not a crash of
/// the sender.
macro_rules! to_value {
    ($v:expr) => {
        serde_json::to_value($v).unwrap_or(Value::Null)
    };
}

/// Declares [`UpdateTerm`] and, from the same field list, [`UPDATE_FIELDS`]: a field added to
/// the struct is in the list by construction, and the Elixir side checks the list against
/// `%EcsPeers.Update{}`.
macro_rules! update_protocol {
    ($(#[$meta:meta])* pub struct $name:ident<'a> { $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(NifStruct)]
        #[module = "EcsPeers.Update"]
        #[rustler(encode)]
        pub struct $name<'a> { $($(#[$fmeta])* $field: $ty,)* }

        /// The field names of [`UpdateTerm`], in declaration order.
        pub const UPDATE_FIELDS: &[&str] = &[$(stringify!($field)),*];
    };
}

update_protocol! {
    /// One poll's update, as `%EcsPeers.Update{}` (elixir/lib/ecs_peers/update.ex documents
    /// each field for Elixir readers). Every update is self-contained, whatever the receiver
    /// skipped. Nested values (statuses, peers, conflicts, events) are the core's serde form:
    /// maps with atom keys (field names only) and binary, number, boolean or nil values.
    pub struct UpdateTerm<'a> {
        /// Poll counter, from 1.
        poll: u64,
        /// When the poll finished, RFC 3339 text.
        taken_at: String,
        /// How long the poll round took, milliseconds.
        duration_ms: u64,
        /// How many peers the membership has.
        peer_count: usize,
        /// The membership's fingerprint: equal fingerprints, equal `nodes`.
        membership: u64,
        /// Handle to every peer's node name (`nodes/1` reads it).
        nodes: ResourceArc<NodesResource>,
        /// Handle to where each peer is dialled (`dial/1` reads it); the same handle while the
        /// entries are the same.
        dial: ResourceArc<DialResource>,
        /// One status per source, in configuration order.
        sources: Term<'a>,
        /// Addresses claimed by several regions (never peers).
        conflicts: Term<'a>,
        /// This node as a source reported it, or nil.
        local: Term<'a>,
        /// The source this node's task has left, or nil.
        left: Term<'a>,
        /// The sharing group's size, this node included (0: not sharing).
        sharing_with: usize,
        /// Received shared results dropped since start that named no source here or did not
        /// decode.
        shared_dropped: u64,
        /// Peers added since the previous update sent to this subscriber.
        added: Term<'a>,
        /// Peers removed since the previous update.
        removed: Term<'a>,
        /// Peers that started draining since the previous update.
        draining: Term<'a>,
        /// The core's membership events since the previous update, each with `message:`.
        events: Vec<Term<'a>>,
        /// The results this node polled for its sharing group: opaque binaries for the other
        /// members' `receive_shared/3`.
        shared: Vec<rustler::Binary<'a>>,
    }
}

/// What a subscription's sender keeps between updates, so an unchanged membership reuses its
/// handles.
#[derive(Default)]
pub struct Handles {
    nodes: Option<(u64, ResourceArc<NodesResource>)>,
    dial: Option<ResourceArc<DialResource>>,
}

impl Handles {
    /// The handles for `update`'s snapshot: the held ones when unchanged, new ones otherwise.
    pub fn for_update(
        &mut self,
        update: &ecs_peers::Update,
    ) -> (u64, ResourceArc<NodesResource>, ResourceArc<DialResource>) {
        let snapshot = &update.snapshot;
        let membership = snapshot.membership();
        let nodes = match &self.nodes {
            Some((m, held)) if *m == membership => held.clone(),
            _ => {
                let names = snapshot.peers.iter().map(|p| p.node.clone()).collect();
                let fresh = ResourceArc::new(NodesResource { names });
                self.nodes = Some((membership, fresh.clone()));
                fresh
            }
        };
        let dial = match &self.dial {
            Some(held) if held.matches(snapshot) => held.clone(),
            _ => {
                let fresh = ResourceArc::new(DialResource::of(snapshot));
                self.dial = Some(fresh.clone());
                fresh
            }
        };
        (membership, nodes, dial)
    }
}

/// The `%EcsPeers.Update{}` term of `update`.
pub fn update<'a>(
    env: Env<'a>,
    update: &ecs_peers::Update,
    (membership, nodes, dial): (u64, ResourceArc<NodesResource>, ResourceArc<DialResource>),
) -> Term<'a> {
    let s = &update.snapshot;
    let c = &update.changes;
    let serde = |v: Value| value_to_term(env, &v);
    UpdateTerm {
        poll: s.poll,
        taken_at: s.taken_at.clone(),
        duration_ms: s.duration_ms,
        peer_count: s.peers.len(),
        membership,
        nodes,
        dial,
        sources: serde(to_value!(&s.sources)),
        conflicts: serde(to_value!(&s.conflicts)),
        local: serde(to_value!(&s.local)),
        left: serde(to_value!(&s.left)),
        sharing_with: s.sharing_with,
        shared_dropped: s.shared_dropped,
        added: serde(to_value!(&c.added)),
        removed: serde(to_value!(&c.removed)),
        draining: serde(to_value!(&c.draining)),
        events: c
            .events
            .iter()
            .map(|e| {
                let mut v = to_value!(e);
                if let Value::Object(m) = &mut v {
                    m.insert("message".into(), Value::String(e.to_string()));
                }
                value_to_term(env, &v)
            })
            .collect(),
        shared: update
            .shared
            .iter()
            .map(|bytes| {
                let mut b = rustler::NewBinary::new(env, bytes.len());
                b.as_mut_slice().copy_from_slice(bytes);
                b.into()
            })
            .collect(),
    }
    .encode(env)
}

/// `discover/3`'s answer: the core's snapshot (its serde form, without the JSON `schema` tag).
pub fn snapshot<'a>(env: Env<'a>, snapshot: &ecs_peers::Snapshot) -> Term<'a> {
    let mut v = to_value!(snapshot);
    if let Value::Object(m) = &mut v {
        m.remove("schema");
    }
    value_to_term(env, &v)
}

/// The node names behind an update's `nodes` handle, as atoms (the names the links connect):
/// `{:ok, [node()]}`, or `{:error, message}` for a name the VM cannot make an atom of (longer
/// than 255 characters). A dirty NIF: making 10,000 atoms takes longer than a normal scheduler
/// may be held, and it runs only when the membership changed.
#[rustler::nif(schedule = "DirtyCpu")]
fn nodes(env: Env, handle: ResourceArc<NodesResource>) -> Result<Vec<Atom>, String> {
    handle.names.iter().map(|n| node_atom(env, n)).collect()
}

/// The dial entries behind an update's `dial` handle: `{:ok, [{node(), :inet.ip_address(),
/// port | nil}]}` (what `EcsPeers.Epmd.put_peers/1` takes), or `{:error, message}` as `nodes/1`.
/// Dirty, as `nodes/1`, for the same reason.
#[rustler::nif(schedule = "DirtyCpu")]
fn dial<'a>(env: Env<'a>, handle: ResourceArc<DialResource>) -> Result<Vec<Term<'a>>, String> {
    handle
        .entries
        .iter()
        .map(|(node, ip, port)| {
            let node = node_atom(env, node)?;
            Ok(make_tuple(
                env,
                &[node.encode(env), ip_tuple(env, ip), port.encode(env)],
            ))
        })
        .collect()
}

fn node_atom(env: Env, name: &str) -> Result<Atom, String> {
    Atom::from_str(env, name).map_err(|_| format!("{name:?} cannot be a node name atom"))
}

/// An address as `:inet` writes it: `{a, b, c, d}` or eight 16-bit groups.
fn ip_tuple<'a>(env: Env<'a>, ip: &IpAddr) -> Term<'a> {
    let parts: Vec<Term> = match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|o| o.encode(env)).collect(),
        IpAddr::V6(v6) => v6.segments().iter().map(|s| s.encode(env)).collect(),
    };
    make_tuple(env, &parts)
}

/// The field names `%EcsPeers.Update{}` must have, as atoms: [`UPDATE_FIELDS`], with `sources`
/// as `{:sources, keys}`, the keys of each source status this NIF encodes ([`source_keys`]).
/// `EcsPeers.Update` checks them when a topology starts, so a NIF and an Elixir package of
/// different protocol versions (an old `ECS_PEERS_NIF_PATH`) refuse to start instead of failing
/// on a missing field or a source status without the key it reads (e.g. `state`).
#[rustler::nif]
fn update_fields(env: Env) -> NifResult<Vec<Term>> {
    UPDATE_FIELDS
        .iter()
        .map(|f| {
            let name = Atom::from_str(env, f)?;
            if *f != "sources" {
                return Ok(name.encode(env));
            }
            let keys = source_keys()
                .iter()
                .map(|k| Atom::from_str(env, k))
                .collect::<NifResult<Vec<Atom>>>()?;
            Ok(make_tuple(env, &[name.encode(env), keys.encode(env)]))
        })
        .collect()
}

/// The keys of a source status in an update's `sources`: those of the core's serde form of
/// [`ecs_peers::SourceStatus`], read from one status as it is encoded (so they are the keys
/// sent, not a copy of them).
fn source_keys() -> Vec<String> {
    let config = ecs_peers::Config::from_value(serde_json::json!({"node_basename": "app",
        "sources": [{"type": "ecs", "region": "eu-west-2", "cluster": "web"}]}));
    let status = config
        .ok()
        .and_then(|c| c.sources.first().map(ecs_peers::SourceStatus::pending));
    match status.map(|s| to_value!(&s)) {
        Some(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The configuration key table: `[%{key:, scope:, kind:, default:, doc:}]`, for docs and checks.
#[rustler::nif]
fn keys(env: Env) -> Term {
    let rows: Vec<Value> = ecs_peers::KEYS
        .iter()
        .map(|k| {
            serde_json::json!({
                "key": k.key,
                "scope": k.scope.name(),
                "kind": k.kind(),
                "default": k.default_text(),
                "doc": k.doc,
            })
        })
        .collect();
    value_to_term(env, &Value::Array(rows))
}

/// Value → term. Object keys that are plain lowercase identifiers (the core's field names)
/// become atoms; any other key (e.g. `ecs:ListTasks`) stays a binary, so no atom is made from
/// data.
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
