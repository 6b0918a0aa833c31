//! `ecs-peers`: the core's discovery, for a person looking at a cluster.
//!
//! This binary only parses flags and prints; every decision is the library's.

use ecs_peers::SourceState;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The CLI's allocator: mimalloc, the same as the NIF's, so `watch` spends what a node spends
/// (BENCHMARKS.md, CPU per poll). The library sets none; applications embedding it choose.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

mod keyflags;
mod render;

/// Exit codes (documented in `--help` and docs/cli.md).
mod exit {
    pub const OK: u8 = 0;
    pub const INTERNAL: u8 = 1;
    pub const BAD_CONFIG: u8 = 2;
    pub const SOME_FAILED: u8 = 3;
    pub const ALL_FAILED: u8 = 4;
    pub const PROBLEMS: u8 = 5;
}

const EXIT_CODES: &str = "\
Exit status:
  0  every source answered
  1  internal error (I/O on stdout, runtime)
  2  bad flags or configuration (the message names the flag or key)
  3  some sources, not all, failed (their last-known peers, if any, are shown) or found
     running tasks or Cloud Map instances and could use none of them (STATUS SKIPPING: the
     DETAIL column says why and the fix)
  4  every source failed or skipped every task or instance it found (FAILING or SKIPPING)";

#[derive(Parser)]
#[command(
    name = "ecs-peers",
    version,
    about = "See which Erlang/Elixir peers your ECS tasks and Cloud Map services expose, across regions",
    long_about = "See which Erlang/Elixir peers your ECS tasks and Cloud Map services expose, across \
regions, merged into one namespace: the same view the libcluster strategy acts on.\n\n\
Sources come from repeated --ecs/--cloudmap flags and/or a --config file (TOML or JSON; \
`ecs-peers keys` lists every key). Every top-level key also has a flag, its name with dashes \
(--distribution-port, --polling-interval, ...), which wins over the file. AWS credentials come from the usual chain: environment, \
AWS_PROFILE, ECS task role, instance profile.",
    after_help = EXIT_CODES,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Poll every source once and print the peers and each source's status.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Poll continuously and print a line per change (peer added, removed, draining; source failing, recovered).
    #[command(after_help = WATCH_HELP)]
    Watch(WatchArgs),
    /// Check every peer from this host: EPMD (4369), registered names, distribution port, cookie; and diagnose.
    #[command(after_help = DOCTOR_HELP)]
    Doctor(DoctorArgs),
    /// Print every configuration key: type, default, meaning.
    Keys,
}

const DOCTOR_HELP: &str = "\
Run it where the nodes run (inside a task: `aws ecs execute-command ... --command 'ecs-peers doctor ...'`):
it connects from there to every peer's EPMD and distribution port, like the BEAM would.

Diagnoses (each with its likely cause and fix): access_denied, credentials, source_not_found,
source_failing, overlapping_cidrs, region_without_peers, region_unreachable, no_route, epmd_blocked,
epmd_refused, epmd_error, no_node, name_mismatch, dist_port_blocked, dist_port_unreachable,
cookie_mismatch, handshake_failed.

Exit status: 0 no problem found; 2 bad flags or configuration; 5 problems found.";

#[derive(Args)]
struct DoctorArgs {
    #[command(flatten)]
    sources: SourceArgs,
    /// Prove the cookie with a real distribution handshake (as a hidden node). Never printed.
    #[arg(long, env = "RELEASE_COOKIE", hide_env_values = true)]
    cookie: Option<String>,
    /// Per connection attempt, e.g. 2s.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    check_timeout: String,
    /// Peers checked at once.
    #[arg(long, value_name = "N", default_value_t = 16)]
    concurrency: usize,
    /// Print the report as JSON (schema ecs-peers/doctor/v2).
    #[arg(long)]
    json: bool,
    /// The nodes run without EPMD (EcsPeers.Epmd): check peers at the distribution port
    /// (distribution_port) instead of asking EPMD on 4369. Peers ECS reports with a port
    /// (bridge and host mode) are always checked at that port.
    #[arg(long)]
    no_epmd: bool,
}

const WATCH_HELP: &str = "\
Runs until interrupted (Ctrl-C), or for --count polls. With --json, one JSON object per line:
  {\"event\": \"added\"|\"removed\"|\"draining\", \"at\": ..., \"peer\": {...}}
  {\"event\": \"source_failing\"|\"source_recovered\", \"at\": ..., \"source\": {...}}
  {\"event\": \"conflict_found\", \"at\": ..., \"conflict\": {...}}
  {\"event\": \"local_left\", \"at\": ..., \"source\": ...}   (this node, RELEASE_NODE, left its source)
  {\"event\": \"snapshot\", \"at\": ..., \"snapshot\": {...}}   (with --every-poll)

Exit status: as for `list`, from the last poll when --count ends the watch; 0 when interrupted.";

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    sources: SourceArgs,
    /// Print the snapshot as JSON (schema ecs-peers/snapshot/v2, see docs/cli.md).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct WatchArgs {
    #[command(flatten)]
    sources: SourceArgs,
    /// Print JSON Lines events instead of text.
    #[arg(long)]
    json: bool,
    /// Also print every poll's full snapshot (a `snapshot` event, or a summary line).
    #[arg(long)]
    every_poll: bool,
    /// Stop after this many polls.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

#[derive(Args)]
struct SourceArgs {
    /// An ECS source: REGION/CLUSTER[/SERVICE], a cluster or service ARN, or keys: region=..,cluster=..,service=..,family=..,container=..,tags.KEY=VALUE
    #[arg(long = "ecs", value_name = "SPEC")]
    ecs: Vec<String>,
    /// A Cloud Map source: REGION/NAMESPACE/SERVICE, or keys: region=..,namespace=..,service=..,health=all,query.KEY=VALUE,port=distribution_port,owner_account=ACCOUNT
    #[arg(long = "cloudmap", value_name = "SPEC")]
    cloudmap: Vec<String>,
    /// A TOML or JSON file with sources and settings (see `ecs-peers keys`); flags add to it.
    #[arg(short, long, value_name = "FILE", env = "ECS_PEERS_CONFIG")]
    config: Option<PathBuf>,
    /// Inside an ECS task: add this task's own cluster (and service, else family) as a source, and
    /// leave this task out of the peers. Reads ECS_CONTAINER_METADATA_URI_V4.
    #[arg(long)]
    from_metadata: bool,
    /// The same cluster and service in other regions too, for every ECS source given by --ecs or
    /// --from-metadata: `all` (every region of the partition the account has enabled) or
    /// REGION,REGION,... (the key `regions`; absent regions are probed every
    /// --region-probe-interval).
    #[arg(long, value_name = "all|REGION,...")]
    regions: Option<String>,
    /// More logs on stderr (-v info, -vv debug). ECS_PEERS_LOG takes tracing filter syntax.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// A flag for every top-level key of the key table (`ecs-peers keys`).
    #[command(flatten)]
    keys: keyflags::KeyFlags,
}

/// Which flag (or file entry) each source came from, to name it in errors.
struct Origins(Vec<String>);

impl SourceArgs {
    /// Builds the configuration value tree: the file's, then flags on top; sources appended.
    fn value(&self) -> Result<(Value, Origins), String> {
        let mut root = match &self.config {
            Some(path) => ecs_peers::config::read_value(path).map_err(|e| e.to_string())?,
            None => Value::Object(Map::new()),
        };
        let Value::Object(map) = &mut root else {
            return Err("the config file must hold a map of keys at the top level".into());
        };
        let mut origins: Vec<String> = match map.get("sources") {
            Some(Value::Array(a)) => (0..a.len())
                .map(|i| format!("config file sources[{i}]"))
                .collect(),
            _ => Vec::new(),
        };
        let mut sources = match map.remove("sources") {
            Some(Value::Array(a)) => a,
            Some(other) => {
                map.insert("sources".into(), other);
                return Ok((root, Origins(origins)));
            }
            None => Vec::new(),
        };
        for spec in &self.ecs {
            sources.push(ecs_spec(spec)?);
            origins.push(format!("--ecs {spec}"));
        }
        for spec in &self.cloudmap {
            sources.push(cloudmap_spec(spec)?);
            origins.push(format!("--cloudmap {spec}"));
        }
        if self.from_metadata {
            sources.push(json!({"type": "ecs", "cluster": "auto"}));
            origins.push("--from-metadata".into());
        }
        if let Some(regions) = &self.regions {
            let value = regions_value(regions);
            let mut given = false;
            for (src, origin) in sources.iter_mut().zip(origins.iter_mut()) {
                if origin.starts_with("--ecs ") || origin == "--from-metadata" {
                    src["regions"] = value.clone();
                    origin.push_str(&format!(" --regions {regions}"));
                    given = true;
                }
            }
            if !given {
                return Err(format!("--regions {regions}: applies to the ECS sources of --ecs and --from-metadata, and none was given (in a config file, give the key regions to the source)"));
            }
        }
        if sources.is_empty() {
            return Err("no sources: give --ecs REGION/CLUSTER[/SERVICE], --cloudmap REGION/NAMESPACE/SERVICE, --from-metadata, or --config FILE".into());
        }
        map.insert("sources".into(), Value::Array(sources));
        self.keys.apply(map);
        Ok((root, Origins(origins)))
    }

    fn config(&self) -> Result<ecs_peers::Config, String> {
        let (value, origins) = self.value()?;
        // This node (its name is left out of the peers; its basename is the default) by the
        // core's rule, from the variables a release sets.
        let this = ecs_peers::config::ThisNode::from_release_env();
        ecs_peers::Config::from_value_for(value, &this)
            .map_err(|e| explain(e, &origins, &self.keys))
    }
}

/// Names the flag behind a config error.
fn explain(e: ecs_peers::Error, origins: &Origins, keys: &keyflags::KeyFlags) -> String {
    let ecs_peers::Error::Config { key, message } = &e else {
        return e.to_string();
    };
    if let Some(rest) = key.strip_prefix("sources[") {
        if let Some((idx, tail)) = rest.split_once(']') {
            if let Some(origin) = idx.parse::<usize>().ok().and_then(|i| origins.0.get(i)) {
                if origin.starts_with("--") {
                    let sub = tail.trim_start_matches('.');
                    let sub = if sub.is_empty() {
                        String::new()
                    } else {
                        format!(" {sub}:")
                    };
                    return format!("{origin}:{sub} {message}");
                }
            }
        }
    }
    // A top-level key has its flag (keyflags.rs): say whether the value came from it.
    let flag = match keys.given(key) {
        Some(_) => format!(" (--{})", keyflags::flag(key)),
        None if keyflags::is_flagged(key) => {
            format!(" (--{} or the config file)", keyflags::flag(key))
        }
        None => String::new(),
    };
    format!("{key}{flag}: {message}")
}

/// `REGION/CLUSTER[/SERVICE]`, an ARN (a cluster's or a service's: the config reads it), or
/// `key=value,...`.
fn ecs_spec(spec: &str) -> Result<Value, String> {
    if spec.contains('=') {
        return keyed(spec, "ecs");
    }
    if spec.starts_with("arn:") {
        return Ok(json!({"type": "ecs", "cluster": spec}));
    }
    let parts: Vec<&str> = spec.split('/').collect();
    match parts.as_slice() {
        [region, cluster] => Ok(json!({"type": "ecs", "region": region, "cluster": cluster})),
        [region, cluster, service] => {
            Ok(json!({"type": "ecs", "region": region, "cluster": cluster, "service": service}))
        }
        _ => Err(format!(
            "--ecs {spec}: expected REGION/CLUSTER or REGION/CLUSTER/SERVICE (e.g. eu-west-2/web/api), a cluster or service ARN, or region=..,cluster=..,service=.."
        )),
    }
}

/// `--regions`: `all`, or `REGION,REGION,...` as the list the key `regions` takes (each name
/// is checked by the core, which names the key and this flag).
fn regions_value(text: &str) -> Value {
    if text == "all" {
        return Value::from("all");
    }
    Value::Array(
        text.split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(Value::from)
            .collect(),
    )
}

/// `REGION/NAMESPACE/SERVICE`, or `key=value,...`.
fn cloudmap_spec(spec: &str) -> Result<Value, String> {
    if spec.contains('=') {
        return keyed(spec, "cloudmap");
    }
    match spec.split('/').collect::<Vec<_>>().as_slice() {
        [region, namespace, service] => Ok(
            json!({"type": "cloudmap", "region": region, "namespace": namespace, "service": service}),
        ),
        _ => Err(format!(
            "--cloudmap {spec}: expected REGION/NAMESPACE/SERVICE (e.g. us-west-2/internal/api) or region=..,namespace=..,service=.."
        )),
    }
}

fn keyed(spec: &str, kind: &str) -> Result<Value, String> {
    let mut m = Map::new();
    m.insert("type".into(), kind.into());
    for pair in spec.split(',').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("--{kind} {spec}: {pair:?} is not key=value"));
        };
        let k = k.trim();
        // `MAP.KEY=VALUE` is one entry of a map key (`query.stage=prod`, `tags.team=a`); the
        // entry's own key may hold dots (`tags.app.example.com/team=a`).
        match k.split_once('.') {
            Some((map, entry)) => {
                let slot = m.entry(map).or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(entries) = slot else {
                    return Err(format!(
                        "--{kind} {spec}: {map} is given both as {map}=.. and as {map}.KEY=.."
                    ));
                };
                entries.insert(entry.into(), v.into());
            }
            None if m.get(k).is_some_and(Value::is_object) => {
                return Err(format!(
                    "--{kind} {spec}: {k} is given both as {k}=.. and as {k}.KEY=.."
                ));
            }
            None => {
                m.insert(k.into(), v.into());
            }
        }
    }
    Ok(Value::Object(m))
}

fn init_logs(verbose: u8) {
    let default = match verbose {
        0 => "error",
        1 => "ecs_peers=info",
        _ => "ecs_peers=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ECS_PEERS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Exit status for a snapshot: which sources answered.
fn status_of(snapshot: &ecs_peers::Snapshot) -> u8 {
    let failing = snapshot
        .sources
        .iter()
        .filter(|s| match s.state {
            SourceState::Failing | SourceState::Skipping => true,
            SourceState::Ok | SourceState::Absent | SourceState::Pending => false,
        })
        .count();
    if failing == 0 {
        exit::OK
    } else if failing == snapshot.sources.len() {
        exit::ALL_FAILED
    } else {
        exit::SOME_FAILED
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Keys => {
            let mut out = std::io::stdout().lock();
            finish(render::keys(&mut out), exit::OK)
        }
        Command::List(args) => with_config(&args.sources, |config| async move {
            let snapshot = ecs_peers::discover(config).await;
            let mut out = std::io::stdout().lock();
            let written = if args.json {
                render::json(&mut out, &snapshot)
            } else {
                render::table(&mut out, &snapshot)
            };
            finish(written, status_of(&snapshot))
        }),
        Command::Doctor(args) => {
            let timeout = match ecs_peers::config::parse_duration(
                "--check-timeout",
                &Value::from(args.check_timeout.as_str()),
            ) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("ecs-peers: {e}");
                    return ExitCode::from(exit::BAD_CONFIG);
                }
            };
            let mut opts = ecs_peers::doctor::DoctorOptions {
                timeout,
                concurrency: args.concurrency,
                cookie: args.cookie.clone(),
                epmd_less: args.no_epmd,
                ..Default::default()
            };
            let as_json = args.json;
            with_config(&args.sources, |config| async move {
                opts.distribution_port = config.distribution_port;
                opts.tls = doctor_tls(&config).await;
                let snapshot = ecs_peers::discover(config).await;
                let report = ecs_peers::doctor::diagnose(&snapshot, &opts).await;
                let mut out = std::io::stdout().lock();
                let written = if as_json {
                    serde_json::to_writer_pretty(&mut out, &report)
                        .map_err(std::io::Error::from)
                        .and_then(|_| writeln!(out))
                } else {
                    render::doctor(&mut out, &report)
                };
                let code = if report.diagnoses.is_empty() {
                    exit::OK
                } else {
                    exit::PROBLEMS
                };
                finish(written, code)
            })
        }
        Command::Watch(args) => {
            let (as_json, every_poll, count) = (args.json, args.every_poll, args.count);
            with_config(&args.sources, |config| {
                watch(config, as_json, every_poll, count)
            })
        }
    };
    ExitCode::from(code)
}

/// With `tls_ca`, what the doctor presents and trusts: this task's certificate from the cluster
/// CA, issued as a node's is (`ecs_peers::tls::credentials`). When it cannot be issued (e.g. the
/// doctor runs outside a task, or cannot read the CA) the checks still speak TLS, without a
/// certificate of ours and without the CA: the peers' certificates are described, and their
/// refusals of us diagnosed (`tls_refused_us`).
async fn doctor_tls(
    config: &ecs_peers::Config,
) -> Option<std::sync::Arc<ecs_peers::doctor::TlsClient>> {
    let tls = config.tls.as_ref()?;
    let client = match ecs_peers::tls::credentials(config).await {
        Ok(c) => ecs_peers::doctor::TlsClient {
            cacerts: c.cacerts.clone(),
            identity: Some((c.cert_der.clone(), c.key_der.clone())),
            validity: tls.validity,
        },
        Err(e) => {
            eprintln!("ecs-peers: doctor: checking TLS without a certificate of its own: {e}");
            ecs_peers::doctor::TlsClient {
                cacerts: Vec::new(),
                identity: None,
                validity: tls.validity,
            }
        }
    };
    Some(std::sync::Arc::new(client))
}

fn with_config<F, Fut>(args: &SourceArgs, run: F) -> u8
where
    F: FnOnce(ecs_peers::Config) -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    init_logs(args.verbose);
    let config = match args.config() {
        Ok(c) => c,
        Err(message) => {
            eprintln!("ecs-peers: {message}");
            return exit::BAD_CONFIG;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ecs-peers: cannot start the async runtime: {e}");
            return exit::INTERNAL;
        }
    };
    let code = runtime.block_on(run(config));
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn watch(
    config: ecs_peers::Config,
    as_json: bool,
    every_poll: bool,
    count: Option<u64>,
) -> u8 {
    let mut running = ecs_peers::Poller::new(config).await.spawn();
    let mut polls = 0u64;
    loop {
        let update = tokio::select! {
            u = running.next() => u,
            _ = tokio::signal::ctrl_c() => return exit::OK,
        };
        let Some(update) = update else {
            return exit::INTERNAL;
        };
        polls += 1;
        let mut out = std::io::stdout().lock();
        let written = render::watch(&mut out, &update, as_json, every_poll);
        if let Err(e) = written.and_then(|_| out.flush()) {
            return finish(Err(e), exit::OK);
        }
        if count.is_some_and(|n| polls >= n) {
            running.stop().await;
            return status_of(&update.snapshot);
        }
    }
}

/// A broken pipe (`ecs-peers list | head`) is not an error; other write errors are.
fn finish(written: std::io::Result<()>, code: u8) -> u8 {
    match written {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            eprintln!("ecs-peers: cannot write output: {e}");
            exit::INTERNAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            ecs_spec("eu-west-2/web/api").unwrap(),
            json!({"type":"ecs","region":"eu-west-2","cluster":"web","service":"api"})
        );
        assert_eq!(
            ecs_spec("eu-west-2/web").unwrap(),
            json!({"type":"ecs","region":"eu-west-2","cluster":"web"})
        );
        assert_eq!(
            ecs_spec("region=eu-west-2,cluster=web,family=api").unwrap(),
            json!({"type":"ecs","region":"eu-west-2","cluster":"web","family":"api"})
        );
        assert_eq!(
            cloudmap_spec("us-west-2/internal/api").unwrap(),
            json!({"type":"cloudmap","region":"us-west-2","namespace":"internal","service":"api"})
        );
        assert_eq!(
            cloudmap_spec("region=us-west-2,namespace=n,service=s,query.stage=prod").unwrap()
                ["query"],
            json!({"stage":"prod"})
        );
        assert_eq!(
            ecs_spec("region=eu-west-2,cluster=web,tags.team=a,tags.app.example.com/stage=blue")
                .unwrap()["tags"],
            json!({"team":"a","app.example.com/stage":"blue"})
        );
        assert!(ecs_spec("region=eu-west-2,cluster=web,tags=a,tags.team=a")
            .unwrap_err()
            .contains("tags is given both as tags=.. and as tags.KEY=.."));
        assert!(ecs_spec("region=eu-west-2,cluster=web,tags.team=a,tags=a")
            .unwrap_err()
            .contains("tags is given both"));
        assert!(ecs_spec("web")
            .unwrap_err()
            .contains("expected REGION/CLUSTER"));
        assert!(cloudmap_spec("us-west-2/internal")
            .unwrap_err()
            .contains("expected REGION/NAMESPACE/SERVICE"));
    }

    /// The source flags of `ecs-peers list ARGS`, as clap parses them.
    fn list(args: &[&str]) -> SourceArgs {
        let all = ["ecs-peers", "list"].iter().chain(args).copied();
        match Cli::try_parse_from(all).unwrap().command {
            Command::List(l) => l.sources,
            _ => unreachable!("parsed `list`"),
        }
    }

    #[test]
    fn config_errors_name_the_flag() {
        let e = list(&["--ecs", "eu-west/web", "--basename", "app"])
            .config()
            .unwrap_err();
        assert!(
            e.starts_with("--ecs eu-west/web: region: \"eu-west\" is not an AWS region"),
            "{e}"
        );
        let e = list(&[
            "--ecs",
            "eu-west-2/web",
            "--basename",
            "app",
            "--interval",
            "soon",
        ])
        .config()
        .unwrap_err();
        assert!(
            e.starts_with("polling_interval (--polling-interval): \"soon\" is not a duration"),
            "{e}"
        );
        let e = list(&[
            "--ecs",
            "eu-west-2/web",
            "--basename",
            "app",
            "--distribution-port",
            "0",
        ])
        .config()
        .unwrap_err();
        assert!(
            e.starts_with("distribution_port (--distribution-port): "),
            "{e}"
        );
    }

    #[test]
    fn regions_apply_to_the_flag_sources_and_errors_name_the_flag() {
        let cfg = list(&[
            "--from-metadata",
            "--regions",
            "all",
            "--basename",
            "app",
            "--region-probe-interval",
            "30s",
        ])
        .config()
        .unwrap();
        assert_eq!(cfg.sources[0].id().as_str(), "ecs:auto/auto/regions:all");
        assert_eq!(
            cfg.region_probe_interval,
            std::time::Duration::from_secs(30)
        );
        let cfg = list(&[
            "--ecs",
            "eu-west-2/web/api",
            "--cloudmap",
            "us-west-2/internal/api",
            "--regions",
            "us-west-2, eu-west-1",
            "--basename",
            "app",
        ])
        .config()
        .unwrap();
        assert_eq!(
            cfg.sources[0].id().as_str(),
            "ecs:eu-west-2/web/api/regions:eu-west-1,eu-west-2,us-west-2"
        );
        assert_eq!(
            cfg.sources[1].id().as_str(),
            "cloudmap:us-west-2/internal/api"
        );
        let e = list(&[
            "--ecs",
            "eu-west-2/web",
            "--regions",
            "eu-west",
            "--basename",
            "app",
        ])
        .config()
        .unwrap_err();
        assert!(
            e.starts_with("--ecs eu-west-2/web --regions eu-west: regions[0]: \"eu-west\" is not an AWS region"),
            "{e}"
        );
        let e = list(&["--cloudmap", "us-west-2/internal/api", "--regions", "all"])
            .config()
            .unwrap_err();
        assert!(e.contains("applies to the ECS sources"), "{e}");
    }

    #[test]
    fn key_flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("ecs-peers-keyflags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("peers.toml");
        std::fs::write(
            &file,
            "node_basename = \"web\"\ndistribution_port = 9000\njitter = 0.1\n[[sources]]\ntype = \"ecs\"\nregion = \"eu-west-2\"\ncluster = \"web\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let from_file = list(&["--config", path]).config().unwrap();
        assert_eq!((from_file.distribution_port, from_file.jitter), (9000, 0.1));
        let flagged = list(&[
            "--config",
            path,
            "--distribution-port",
            "9100",
            "--share-polling=false",
        ])
        .config()
        .unwrap();
        assert_eq!(flagged.distribution_port, 9100);
        // A boolean flag switches its key's default (on) off.
        assert!(from_file.share_polling);
        assert!(!flagged.share_polling);
        // Left alone by the flags: the file's.
        assert_eq!(flagged.jitter, 0.1);
        // A bad value in the file is named as the file's or the flag's to fix.
        std::fs::write(&file, "jitter = 2.0\n[[sources]]\ntype = \"ecs\"\nregion = \"eu-west-2\"\ncluster = \"web\"\n").unwrap();
        let e = list(&["--config", path, "--basename", "app"])
            .config()
            .unwrap_err();
        assert!(
            e.starts_with("jitter (--jitter or the config file): "),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
