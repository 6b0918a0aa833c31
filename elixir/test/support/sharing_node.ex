defmodule EcsPeers.Test.SharingNode do
  @moduledoc false
  # Real local BEAM nodes for the sharing tests, started with OTP's :peer (OTP 25) over its
  # standard-I/O control connection, so the test VM itself stays non-distributed (as the rest
  # of the suite expects) while the peers are distributed among themselves (long names on
  # 127.0.0.1, one cookie). Each peer has the test VM's code path (this package, the NIF in its
  # priv, this module) and runs EcsPeers.Cluster under a supervisor of its own.
  #
  # The Cluster's links only record (they connect nobody: the peers' node names are the
  # emulator's task IPs, which do not exist); the test connects the peers to each other itself.
  # Each peer records its own telemetry in an ETS table (`events/1`): every
  # `[:ecs_peers, :poll, :stop]` peer count and every `[:ecs_peers, :sharing, :members]` count.

  @table __MODULE__

  @doc """
  Starts a peer `name@127.0.0.1`; returns `%{pid: peer, node: atom, os_pid: string}`. Not
  linked: a test kills peers on purpose.
  """
  def start(name, cookie) do
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

    {:ok, pid, node} =
      :peer.start(%{
        name: name,
        host: ~c"127.0.0.1",
        longnames: true,
        connection: :standard_io,
        args: [~c"-setcookie", to_charlist(cookie)] ++ paths
      })

    {:ok, _} = :peer.call(pid, Application, :ensure_all_started, [:logger])
    :ok = :peer.call(pid, Logger, :configure, [[level: :error]])
    # The sharing scope and the status registry, as a release starts them with the app.
    {:ok, _} = :peer.call(pid, Application, :ensure_all_started, [:ecs_peers])
    %{pid: pid, node: node, os_pid: :peer.call(pid, :os, :getpid, []) |> List.to_string()}
  end

  @doc "Stops a peer (nothing when it is gone already)."
  def stop(%{pid: pid}) do
    :peer.stop(pid)
  catch
    :exit, _ -> :ok
  end

  @doc "Kills a peer's OS process (a crashed node: no terminate, no leaving)."
  def kill(%{os_pid: os_pid}), do: {_, 0} = System.cmd("kill", ["-9", os_pid])

  @doc "Calls `mod.fun(args)` on the peer."
  def call(%{pid: pid}, mod, fun, args), do: :peer.call(pid, mod, fun, args, 15_000)

  # ---- run on the peer ---------------------------------------------------------------------

  @doc false
  # Starts EcsPeers.Cluster (name :share) with `config` under a supervisor that outlives the
  # :peer.call process, and the telemetry recorder: `{:ok, membership pid}` or `{:error, why}`.
  def run(config) do
    if :ets.whereis(@table) == :undefined do
      :ets.new(@table, [
        :named_table,
        :public,
        :duplicate_bag,
        {:heir, Process.whereis(:init), nil}
      ])
    end

    :telemetry.attach("poll", [:ecs_peers, :poll, :stop], &__MODULE__.record/4, :poll)
    :telemetry.attach("members", [:ecs_peers, :sharing, :members], &__MODULE__.record/4, :members)

    links = [
      name: :share,
      connect: {__MODULE__, :linked, []},
      disconnect: {__MODULE__, :linked, []},
      list_nodes: {__MODULE__, :none, []}
    ]

    # A child that cannot start makes start_link exit this (:peer.call) process too: trapped,
    # so the reason comes back as the answer.
    Process.flag(:trap_exit, true)

    case Supervisor.start_link([{EcsPeers.Cluster, config ++ links}], strategy: :one_for_one) do
      {:ok, sup} ->
        Process.unlink(sup)
        [{_, pid, _, _}] = Supervisor.which_children(sup)
        {:ok, pid}

      {:error, reason} ->
        {:error, reason}
    end
  end

  @doc false
  def record(_event, %{peers: n} = m, _meta, :poll),
    do: :ets.insert(@table, [{:poll, n}, {:sharing_with, Map.get(m, :sharing_with)}])

  def record(_event, %{count: n}, _meta, :members), do: :ets.insert(@table, {:members, n})

  @doc false
  # What this peer recorded since the last reset: `%{poll: [peer counts], members: [group
  # sizes], sharing_with: [the poll events' group sizes]}`.
  def events do
    all = :ets.tab2list(@table)

    %{
      poll: for({:poll, n} <- all, do: n),
      members: for({:members, n} <- all, do: n),
      sharing_with: for({:sharing_with, n} <- all, do: n)
    }
  end

  @doc false
  def reset, do: :ets.delete_all_objects(@table)

  @doc false
  # Makes the membership process's watchdog find its poller silent now (its last update an
  # hour ago) and run: the poller is restarted, as when it falls silent.
  def stall(pid) do
    :sys.replace_state(pid, fn s -> put_in(s.poller.heard_at, s.poller.heard_at - 3_600_000) end)
    send(pid, :watchdog)
    :ok
  end

  @doc false
  def linked(_node), do: true
  @doc false
  def none, do: []
end
