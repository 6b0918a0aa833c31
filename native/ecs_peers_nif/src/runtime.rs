//! The tokio runtime every poller of this VM runs on, and the running poller resource.
//!
//! A poller sends each update to one subscriber pid until that pid exits, the resource is
//! dropped (its owner exited, or the term was garbage-collected) or `stop/1` is called.

use std::sync::{Arc, Mutex, OnceLock};

use rustler::{Atom, Encoder, Env, LocalPid, OwnedEnv, ResourceArc, Term};
use tokio::runtime::Runtime;

use crate::decode::ConfigResource;
use crate::encode;

mod atoms {
    rustler::atoms! { ok, error, ecs_peers, update, discovered }
}

/// The runtime every poller of this VM runs on (two worker threads, created when the NIF loads).
pub fn runtime() -> Result<&'static Runtime, String> {
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
    /// The peers of the last update sent to the subscriber, and the distribution port of the
    /// config: the only addresses `diagnose/7` may dial (a peer a configured source listed).
    pub(crate) listed: Arc<Listed>,
}

/// What the last update sent listed, for `diagnose/7` ([`crate::diagnose`]).
pub(crate) struct Listed {
    pub(crate) snapshot: Mutex<Option<Arc<ecs_peers::Snapshot>>>,
    pub(crate) distribution_port: u16,
}

impl Listed {
    /// The peer named `node` in the last update sent, if it listed one.
    pub(crate) fn peer(&self, node: &str) -> Option<ecs_peers::Peer> {
        let snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        let peers = &snapshot.as_ref()?.peers;
        // Sorted by node name (then address): the first of that name.
        let at = peers.partition_point(|p| p.node.as_str() < node);
        peers
            .get(at)
            .filter(|p| p.node == node)
            .map(|p| ecs_peers::Peer::clone(p))
    }
}

/// What a NIF asks of a running poller; forwarded to the core's [`ecs_peers::PollerHandle`].
enum Request {
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

    fn send(&self, request: Request) -> Result<(), String> {
        self.requests
            .send(request)
            .map_err(|_| "the poller has stopped".to_string())
    }
}

impl Drop for PollerResource {
    fn drop(&mut self) {
        self.stop();
    }
}

#[rustler::resource_impl]
impl rustler::Resource for PollerResource {}

/// Starts polling with a configuration `config/2` validated; every update goes to `pid` as
/// `{:ecs_peers, tag, {:update, %EcsPeers.Update{}}}`. The poller stops when `pid` exits, or
/// when the resource is dropped.
#[rustler::nif]
fn start(
    config: ResourceArc<ConfigResource>,
    pid: LocalPid,
    tag: u64,
) -> Result<ResourceArc<PollerResource>, String> {
    let config = config.config.clone();
    let listed = Arc::new(Listed {
        snapshot: Mutex::new(None),
        distribution_port: config.distribution_port,
    });
    let rt = runtime()?;
    let (sender, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let forwarded = Arc::clone(&listed);
    let task = rt.spawn(async move {
        let running = ecs_peers::Poller::new(config).await.spawn();
        let forwarding = forward(running.subscribe(), pid, tag, forwarded);
        tokio::pin!(forwarding);
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Share(members)) => {
                        let _ = running.share(members);
                    }
                    Some(Request::Receive(from, result)) => {
                        let _ = running.receive_shared(from, result);
                    }
                    None => break,
                },
                // The subscriber is gone: stop polling.
                () = &mut forwarding => break,
            }
        }
    });
    Ok(ResourceArc::new(PollerResource {
        task: Mutex::new(Some(task.abort_handle())),
        requests: sender,
        listed,
    }))
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
    sent(env, members.and_then(|m| resource.send(Request::Share(m))))
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
        from.and_then(|f| bytes.map(|b| (f, b)))
            .and_then(|(f, b)| resource.send(Request::Receive(f, b))),
    )
}

/// Sends one subscription's updates to `pid` until it exits (or the poller stops); the
/// snapshot of each is kept in `listed` first.
async fn forward(
    mut subscription: ecs_peers::Subscription,
    pid: LocalPid,
    tag: u64,
    listed: Arc<Listed>,
) {
    let mut env = OwnedEnv::new();
    let mut handles = encode::Handles::default();
    while let Some(update) = subscription.next().await {
        *listed.snapshot.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::clone(&update.snapshot));
        let held = handles.for_update(&update);
        let sent = env.send_and_clear(&pid, |env| {
            let term = encode::update(env, &update, held);
            (atoms::ecs_peers(), tag, (atoms::update(), term)).encode(env)
        });
        if sent.is_err() {
            // The subscriber is gone.
            return;
        }
    }
}

/// Stops a poller now (dropping the resource does the same, later).
#[rustler::nif]
fn stop(resource: ResourceArc<PollerResource>) -> Atom {
    resource.stop();
    atoms::ok()
}

/// Polls every source once with a configuration `config/2` validated; the snapshot is sent to
/// `pid` as `{:ecs_peers, tag, {:discovered, snapshot}}`.
#[rustler::nif]
fn discover(config: ResourceArc<ConfigResource>, pid: LocalPid, tag: u64) -> Result<Atom, String> {
    let config = config.config.clone();
    runtime()?.spawn(async move {
        let mut poller = ecs_peers::Poller::new(config).await;
        let update = poller.poll().await;
        let mut env = OwnedEnv::new();
        let _ = env.send_and_clear(&pid, |env| {
            let snapshot = encode::snapshot(env, &update.snapshot);
            (atoms::ecs_peers(), tag, (atoms::discovered(), snapshot)).encode(env)
        });
    });
    Ok(atoms::ok())
}
