# Compiled only where libcluster is (it is an optional dependency): apps without libcluster
# cluster with EcsPeers.Cluster, which serves the same membership rule (EcsPeers.Membership).
# ensure_compiled/1, not ensure_loaded?/1: it waits for a Cluster.Strategy being compiled in
# the same run (the offline build's libcluster double).
if match?({:module, _}, Code.ensure_compiled(Cluster.Strategy)) do
  defmodule EcsPeers.Strategy do
    @moduledoc """
    A libcluster strategy that clusters nodes running as ECS tasks (or registered in Cloud Map) in
    **any number of regions**: a node in eu-west-2 connects to the nodes in us-west-2 too, as long
    as the VPCs are peered.

    It polls the ECS API (ListTasks → DescribeTasks) and/or Cloud Map (DiscoverInstances) for every
    configured source, concurrently, in native code on its own threads (no scheduler is ever
    blocked), merges the peers into one list, and connects to all of them with libcluster's
    `connect_nodes/4`. A node is disconnected only when a *complete, successful* poll of its source
    no longer lists it: a throttled call, a 5xx, a timeout or an unreachable region keeps every node
    connected, and is logged.

    ## Phoenix: `config/runtime.exs`

        import Config

        if config_env() == :prod do
          config :libcluster,
            topologies: [
              ecs: [
                strategy: EcsPeers.Strategy,
                config: [
                  polling_interval: 5_000,
                  sources: [
                    [type: :ecs, region: "eu-west-2", cluster: System.fetch_env!("ECS_CLUSTER"),
                     service: System.fetch_env!("ECS_SERVICE")],
                    [type: :ecs, region: "us-west-2", cluster: System.fetch_env!("ECS_CLUSTER"),
                     service: System.fetch_env!("ECS_SERVICE")]
                  ]
                ]
              ]
            ]
        end

    and in `lib/my_app/application.ex`, before the PubSub and the Endpoint:

        {Cluster.Supervisor, [Application.get_env(:libcluster, :topologies, []), [name: MyApp.ClusterSupervisor]]}

    Releases need long names with the task's IP: `RELEASE_DISTRIBUTION=name` and
    `RELEASE_NODE=my_app@<task private ip>` (in `rel/env.sh.eex`). The node basename (`my_app`) is
    taken from the running node unless `node_basename` or `node_name` is given, and the running node
    is never connected to itself.

    ECS on EC2 (bridge or host network mode), and any fleet that should need one open port: start
    the VM with `-start_epmd false -epmd_module Elixir.EcsPeers.Epmd` (the guide "ECS on EC2, and
    Erlang distribution without EPMD", docs/distribution.md). Nodes are then `my_app-<task id>@<instance ip>` in bridge
    and host mode (the basename is still `my_app`), and on every update that changes them the
    strategy hands each peer's address and port (the mapped host port in bridge mode) to
    `EcsPeers.Epmd.put_peers/1` before it connects.

    ## Configuration

    The keys are validated when the strategy starts; a bad key or value stops it from starting, with
    a message naming the key, the value and what is expected (for example
    `sources[0].region: "eu-west" is not an AWS region name; expected e.g. "eu-west-2"`).
    Sources are keyword lists (or maps); atoms and strings are both accepted for values.

    The table is generated from the core's key table (`src/config/keys.rs`); `EcsPeers.keys/0`
    returns it.

    <!-- keys:begin -->
    | scope | key | type | default | meaning |
    | --- | --- | --- | --- | --- |
    | top | `sources` | list of sources | required | Where peers come from: ECS and Cloud Map sources in any regions, merged into one namespace. |
    | top | `node_basename` | string | - | Node names are `<node_basename>@<ip>`. Default: the name part of this node's own name (`my_app` of `my_app@10.0.1.5`: the Elixir adapters read the running node, the CLI reads RELEASE_NODE); required only where neither is known. Give node_basename or node_name, not both. |
    | top | `node_name` | template | - | Node name template instead of node_basename, e.g. `app@{ip}` or `app@{private_dns_name}` (`app@ip-10-1-0-5.ec2.internal` in us-east-1, `app@ip-10-2-0-5.eu-west-2.compute.internal` elsewhere, as ECS reports it). Placeholders: {ip}, {ip_dashed}, {region}, {private_dns_name} (ECS sources only), {task_id} (the last part of the task ARN; a Cloud Map instance's id, which ECS service discovery sets to the task id). |
    | top | `node_names` | config or epmd | config | `epmd`: name each peer name@ip by what its EPMD (port 4369) has registered: its only name, or else the one equal to node_basename; a peer with several names and none chosen is skipped (`several_epmd_names` in its source's skipped tasks, with the fix). |
    | top | `distribution_port` | integer 1..65535 | 4370 | The port every node's Erlang distribution listens on: ECS_PEERS_DIST_PORT when set (EcsPeers.Epmd reads it too), else the default. ECS on EC2 (bridge or host network mode, no ENI): a task's peer is its instance's private IP and the hostPort its container maps this port to; a task with no such mapping is skipped (and reported). Its node name is `<node_basename>-<task id>@<instance ip>`. |
    | top | `polling_interval` | duration ≥ 100ms | 5s | Time between polls (milliseconds as an integer, or a string like `5s`, `500ms`, `1m`). |
    | top | `jitter` | number 0..1 | 0.2 | Each wait is polling_interval scaled by a random factor in [1-jitter, 1+jitter], so a fleet does not poll in lock-step. |
    | top | `poll_timeout` | duration ≥ 1ms | 20s | Longest one source's poll may take; a slower poll fails (and keeps the source's last-known peers). |
    | top | `max_attempts` | integer 1..10 | 3 | AWS SDK attempts per API call (1 = no retries). |
    | top | `endpoint_url` | URL | - | Send every AWS call to this endpoint (an emulator, a VPC endpoint). Defaults to AWS_ENDPOINT_URL, else AWS itself. |
    | top | `draining` | boolean | true | Keep a task that has left the RUNNING list as a (draining) peer until ECS reports it STOPPED. |
    | top | `local_node` | string | - | This node's name; it is left out of the peers. Defaults to the running node (the strategy) or RELEASE_NODE (the CLI). |
    | top | `local_ip` | IP address | - | This node's IP; the peer at this IP (unless reported with a distribution port of its own) is left out of the peers. Filled from the task metadata when a source uses cluster "auto". |
    | top | `metadata_url` | URL | - | The task metadata endpoint v4, for cluster "auto". Defaults to ECS_CONTAINER_METADATA_URI_V4, which the ECS agent sets. |
    | top | `share_polling` | boolean | true | Share polling across the cluster over Erlang distribution (false: every node polls every source itself): connected nodes with the same sources, polling interval and cookie elect, per source, one poller (rendezvous hashing, a node in the source's region preferred) that polls AWS and sends each result to the others; they stop calling AWS for it while fresh results arrive, and poll it themselves again after two polling intervals without a word from it (a result, or its note that it is backing off or still polling). Each source's status says who polls it and where its result came from. |
    | top | `tls_ca` | secret name or ARN, or SSM parameter ARN | - | TLS distribution: where the cluster CA is kept, a Secrets Manager secret (name, read in this task's region, or ARN) or an SSM SecureString parameter ARN, whose value is the CA certificate and its private key, both PEM, concatenated (docs/tls.md). At boot, and again before each expiry, this task's certificate is issued in memory from it for this task's address (and private DNS name). Unset: TLS is off. |
    | top | `tls_validity` | duration ≥ 1m | 24h | TLS distribution: how long each certificate is valid (a string like `24h`, `10m`, or milliseconds). It is renewed when two thirds of it have passed. Only with tls_ca. |
    | top | `region_probe_interval` | duration ≥ 100ms | 2m | For sources with `regions`: how often the enabled regions are read again (ec2:DescribeRegions, one call in this task's region) and a region where the cluster or service is absent (or that the account has not enabled) is polled again. A region where the same stack appears joins within one such interval; absent regions cost no warning and no back-off. |
    | ecs | `type` | "ecs" | required | An ECS source: running tasks of one cluster. |
    | ecs | `region` | AWS region | required | The cluster's region, e.g. `eu-west-2` (optional when cluster, service or family is an ARN, or cluster is "auto"). Any region of the AWS partitions the AWS SDK knows (`cn-north-1`, `us-gov-west-1`, `eusc-de-east-1`, ...), and a new one named as its partition names regions; IAM fixes name ARNs of the region's partition (`arn:aws-cn:ecs:…`). |
    | ecs | `cluster` | name, ARN or "auto" | required | The ECS cluster, by name or ARN. A service ARN as the console and `aws ecs list-services` show it (`arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/NAME`) is a whole source: region, cluster and service. Any other ARN (a task's, a task definition's, an old-format service ARN without a cluster) is refused, naming the key that takes it. "auto": this task's own cluster and region, from the task metadata endpoint; then service defaults to the task's service (EC2) or family (Fargate). |
    | ecs | `service` | name or ARN | - | Only tasks of this service (ListTasks serviceName, and each task's group is checked to be `service:<name>`). An ARN in either format (`service/NAME`, or `service/CLUSTER/NAME`, whose cluster must be this source's) gives the name and the region. |
    | ecs | `family` | FAMILY, FAMILY:REVISION or ARN | - | Only tasks of this task-definition family (`api`: every revision), or of one revision of it (`api:3`); a task definition ARN (`arn:aws:ecs:REGION:ACCOUNT:task-definition/api:3`) is that revision. |
    | ecs | `container` | string | - | Only tasks that have a container of this name; its network interface is used when the task has no ENI attachment. |
    | ecs | `regions` | "all" or list of regions | - | The same cluster and service (or family) in other regions too: `"all"` (every region of the partition of `region`, or of this task's region with cluster "auto", that the account has enabled, read with ec2:DescribeRegions every region_probe_interval), or a list such as `["eu-west-2", "us-west-2"]` (one partition; `region` is included). Each region is polled as a source of its own; a region not enabled, or where the cluster or service does not exist (ClusterNotFoundException, ServiceNotFoundException), is absent: no peers, no warning, polled again every region_probe_interval. A service scaled to zero is present. Clusters named differently per region need a source each. |
    | ecs | `tags` | map of string to string | - | Only tasks that carry all of these task tags, each with exactly this value (case-sensitive), e.g. `{team = "payments"}`. Read with DescribeTasks `include: TAGS` on the calls the source makes anyway: no extra call. Tags are read when a task is first described RUNNING; a tag added, changed or removed on a running task (TagResource, UntagResource) is seen when the source starts again, and a peer that leaves drains until STOPPED whatever its tags say then. Keys 1-128 and values 0-256 characters, no `aws:` prefix, at most 50. |
    | cloudmap | `type` | "cloudmap" | required | A Cloud Map source: registered instances of one service (DiscoverInstances). |
    | cloudmap | `region` | AWS region | required | The namespace's region, of any AWS partition (as for an ECS source). |
    | cloudmap | `namespace` | string | required | The Cloud Map namespace name, e.g. `internal.local`. |
    | cloudmap | `service` | string | required | The Cloud Map service name. |
    | cloudmap | `health` | healthy, all or healthy_or_else_all | healthy | Which instances to return, by health status. |
    | cloudmap | `query` | map of string to string | - | Only instances whose custom attributes match all of these (DiscoverInstances QueryParameters). |
    | cloudmap | `port` | registered or distribution_port | registered | Which port an instance's node is dialled on. `registered`: its AWS_INSTANCE_PORT when it registers one (SRV records), else distribution_port; such an instance is named `<node_basename>-<instance id>@<ip>` (ECS service discovery: the instance id is the task id, as bridge-mode ECS peers are named), so two instances on one host are two peers. The registered port is the host port of whichever container port the service registered (serviceRegistries containerPort), not necessarily the distribution port: register that one. `distribution_port`: every instance on distribution_port, named `<node_basename>@<ip>`, AWS_INSTANCE_PORT ignored (awsvpc tasks that register another port). |
    | cloudmap | `owner_account` | 12-digit account id | - | The account that owns the namespace, when it is shared with this account through AWS RAM (DiscoverInstances OwnerAccount, the namespace's ResourceOwner); required for a shared namespace, which is otherwise not found. |
    <!-- keys:end -->

    ## What it logs and measures

    Logs carry libcluster's prefix, `[libcluster:<topology>]`: libcluster logs each connect and
    disconnect; this strategy warns when a source starts failing (with the reason and the fix) and
    when it recovers, when the same IP is reported by two regions (overlapping VPC CIDRs, never
    connected), and when a source's running tasks cannot be peers (e.g. a bridge-mode container with
    no binding for the distribution port), with the fix. These are the core's membership events, with the core's wording: the same ones
    `ecs-peers watch` prints.

    The cluster explains itself: a peer discovery lists that this node has not been connected
    to for more than two polls is checked from this node by `ecs-peers doctor`'s own checks
    (EPMD or the one distribution port, the name registered, the port, a handshake with this
    node's cookie; off the strategy's process, at most one check per peer at a time, only at
    the address a source listed), and the diagnosis is logged once as a warning with its fix,
    and again only when it changes:

        [libcluster:ecs] cannot connect to app@10.201.0.5 (eu-west-2) since 2026-12-05T08:18:03.999Z (7 polls): [dist_port_blocked] 10.201.0.5:9100, app's distribution port, does not answer while its EPMD does. Fix: allow the distribution port range in the security group ...

    A node connected to none of the peers discovery lists for more than two polls logs an error
    (`this node is alone: ...`). docs/troubleshooting.md explains each line.

    When `:telemetry` is loaded it emits `[:ecs_peers, :poll, :stop]` for every update,
    `[:ecs_peers, :source, :error]` for each failing source, `[:ecs_peers, :sharing,
    :members]` when the sharing group changes, `[:ecs_peers, :cluster, :connections]` after
    every update (peers expected, connected, unreachable) and `[:ecs_peers, :peer,
    :unreachable]` for each diagnosis logged; `EcsPeers.Telemetry` documents their
    measurements and metadata.

    Each source status in `sources` carries, besides the poll's outcome and `api_calls` /
    `api_calls_total` (this node's own AWS calls), `poller` (the node polling it, `nil` when this
    node does), `received_from` (whose result was applied, `nil` when polled here),
    `received_at` and `shared_dropped`. `EcsPeers.status/1` returns the same from a console,
    with the peers `expected`, `connected` and `unreachable` (each with its diagnosis).

    ## Fleet-shared polling (`share_polling`, on by default)

    On unless `share_polling: false`: the nodes of a cluster that run the same sources stop all
    asking AWS the same question: per source, one node polls and hands its result to the
    others over Erlang distribution, so a fleet's ECS/Cloud Map call rate stays about one
    poller's per source however many nodes it has.

    - **Who shares.** Nodes join a `:pg` group `{:ecs_peers, topology, sharing_key,
      :erlang.phash2(Node.get_cookie())}` (a scope of this package's, `EcsPeers.Sharing`).
      `sharing_key` is the core's hash of everything that changes what a poll result means
      (the sources after defaults, node naming, `draining`, `distribution_port`,
      `polling_interval`): nodes with other sources, another topology name or another cookie
      never share. A node that is not distributed (`Node.alive?/0` false: `mix test`, `iex`
      without `--name`) never joins: it polls every source itself, and says so with a warning
      only when `share_polling: true` was given (on by default, a debug line).
    - **Who polls.** The core elects, per source, one of the group's nodes (rendezvous hashing,
      a node in the source's region preferred); every node computes the same answer from the
      same members. The others apply the poller's results with the same rule as their own
      polls (the failure rule included: a failed poll keeps the source's peers everywhere).
    - **Safety.** A follower never drops a peer because sharing broke: without a fresh result
      for more than two polling intervals (a poller killed, a partition) it polls the source
      itself (`poller_silent`, a warning) until results flow again; a node leaving the group
      (killed, partitioned, stopping) makes the others elect again at once. A result older than
      the last one applied, from a node that is not the source's poller, or for another
      `sharing_key` is dropped (counted in `shared_dropped`). A poll AWS refused for the
      poller's own credentials or IAM role is not sent, so its followers poll the source
      themselves after two intervals. No atom is made from a received result: a follower
      names peers itself.
    - **Seeing it.** `poller_changed` events are logged (info: `ecs:eu-west-2/web/api: polled
      by app@10.0.1.5 (sharing with 4 nodes)` / `...: polled here`), the group's changes too
      (`sharing polling with app@10.0.1.5, app@10.0.1.6`), and `EcsPeers.status(:ecs)` shows
      each source's `poller` and `received_from` and the group's `members`.

    A node leaves the group before it leaves the cluster (`local_left`, or the VM stopping) and
    whenever the strategy stops; it joins again when its sources list it again.

    ## Leaving

    When this node's own task has been seen by a source and then disappears from it (its task is
    stopping; the core's `local_left` event), the node leaves the cluster itself, at once, with
    `:global.disconnect/0` (OTP 25.1+), and stops connecting to its peers, so it does not pull
    itself back into the cluster while it shuts down (libcluster issue #202). It leaves the same
    way when the strategy is stopped because the VM stops (ECS's SIGTERM starts `init:stop`). Its peers keep a draining task's node connected (they never connect it anew) and
    disconnect it once ECS no longer lists it. Leaving through `global` matters on OTP 25+: a node
    that drops its links one by one makes `global` (prevent_overlapping_partitions) cut links
    between the healthy nodes that remain.

    Without libcluster (Phoenix ≥ 1.7.11 apps with DNSCluster), use `EcsPeers.Cluster`: the same
    keys and the same rule (`EcsPeers.Membership` serves both).
    """

    use Cluster.Strategy

    alias Cluster.Strategy.State

    @impl Cluster.Strategy
    def start_link([%State{} = state]) do
      EcsPeers.Membership.start_link(
        config: state.config,
        topology: state.topology,
        prefix: "libcluster:#{state.topology}",
        who: "EcsPeers.Strategy",
        links: {__MODULE__, state}
      )
    end

    @doc false
    # libcluster's connect_nodes/4 and disconnect_nodes/4, with the MFAs of Cluster.Supervisor's
    # topology (its log lines, `[libcluster:<topology>] connected to ...`, and its telemetry).
    def connect(%State{} = c, nodes),
      do: Cluster.Strategy.connect_nodes(c.topology, c.connect, c.list_nodes, nodes)

    @doc false
    def disconnect(%State{} = c, nodes),
      do: Cluster.Strategy.disconnect_nodes(c.topology, c.disconnect, c.list_nodes, nodes)
  end
end
