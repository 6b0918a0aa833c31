defmodule EcsPeers.EpmdTest do
  # Real BEAM nodes as OS processes on loopback, each listening on its own port, none with an
  # EPMD: -start_epmd false, and ERL_EPMD_PORT pointing at a trap socket of this test that must
  # never see a connection. Nodes are driven through their stdin (EcsPeers.Test.EpmdNode).
  use ExUnit.Case, async: true

  alias EcsPeers.Test.EpmdNode

  @moduletag timeout: 60_000

  setup do
    {:ok, trap} = :gen_tcp.listen(0, ip: {127, 0, 0, 1}, active: false)
    {:ok, trap_port} = :inet.port(trap)
    # Unique names per test: tests run concurrently and node names show up in the output.
    id = :erlang.unique_integer([:positive])
    on_exit(fn -> :gen_tcp.close(trap) end)
    %{trap: trap, epmd_env: [{"ERL_EPMD_PORT", Integer.to_string(trap_port)}], id: id}
  end

  defp start!(name, env, opts \\ []) do
    {:ok, node} = EpmdNode.start(name, env, opts)
    on_exit(fn -> EpmdNode.stop(node) end)
    node
  end

  defp put_peers!(node, peers) do
    assert EpmdNode.eval(node, "EcsPeers.Epmd.put_peers(#{inspect(peers)})") == :ok
  end

  defp connect(from, to), do: EpmdNode.eval(from, "Node.connect(#{inspect(to.name)})")

  # Any attempt to use an EPMD would have reached the trap (queued in its backlog).
  defp assert_no_epmd_used(trap), do: assert({:error, :timeout} = :gen_tcp.accept(trap, 0))

  defp peer(node, port), do: {node.name, {127, 0, 0, 1}, port}

  test "in_use? is the VM's -epmd_module, not whether EcsPeers.Epmd's process runs", ctx do
    port = EpmdNode.free_port()
    a = start!("a#{ctx.id}@127.0.0.1", [{"ECS_PEERS_DIST_PORT", "#{port}"} | ctx.epmd_env])
    assert EpmdNode.eval(a, "EcsPeers.Epmd.in_use?()") == true

    # This VM resolves nodes through OTP's EPMD; the process runs here as TLS distribution with
    # OTP's EPMD starts it (to keep the nodes discovery lists), which must not make it EPMD-less.
    pid = start_supervised!(%{id: EcsPeers.Epmd, start: {EcsPeers.Epmd, :start_link, []}})
    assert Process.whereis(EcsPeers.Epmd) == pid
    refute EcsPeers.Epmd.in_use?()
  end

  test "two nodes on different ports connect through the lookup, without any EPMD", ctx do
    [pa, pb, pc] = for _ <- 1..3, do: EpmdNode.free_port()
    a = start!("a#{ctx.id}@127.0.0.1", [{"ECS_PEERS_DIST_PORT", "#{pa}"} | ctx.epmd_env])
    b = start!("b#{ctx.id}@127.0.0.1", [{"ECS_PEERS_DIST_PORT", "#{pb}"} | ctx.epmd_env])
    # A short connection setup time: c's failed attempt below (it reaches itself) ends sooner.
    c =
      start!("c#{ctx.id}@127.0.0.1", [{"ECS_PEERS_DIST_PORT", "#{pc}"} | ctx.epmd_env],
        erl: "-kernel net_setuptime 2"
      )

    # Without the lookup, b is looked for at c's own port: no connection (the control case).
    refute connect(c, b)

    put_peers!(a, [peer(b, pb)])
    assert connect(a, b)

    assert EpmdNode.eval(a, "EcsPeers.Epmd.lookup(#{inspect(b.name)})") ==
             {:ok, {{127, 0, 0, 1}, pb}}

    # Both directions work on the one connection: b answers a call from a, and lists a.
    assert EpmdNode.eval(a, ":rpc.call(#{inspect(b.name)}, Node, :list, [])") == [a.name]
    assert EpmdNode.eval(b, "Process.whereis(:erl_epmd)") == nil

    # A wrong entry (ghost's port is c's) never yields a connection to the wrong node: the
    # handshake checks the name.
    put_peers!(a, [peer(b, pb), {:"ghost#{ctx.id}@127.0.0.1", {127, 0, 0, 1}, pc}])
    refute EpmdNode.eval(a, "Node.connect(:\"ghost#{ctx.id}@127.0.0.1\")")
    assert EpmdNode.eval(a, "Node.list()") == [b.name]
    assert_no_epmd_used(ctx.trap)
  end

  test "a node missing from the lookup is reached at the configured port (awsvpc: one port everywhere)",
       ctx do
    # Two loopback addresses, the same port on both: as two awsvpc tasks with their own IPs.
    port = EpmdNode.free_port({127, 0, 0, 2})
    env = [{"ECS_PEERS_DIST_PORT", "#{port}"} | ctx.epmd_env]
    a = start!("a#{ctx.id}@127.0.0.1", env, erl: "-kernel inet_dist_use_interface {127,0,0,1}")
    c = start!("c#{ctx.id}@127.0.0.2", env, erl: "-kernel inet_dist_use_interface {127,0,0,2}")

    assert EpmdNode.eval(a, "EcsPeers.Epmd.lookup(#{inspect(c.name)})") == :error
    assert connect(a, c)
    assert EpmdNode.eval(c, "Node.list()") == [a.name]
    assert_no_epmd_used(ctx.trap)
  end

  test "before the lookup table exists, calls answer from the configuration and nothing crashes" do
    # This test VM did not start distribution through EcsPeers.Epmd: there is no table.
    assert :ets.whereis(EcsPeers.Epmd) == :undefined

    assert EcsPeers.Epmd.address_please(~c"app", ~c"127.0.0.1", :inet) ==
             {:ok, {127, 0, 0, 1}, 4370, 6}

    assert EcsPeers.Epmd.port_please(~c"app", {127, 0, 0, 1}) == {:port, 4370, 6}
    assert EcsPeers.Epmd.port_please(:app, ~c"10.0.1.5", 5_000) == {:port, 4370, 6}
    assert EcsPeers.Epmd.listen_port_please(:app, ~c"127.0.0.1") == {:ok, 4370}
    assert EcsPeers.Epmd.names(~c"127.0.0.1") == {:ok, []}
    assert EcsPeers.Epmd.lookup(:"app@10.0.1.5") == :error

    assert EcsPeers.Epmd.put_peers([{:"app@10.0.1.5", {10, 0, 1, 5}, 4370}]) == :ignored

    assert {:error, :nxdomain} =
             EcsPeers.Epmd.address_please(~c"app", ~c"no-such-host.invalid", :inet)
  end

  test "a remote console (hidden node) attaches to a node on the same address", ctx do
    port = EpmdNode.free_port()
    env = [{"ECS_PEERS_DIST_PORT", "#{port}"} | ctx.epmd_env]
    target = start!("app-#{ctx.id}@127.0.0.1", env)

    # As `bin/app remote`: hidden, same environment as the target (so the same port), not in
    # any snapshot. It must listen elsewhere (the target holds the port) and dial the target.
    console = start!("rem-1a2b-app-#{ctx.id}@127.0.0.1", env, hidden: true)
    assert EpmdNode.eval(console, "EcsPeers.Epmd.listen_port_please(:x, ~c\"h\")") == {:ok, 0}
    assert connect(console, target)

    assert EpmdNode.eval(console, ":rpc.call(#{inspect(target.name)}, Node, :list, [:hidden])") ==
             [console.name]

    assert EpmdNode.eval(target, "Node.list()") == []
    assert_no_epmd_used(ctx.trap)
  end

  test "a console inside a bridge-mode container reaches its node on loopback (ECS_PEERS_STATIC_PEERS)",
       ctx do
    # The node is named after the instance address (not reachable here, as the instance address
    # on the container port is not reachable from inside a bridge container); env.sh gives the
    # console its node on loopback.
    port = EpmdNode.free_port()
    env = [{"ECS_PEERS_DIST_PORT", "#{port}"} | ctx.epmd_env]
    name = "app-#{ctx.id}@192.0.2.10"
    target = start!(name, env)

    without = start!("rem-1-#{name}", env, hidden: true, erl: "-kernel net_setuptime 2")
    refute EpmdNode.eval(without, "Node.connect(#{inspect(target.name)})", 30_000)

    console =
      start!("rem-2-#{name}", [{"ECS_PEERS_STATIC_PEERS", "#{name}=127.0.0.1"} | env],
        hidden: true
      )

    assert connect(console, target)
  end

  test "two nodes sharing one address, on different ports, named app-<task id>@ip (bridge mode)",
       ctx do
    [p1, p2, px] = for _ <- 1..3, do: EpmdNode.free_port()
    t1 = start!("app-#{ctx.id}a1@127.0.0.1", [{"ECS_PEERS_DIST_PORT", "#{p1}"} | ctx.epmd_env])
    t2 = start!("app-#{ctx.id}b2@127.0.0.1", [{"ECS_PEERS_DIST_PORT", "#{p2}"} | ctx.epmd_env])
    x = start!("app-#{ctx.id}c3@127.0.0.1", [{"ECS_PEERS_DIST_PORT", "#{px}"} | ctx.epmd_env])

    # Each node's strategy would put the same snapshot (host:hostPort from DescribeTasks).
    snapshot = [peer(t1, p1), peer(t2, p2), peer(x, px)]
    for n <- [t1, t2, x], do: put_peers!(n, snapshot)

    assert connect(x, t1)
    assert connect(x, t2)
    assert connect(t1, t2)
    assert Enum.sort(EpmdNode.eval(t2, "Node.list()")) == Enum.sort([t1.name, x.name])
    # net_adm:names/1 lists the snapshot's nodes on that address.
    {:ok, names} = EpmdNode.eval(x, ":net_adm.names(~c\"127.0.0.1\")")

    assert Enum.sort(names) ==
             Enum.sort(
               for {n, p} <- [{t1, p1}, {t2, p2}, {x, px}],
                   do:
                     {n.name
                      |> Atom.to_string()
                      |> String.split("@")
                      |> hd()
                      |> String.to_charlist(), p}
             )

    assert_no_epmd_used(ctx.trap)
  end

  test "put_peers replaces the whole lookup, and rejects a bad entry naming it", ctx do
    dist = EpmdNode.free_port()
    a = start!("a#{ctx.id}@127.0.0.1", [{"ECS_PEERS_DIST_PORT", "#{dist}"} | ctx.epmd_env])

    put_peers!(a, [{:"x@10.0.0.1", {10, 0, 0, 1}, 1001}, {:"y@10.0.0.2", {10, 0, 0, 2}, 1002}])

    assert EpmdNode.eval(a, "EcsPeers.Epmd.lookup(:\"y@10.0.0.2\")") ==
             {:ok, {{10, 0, 0, 2}, 1002}}

    # An IPv6 peer, with no port of its own: dialled at ECS_PEERS_DIST_PORT.
    put_peers!(a, [{:"v6@fd00::5", {0xFD00, 0, 0, 0, 0, 0, 0, 5}, nil}])

    assert EpmdNode.eval(a, "EcsPeers.Epmd.lookup(:\"v6@fd00::5\")") ==
             {:ok, {{0xFD00, 0, 0, 0, 0, 0, 0, 5}, dist}}

    put_peers!(a, [{:"y@10.0.0.2", {10, 0, 0, 2}, 1003}])
    assert EpmdNode.eval(a, "EcsPeers.Epmd.lookup(:\"x@10.0.0.1\")") == :error

    assert EpmdNode.eval(a, "EcsPeers.Epmd.port_please(~c\"y\", {10, 0, 0, 2})") ==
             {:port, 1003, 6}

    assert EpmdNode.eval(
             a,
             ~s|EcsPeers.Epmd.put_peers([{:"z@10.0.0.3", {10, 0, 0, 3}, 1}, {:w, {10, 0, 0, 4}, 1}])|
           ) ==
             {:error, ~s|peers[1].node: "w" is not a node name; expected name@host|}

    assert {:error, "peers[0]: " <> _} =
             EpmdNode.eval(a, ~s|EcsPeers.Epmd.put_peers([{"z@10.0.0.3", "10.0.0.3", 1}])|)

    assert EpmdNode.eval(
             a,
             ~s|EcsPeers.Epmd.put_peers([{:"z@10.0.0.3", {10, 0, 0, 3}, 0}])|
           ) ==
             {:error, "peers[0].port: 0 is not a port number; expected an integer 1..65535"}

    # Nothing of a rejected update was applied.
    assert EpmdNode.eval(a, "EcsPeers.Epmd.lookup(:\"z@10.0.0.3\")") == :error

    assert EpmdNode.eval(a, "EcsPeers.Epmd.lookup(:\"y@10.0.0.2\")") ==
             {:ok, {{10, 0, 0, 2}, 1003}}
  end

  test "a bad setting stops distribution from starting, naming the variable", ctx do
    for {var, value, message} <- [
          {"ECS_PEERS_DIST_PORT", "abc",
           ~s|ECS_PEERS_DIST_PORT="abc" is not a port number; expected an integer 1..65535|},
          {"ECS_PEERS_DIST_PORT", "0", ~s|ECS_PEERS_DIST_PORT="0" is not a port number|},
          {"ECS_PEERS_LISTEN_PORT", "70000",
           ~s|ECS_PEERS_LISTEN_PORT="70000" is not a port number; expected an integer 0..65535|},
          {"ECS_PEERS_STATIC_PEERS", "app@10.0.0.1:4370",
           ~s|ECS_PEERS_STATIC_PEERS: "app@10.0.0.1:4370" has no =; expected node=host[:port]|}
        ] do
      assert {:error, output} =
               EpmdNode.start("bad#{ctx.id}@127.0.0.1", [{var, value} | ctx.epmd_env])

      assert output =~ "EcsPeers.Epmd: " <> message
    end
  end
end
