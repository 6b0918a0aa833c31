defmodule EcsPeers.Cluster do
  @moduledoc """
  Clustering without libcluster: a child for the application's supervision tree, for apps that
  do not use libcluster (Phoenix ≥ 1.7.11 apps are generated with `DNSCluster` instead). It takes
  the same keys as `EcsPeers.Strategy` (documented there) and follows the same rule
  (`EcsPeers.Membership` serves both): the same polling, the same failure rule (a node is
  disconnected only when a complete, successful poll of its source no longer lists it), the
  same leaving, the same log lines (prefixed `[ecs_peers:<name>]`) and the same telemetry
  (`[:ecs_peers, :poll, :stop]`, `[:ecs_peers, :source, :error]`, `[:ecs_peers, :sharing,
  :members]`, with `topology: <name>`; see `EcsPeers.Telemetry`).

  Fleet-shared polling (`share_polling`, on by default; `false` makes each node poll alone)
  works exactly as for the strategy (one node polls each source and hands its results to the
  others; see "Fleet-shared polling" in `EcsPeers.Strategy`); the group is keyed by `name`, so
  give every node the same `name`.
  `EcsPeers.status(name)` shows who polls each source and the group's members.

  ## Phoenix ≥ 1.7.11: `lib/my_app/application.ex`

  Replace the DNSCluster line

      {DNSCluster, query: Application.get_env(:my_app, :dns_cluster_query) || :ignore},

  with

      {EcsPeers.Cluster, Application.get_env(:my_app, :ecs_peers, :ignore)},

  and in `config/runtime.exs`

      if config_env() == :prod do
        config :my_app, :ecs_peers,
          sources: [
            [type: :ecs, region: "eu-west-2", cluster: System.fetch_env!("ECS_CLUSTER"),
             service: System.fetch_env!("ECS_SERVICE")],
            [type: :ecs, region: "us-west-2", cluster: System.fetch_env!("ECS_CLUSTER"),
             service: System.fetch_env!("ECS_SERVICE")]
          ]
      end

  `:ignore` (no config, e.g. in dev and test) starts nothing.

  ## Configuration

  The same keys as `EcsPeers.Strategy`'s, validated when the child starts (generated from the
  core's key table, `src/config/keys.rs`):

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

  ## Options besides the configuration keys

  - `name`: the name in logs and telemetry (`topology`), default `:ecs`;
  - `connect`, `disconnect`, `list_nodes`: `{module, function, args}` as in libcluster's
    topologies, defaults `{:net_kernel, :connect_node, []}`, `{:erlang, :disconnect_node, []}`,
    `{:erlang, :nodes, [:connected]}`.

  A bad key or value, or a NIF that did not load, stops the child from starting (and with it
  the application), with the same message as the strategy's (see `EcsPeers`).
  """

  require Logger

  @own [:name, :connect, :disconnect, :list_nodes]

  @doc false
  def child_spec(:ignore), do: %{id: __MODULE__, start: {__MODULE__, :start_link, [:ignore]}}

  def child_spec(opts) do
    %{id: __MODULE__, start: {__MODULE__, :start_link, [opts]}, type: :worker, shutdown: 5_000}
  end

  @doc "Starts the clustering process (see the moduledoc for `opts`); `:ignore` starts nothing."
  @spec start_link(keyword() | :ignore) :: GenServer.on_start()
  def start_link(:ignore), do: :ignore

  def start_link(opts) when is_list(opts) or is_map(opts) do
    opts = Enum.to_list(opts)
    {own, config} = Keyword.split(opts, @own)
    name = Keyword.get(own, :name, :ecs)

    links = %{
      name: name,
      connect: Keyword.get(own, :connect, {:net_kernel, :connect_node, []}),
      disconnect: Keyword.get(own, :disconnect, {:erlang, :disconnect_node, []}),
      list_nodes: Keyword.get(own, :list_nodes, {:erlang, :nodes, [:connected]})
    }

    EcsPeers.Membership.start_link(
      config: config,
      topology: name,
      prefix: "ecs_peers:#{name}",
      who: "EcsPeers.Cluster",
      links: {__MODULE__, links}
    )
  end

  @doc false
  # libcluster's contract, without libcluster: connect the nodes not yet connected (true: logged
  # `connected to`; false or :ignored: a bad node, tried again next poll), disconnect the
  # connected ones given.
  def connect(links, nodes) do
    have = MapSet.new(call(links.list_nodes, []))

    bad =
      for n <- nodes, n != node(), n not in have, reduce: [] do
        acc ->
          case call(links.connect, [n]) do
            true ->
              Logger.info("[ecs_peers:#{links.name}] connected to #{inspect(n)}")
              acc

            other ->
              why = if other == :ignored, do: ": not part of network", else: ""
              Logger.warning("[ecs_peers:#{links.name}] unable to connect to #{inspect(n)}#{why}")
              [{n, other} | acc]
          end
      end

    if bad == [], do: :ok, else: {:error, bad}
  end

  @doc false
  def disconnect(links, nodes) do
    have = MapSet.new(call(links.list_nodes, []))

    bad =
      for n <- nodes, n != node(), n in have, reduce: [] do
        acc ->
          case call(links.disconnect, [n]) do
            true ->
              Logger.info("[ecs_peers:#{links.name}] disconnected from #{inspect(n)}")
              acc

            other ->
              Logger.warning(
                "[ecs_peers:#{links.name}] disconnect from #{inspect(n)} failed: #{inspect(other)}"
              )

              [{n, other} | acc]
          end
      end

    if bad == [], do: :ok, else: {:error, bad}
  end

  defp call({m, f, a}, extra), do: apply(m, f, a ++ extra)
end
