//! The release's boot step: this task's node name, computed by the core
//! ([`ecs_peers::this_task`]) before the VM that will carry it starts. `EcsPeers.Release.env/0`
//! calls it from `bin/<release> eval`, which rel/env.sh runs once per release command.

use ecs_peers::Config;
use serde_json::json;

/// `this_node(basename)`: `{:ok, node_name}` (e.g. `"app@10.0.1.5"`, or
/// `"app-<task id>@<instance ip>"` in bridge or host mode), or `{:error, message}` naming the
/// fix. Reads `ECS_CONTAINER_METADATA_URI_V4`, the AWS credentials and region chain,
/// `AWS_ENDPOINT_URL` and `ECS_PEERS_DIST_PORT` from the environment, as the poller does.
/// Blocks for up to a few seconds (one local HTTP call and one to three AWS calls): a dirty I/O
/// NIF, run once per boot.
#[rustler::nif(schedule = "DirtyIo")]
fn this_node(basename: String) -> Result<String, String> {
    let config = Config::from_value(json!({
        "node_basename": basename,
        "sources": [{"type": "ecs", "cluster": "auto"}],
    }))
    .map_err(|e| e.to_string())?;
    // The calls run on the NIF's runtime threads, never on this dirty scheduler's thread: the
    // SDK's futures are deep, and the scheduler's stack is small (polled on it, the EC2 calls
    // of bridge mode overflowed it). This thread only waits for the result.
    let runtime = crate::runtime::runtime()?;
    let named = runtime
        .block_on(runtime.spawn(async move { ecs_peers::this_task(&config).await }))
        .map_err(|e| format!("naming this node failed: {e}"))?;
    named.map(|task| task.node).map_err(|e| e.to_string())
}
