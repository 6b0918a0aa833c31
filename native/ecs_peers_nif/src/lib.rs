//! Rustler adapter for ecs-peers: converts terms, runs the core's poller on a tokio runtime owned
//! by this library, and *sends* every update to an Elixir pid. It decides nothing itself.
//!
//! Split by concern, as the Explorer NIF is:
//! - [`decode`]: term → the core's validated `Config`, once per start (`config/2`, held in a
//!   resource that `start/3` and `discover/3` take);
//! - [`runtime`]: the tokio runtime and the running poller resource (`start/3`, `stop/1`,
//!   `share/2`, `receive_shared/3`, `discover/3`);
//! - [`diagnose`]: a peer this node cannot connect to, checked by the doctor's checks
//!   (`diagnose/6`), the answer sent as a message;
//! - [`encode`]: the core's update → the `%EcsPeers.Update{}` struct (one definition of the
//!   protocol, [`encode::UpdateTerm`]), node names and dial entries behind handles, the key table.
//!
//! Every NIF returns at once: config validation is microseconds of work, and everything that
//! waits (AWS calls, timers) runs on the runtime's own threads. A panic inside a NIF becomes an
//! Elixir exception (rustler catches it); a panic inside a poll becomes a failing source (the
//! core catches it).
//!
//! Messages to the subscriber (the pid given to `start/3`):
//! - `{:ecs_peers, tag, {:update, %EcsPeers.Update{}}}` after every poll (fields: see
//!   [`encode::UpdateTerm`] and `EcsPeers.Update`);
//! - `{:ecs_peers, tag, {:discovered, snapshot}}` once, for `discover/3`: the core's snapshot
//!   with every peer in full (`peers: [peer]`), as `EcsPeers.discover/1` documents it;
//! - `{:ecs_peers, tag, {:diagnosis, node, result}}` once per `diagnose/6` (see [`diagnose`]).

mod boot;
mod decode;
mod diagnose;
mod encode;
mod runtime;
mod tls;

use rustler::{Env, Term};

/// The NIF's allocator: mimalloc, as the Explorer/Polars NIFs ship. A poll decodes and names
/// thousands of small strings, and the system allocator's `malloc`/`free` dominated that work
/// (BENCHMARKS.md, CPU per poll). Only this cdylib's own Rust allocations use it; the BEAM's
/// allocators are untouched.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Creates the runtime when the library is loaded, so no later NIF call spawns threads on a
/// scheduler. A failure here is reported by the first call that needs the runtime.
fn load(_env: Env, _info: Term) -> bool {
    let _ = runtime::runtime();
    true
}

rustler::init!("Elixir.EcsPeers.Native", load = load);
