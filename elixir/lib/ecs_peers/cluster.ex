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

  `share_polling: true` shares the polling across the cluster exactly as for the strategy (one
  node polls each source and hands its results to the others; see "Fleet-shared polling" in
  `EcsPeers.Strategy`); the group is keyed by `name`, so give every node the same `name`.
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
