defmodule EcsPeers.TLSTest do
  # Real BEAM nodes over TLS distribution (EcsPeers.Test.TLSNode): the identity rule of
  # EcsPeers.TLS, both directions, EPMD-less and with OTP's EPMD, IPv4 and IPv6, and renewal.
  use ExUnit.Case, async: false

  alias EcsPeers.Test.TLSNode

  @moduletag timeout: 180_000

  setup do
    # A port of this test's own on every 127.77.0.x address (several test runs share the machine).
    port = 20_000 + :rand.uniform(20_000)
    ca = TLSNode.ca()
    on_exit(fn -> Process.get(:tls_nodes, []) |> Enum.each(&TLSNode.stop/1) end)
    %{port: port, ca: ca}
  end

  # A node at `addr` named `name@addr` whose certificate (signed by `ca`) names `cert_addrs`.
  defp node!(ctx, name, addr, opts \\ []) do
    cert_addrs = Keyword.get(opts, :cert, [addr])
    ca = Keyword.get(opts, :ca, ctx.ca)
    issuer = {TLSNode, :issue, [ca, cert_addrs, Keyword.get(opts, :not_after_in, 86_400)]}
    node = TLSNode.start("#{name}@#{addr}", issuer, Keyword.put_new(opts, :port, ctx.port))
    assert %{node: _} = node
    Process.put(:tls_nodes, [node | Process.get(:tls_nodes, [])])
    node
  end

  defp list(node, others),
    do: TLSNode.list(node, for(o <- others, do: {"#{o.node}", host(o), nil}))

  defp host(%{node: n}), do: n |> Atom.to_string() |> String.split("@") |> List.last()

  defp nodes(n), do: TLSNode.call(n, Node, :list, [:connected])

  describe "EPMD-less (EcsPeers.Epmd), IPv4" do
    test "listed nodes with certificates for their addresses mesh, dialling from other addresses",
         ctx do
      a = node!(ctx, "a", "127.77.0.2")
      b = node!(ctx, "b", "127.77.0.3")
      c = node!(ctx, "c", "127.77.0.4")
      for n <- [a, b, c], do: list(n, [a, b, c] -- [n])

      assert TLSNode.connect(a, b.node)
      assert TLSNode.connect(c, a.node)
      assert TLSNode.connect(b, c.node)
      assert Enum.sort(nodes(a)) == Enum.sort([b.node, c.node])
      assert TLSNode.call(b, :rpc, :call, [c.node, :erlang, :node, []]) == c.node
    end

    test "a node whose certificate is not signed by the cluster CA is refused, both ways", ctx do
      a = node!(ctx, "a", "127.77.0.2")
      x = node!(ctx, "x", "127.77.0.5", ca: TLSNode.ca("another CA"))
      list(a, [x])
      list(x, [a])

      refute TLSNode.connect(x, a.node)
      refute TLSNode.connect(a, x.node)
      assert nodes(a) == []
    end

    test "a node with a CA-signed certificate for another address is refused, both ways", ctx do
      a = node!(ctx, "a", "127.77.0.2")
      # x is at .5 and listed there; its certificate is for .9 (listed too: a real node's).
      x = node!(ctx, "x", "127.77.0.5", cert: ["127.77.0.9"])
      list(a, [x])
      TLSNode.list(a, [{"x@127.77.0.5", "127.77.0.5", nil}, {"n@127.77.0.9", "127.77.0.9", nil}])
      list(x, [a])

      refute TLSNode.connect(x, a.node)
      refute TLSNode.connect(a, x.node)
      assert nodes(a) == []
    end

    test "a node claiming another node's name is refused", ctx do
      a = node!(ctx, "a", "127.77.0.2")
      b = node!(ctx, "b", "127.77.0.3")
      # The impostor holds a CA-signed certificate for its own (listed) address, .4, and
      # calls itself b@127.77.0.3, listening on .4: a dials it as b through the lookup.
      imp = node!(ctx, "b", "127.77.0.3", cert: ["127.77.0.4"], listen_on: "127.77.0.4")
      _ = b
      TLSNode.list(a, [{"b@127.77.0.3", "127.77.0.4", nil}, {"c@127.77.0.4", "127.77.0.4", nil}])
      list(imp, [a])

      refute TLSNode.connect(imp, a.node)
      refute TLSNode.connect(a, :"b@127.77.0.3")
      assert nodes(a) == []
    end

    test "a node discovery does not list is refused; listed later, it is accepted", ctx do
      a = node!(ctx, "a", "127.77.0.2")
      d = node!(ctx, "d", "127.77.0.6")
      list(d, [a])
      list(a, [])

      refute TLSNode.connect(d, a.node)
      list(a, [d])
      assert TLSNode.connect(d, a.node)
    end

    test "a console of this node (another name at its address, hidden) is accepted unlisted",
         ctx do
      a = node!(ctx, "a", "127.77.0.2")
      list(a, [])
      console = node!(ctx, "rem-1234-a", "127.77.0.2", hidden: true, listen_port: 0)

      assert TLSNode.connect(console, a.node)
      assert TLSNode.call(console, :rpc, :call, [a.node, :erlang, :node, []]) == a.node
    end
  end
end
