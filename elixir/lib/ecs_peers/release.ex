defmodule EcsPeers.Release do
  @moduledoc """
  The release's boot step: this node's name, from the rule that names every peer, set before
  the VM starts.

  A release's own commands (`start`, `remote`, `rpc`, `stop`, `pid`) find the node by
  `RELEASE_NODE`, which must be known before the VM starts, so `rel/env.sh` (copy
  `examples/rel/env.sh.eex` to your project's `rel/env.sh.eex`) runs, inside an ECS task,

      "$RELEASE_ROOT/bin/$RELEASE_NAME" eval 'EcsPeers.Release.env()'

  and evaluates what it prints:

      export RELEASE_NODE='my_app@10.0.2.106'
      export RELEASE_DISTRIBUTION='name'
      export ECS_PEERS_NODE_BASENAME='my_app'

  The name is the one this task's peers give it, computed by the same Rust code
  (`ecs_peers::this_task`): the task metadata endpoint v4 (`ECS_CONTAINER_METADATA_URI_V4`)
  names the task, one `ecs:DescribeTasks` call describes it, and it is named as a peer is:

  | the task has | node name | e.g. |
  | --- | --- | --- |
  | its own address (awsvpc: Fargate, EC2 awsvpc) | `<basename>@<task IP>` (IPv4, else IPv6) | `my_app@10.0.2.106` |
  | the instance's address (bridge, host) | `<basename>-<task id>@<instance IP>` | `my_app-4e3cfb1a…@10.0.1.5` |

  In bridge or host mode the instance's address comes from `ecs:DescribeContainerInstances`
  and `ec2:DescribeInstances`, as for peers. The task role therefore needs `ecs:DescribeTasks`
  (and, on EC2 in bridge or host mode, `ecs:DescribeContainerInstances` and
  `ec2:DescribeInstances`): the same grants the strategy needs to find this task's peers. It
  chooses the distribution module and adds it to `ERL_AFLAGS`: `-proto_dist inet6_tcp` when the
  name's address is IPv6 (an IPv6-only task), so distribution listens and dials over IPv6; with
  `ECS_PEERS_TLS_CA` set, TLS distribution (`EcsPeers.TLS`): `-proto_dist ecs_peers_tls`, or
  `ecs_peers_tls6` for an IPv6 address. The release's `remote` and `rpc` consoles run the same
  step, so they dial over the same module.

  The basename is `ECS_PEERS_NODE_BASENAME`, else the release's name (`RELEASE_NAME`).

  This is the one boot step: whatever else a node must hold before it starts belongs here too.
  Its cost is one short VM start (`bin/<release> eval`) and one to three AWS calls per release
  command run inside the task.
  """

  @doc """
  Prints the `export` lines for `rel/env.sh` to evaluate (see the module doc), and returns `:ok`.
  When this node cannot be named it prints `ecs-peers (rel/env.sh): <reason and fix>` on
  standard error and stops the VM with exit status 1, so the release does not start under a
  name its peers do not know.
  """
  @spec env() :: :ok
  def env do
    case exports(System.get_env()) do
      {:ok, text} ->
        IO.write(text)

      {:error, message} ->
        IO.puts(:stderr, "ecs-peers (rel/env.sh): " <> message)
        System.halt(1)
    end
  end

  @doc """
  The `export` lines for this environment (a map of OS environment variables, as
  `System.get_env/0` returns): `{:ok, text}`, or `{:error, message}` naming the fix. Asks the
  task metadata endpoint and AWS (see the module doc).
  """
  @spec exports(%{optional(String.t()) => String.t()}) :: {:ok, String.t()} | {:error, String.t()}
  def exports(env) do
    with {:ok, basename} <- basename(env),
         {:ok, node} <- EcsPeers.native(fn -> EcsPeers.Native.this_node(basename) end) do
      {:ok, render(node, basename, tls: env["ECS_PEERS_TLS_CA"] not in [nil, ""])}
    end
  end

  @doc false
  # The shell text for a node name and its basename: pure, so the exact lines are tested.
  # `tls: true` (ECS_PEERS_TLS_CA is set): distribution over TLS (EcsPeers.TLS).
  @spec render(String.t(), String.t(), keyword()) :: String.t()
  def render(node, basename, opts \\ []) do
    lines = [
      export("RELEASE_NODE", node),
      export("RELEASE_DISTRIBUTION", "name"),
      export("ECS_PEERS_NODE_BASENAME", basename)
    ]

    lines =
      case proto_dist(ipv6_host?(node), Keyword.get(opts, :tls, false)) do
        nil ->
          lines

        proto ->
          # Appended to what the environment already holds when env.sh evaluates it.
          lines ++
            [~s(export ERL_AFLAGS="${ERL_AFLAGS:+$ERL_AFLAGS }-proto_dist #{proto}") <> "\n"]
      end

    IO.iodata_to_binary(lines)
  end

  # The distribution module for a node's address family and TLS: one -proto_dist per VM (the
  # kernel reads only the first -proto_dist flag).
  defp proto_dist(_ipv6? = false, _tls? = false), do: nil
  defp proto_dist(true, false), do: "inet6_tcp"
  defp proto_dist(false, true), do: "ecs_peers_tls"
  defp proto_dist(true, true), do: "ecs_peers_tls6"

  defp basename(env) do
    case Enum.find([env["ECS_PEERS_NODE_BASENAME"], env["RELEASE_NAME"]], &(&1 not in [nil, ""])) do
      nil ->
        {:error,
         "no node basename: set ECS_PEERS_NODE_BASENAME (rel/env.sh sets it to the release's name)"}

      name ->
        {:ok, name}
    end
  end

  defp ipv6_host?(node) do
    case String.split(node, "@", parts: 2) do
      [_, host] -> match?({:ok, _}, :inet.parse_ipv6strict_address(String.to_charlist(host)))
      _ -> false
    end
  end

  # export NAME='value', quoted for sh (a ' inside becomes '\'').
  defp export(name, value) do
    "export #{name}='#{String.replace(value, "'", ~S('\''))}'\n"
  end
end
