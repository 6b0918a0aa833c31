defmodule EcsPeers.ConfigTest do
  use ExUnit.Case, async: true
  import Bitwise

  alias Cluster.Strategy.State

  defp start(config) do
    EcsPeers.Strategy.start_link([%State{topology: :ecs, config: config}])
  end

  defp source, do: [type: :ecs, region: "eu-west-2", cluster: "web"]

  test "bad configuration stops the strategy from starting, naming the key" do
    Process.flag(:trap_exit, true)

    cases = [
      {[node_basename: "app"], "sources: is required"},
      {[node_basename: "app", sources: []], "sources: is empty"},
      {[node_basename: "app", sources: [[type: :ecs, region: "eu-west", cluster: "web"]]],
       ~s(sources[0].region: "eu-west" is not an AWS region name)},
      {[node_basename: "app", sources: [[type: :ecs, region: "eu-west-2"]]],
       "sources[0].cluster: is required"},
      {[node_basename: "app", sources: [source() ++ [servce: "api"]]],
       ~s(sources[0].servce: is not a known key; did you mean "service"?)},
      {[node_basename: "app", sources: [source()], polling_interval: "often"],
       ~s(polling_interval: "often" is not a duration)},
      {[node_basename: "app", sources: [source()], polling_interval: 50],
       "polling_interval: 50ms is too short"},
      {[node_basename: "app", sources: [source()], pollinginterval: 5_000],
       ~s(pollinginterval: is not a known key; did you mean "polling_interval"?)},
      {[node_basename: "app", sources: [[type: :k8s]]],
       ~s(sources[0].type: "k8s" is not a source type)},
      {[node_basename: "app", sources: [source() ++ [service: self()]]],
       "sources[0].service: is a pid"},
      {[node_basename: "app", sources: [source() ++ [service: {:a, :b}]]],
       "sources[0].service: is a tuple"},
      {[node_basename: "a b", sources: [source()]],
       ~s(node_basename: "a b" is not a node basename)},
      {[node_basename: "app", sources: [source()], jitter: 3],
       "jitter: 3 is not a number between 0 and 1"},
      {[
         node_basename: "app",
         sources: [
           [type: :cloudmap, region: "us-west-2", namespace: "n", service: "s", health: :sick]
         ]
       ], ~s(sources[0].health: "sick" is not a health filter)},
      {[node_basename: "app", sources: [source() ++ [tags: %{"team" => 1}]]],
       "sources[0].tags.team: 1 is not a string"},
      {[node_basename: "app", sources: [source() ++ [tags: ["aws:x": "a"]]]],
       ~s(sources[0].tags.aws:x: the tag key "aws:x" begins with aws:)},
      {[node_basename: "app", sources: [source() ++ [tags: "team=a"]]],
       "sources[0].tags: expected a map of tag key to value"}
    ]

    for {config, want} <- cases do
      ExUnit.CaptureLog.capture_log(fn ->
        assert {:error, {:invalid_config, message}} = start(config)

        assert String.starts_with?(message, want),
               "got #{inspect(message)}, want #{inspect(want)}"
      end)
    end
  end

  test "the error is logged with libcluster's prefix" do
    Process.flag(:trap_exit, true)

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        {:error, _} =
          start(node_basename: "app", sources: [[type: :ecs, region: "nowhere", cluster: "web"]])
      end)

    assert log =~
             ~s([libcluster:ecs] EcsPeers.Strategy cannot start: sources[0].region: "nowhere")
  end

  test "maps, keyword lists, atoms and strings are all accepted" do
    assert {:ok, %{polling_interval: 2000, poll_timeout: 20_000}} =
             EcsPeers.validate(%{
               "node_basename" => "app",
               "polling_interval" => "2s",
               "sources" => [
                 %{
                   type: "cloudmap",
                   region: "us-west-2",
                   namespace: "n",
                   service: :s,
                   query: [stage: "prod"]
                 }
               ]
             })
  end

  test "task tags are a map or a keyword list, atoms and strings alike" do
    for tags <- [%{"team" => "a"}, %{team: :a}, [team: "a"], [{:team, "a"}]] do
      assert {:ok, %{sharing_key: key}} =
               EcsPeers.validate(node_basename: "app", sources: [source() ++ [tags: tags]])

      assert {:ok, %{sharing_key: ^key}} =
               EcsPeers.validate(
                 node_basename: "app",
                 sources: [source() ++ [tags: %{"team" => "a"}]]
               )
    end

    assert {:ok, %{sharing_key: untagged}} =
             EcsPeers.validate(node_basename: "app", sources: [source()])

    assert {:ok, %{sharing_key: ^untagged}} =
             EcsPeers.validate(node_basename: "app", sources: [source() ++ [tags: []]])
  end

  test "the NIF turns any term into an error, never a crash" do
    terms = [
      self(),
      make_ref(),
      {1, 2},
      [1, {2}],
      %{1 => 2},
      "not a map",
      [sources: [fn -> :ok end]],
      Enum.reduce(1..200, :leaf, fn _, acc -> [a: acc] end),
      [sources: <<255, 254>>],
      [node_basename: "app", node_basename: "twice"]
    ]

    for t <- terms do
      assert {:error, message} = EcsPeers.validate(t)
      assert is_binary(message) and message != ""
    end
  end

  # What EcsPeers.this_node/0 passes: {node(), release_name | nil, :net_kernel.longnames()}.
  defp config_for(config, this) do
    case EcsPeers.Native.config(config, this) do
      {:ok, {_validated, settings}} -> {:ok, settings}
      {:error, message} -> {:error, message}
    end
  end

  test "peers are named after the running node, else the release, unless configured" do
    src = [[type: :ecs, region: "eu-west-2", cluster: "web"]]

    # A distributed node names its peers after itself; a node that is not distributed after
    # its release; with neither, the basename must be given.
    assert {:ok, _} = config_for([sources: src], {:"web@10.0.0.5", nil, true})
    assert {:ok, _} = config_for([sources: src], {:nonode@nohost, "my_app", :ignored})

    assert {:ok, _} =
             config_for([node_basename: "app", sources: src], {:nonode@nohost, nil, :ignored})

    assert {:error, "node_basename: is required" <> _} =
             config_for([sources: src], {:nonode@nohost, nil, :ignored})

    # Only the three-element form is taken.
    assert {:error, "this node: expected {node(), release_name | nil, longnames}" <> _} =
             config_for([sources: src], {:"web@10.0.0.5", nil})
  end

  test "a short-named node (-sname) is refused long peer names, with the setting and the fix" do
    src = [[type: :ecs, region: "eu-west-2", cluster: "web"]]
    me = :"app@ip-10-0-1-5"

    assert {:error, "node_basename: this node runs with short names" <> rest} =
             config_for([sources: src], {me, nil, false})

    assert rest =~ ~s(e.g. "app@10.0.1.6")
    assert rest =~ "RELEASE_DISTRIBUTION=name and RELEASE_NODE=app@<this task's IP>"

    assert {:ok, _} =
             config_for([node_name: "app@ip-{ip_dashed}", sources: src], {me, nil, false})

    assert {:ok, _} = config_for([sources: src], {:"app@10.0.1.5", nil, true})
    assert {:ok, _} = EcsPeers.validate(sources: src, node_basename: "app")
  end

  test "validate/1 answers the settings the processes use, and nothing else" do
    src = [[type: :ecs, region: "eu-west-2", cluster: "web"]]

    assert {:ok, settings} =
             EcsPeers.validate(
               node_basename: "app",
               sources: src,
               polling_interval: "7s",
               poll_timeout: 3_000,
               share_polling: true
             )

    assert %{
             polling_interval: 7_000,
             poll_timeout: 3_000,
             share_polling: true,
             share_polling_given: true,
             sharing_key: key
           } = settings

    assert map_size(settings) == 5
    assert key =~ ~r/\A[0-9a-f]{16}\z/
  end

  test "share_polling is on by default, and validate/1 says whether it was given" do
    src = [[type: :ecs, region: "eu-west-2", cluster: "web"]]
    answer = &EcsPeers.validate([node_basename: "app", sources: src] ++ &1)

    assert {:ok, %{share_polling: true, share_polling_given: false, sharing_key: key}} =
             answer.([])

    assert {:ok, %{share_polling: true, share_polling_given: false}} = answer.(share_polling: nil)

    # Whether to share is not what a result means: the same key either way.
    assert {:ok, %{share_polling: false, share_polling_given: true, sharing_key: ^key}} =
             answer.(share_polling: false)
  end

  test "keys/0 returns the core's key table, each key with its scope, type, default and doc" do
    keys = EcsPeers.keys()

    assert %{scope: "top", kind: "duration ≥ 100ms", default: "5s", doc: "Time between" <> _} =
             Enum.find(keys, &(&1.key == "polling_interval"))

    assert %{scope: "cloudmap", default: "healthy"} = Enum.find(keys, &(&1.key == "health"))

    assert Enum.count(keys, &(&1.key == "type")) == 2
  end

  # Random terms of every kind, with real key names mixed in so validation goes deep.
  defp random_term(0), do: random_leaf()

  defp random_term(depth) do
    case :rand.uniform(9) do
      1 ->
        for _ <- 1..:rand.uniform(4), do: random_term(depth - 1)

      2 ->
        for _ <- 1..:rand.uniform(4), do: {random_key(), random_term(depth - 1)}

      3 ->
        Map.new(1..:rand.uniform(4), fn _ -> {random_key(), random_term(depth - 1)} end)

      4 ->
        {random_term(depth - 1), random_term(depth - 1)}

      5 ->
        [
          sources: for(_ <- 1..:rand.uniform(3), do: random_term(depth - 1)),
          node_basename: random_leaf()
        ]

      _ ->
        random_leaf()
    end
  end

  defp random_key do
    Enum.random([
      :sources,
      :type,
      :region,
      :cluster,
      :service,
      :namespace,
      :query,
      :tags,
      :polling_interval,
      :node_basename,
      :node_name,
      :node_names,
      :jitter,
      :health,
      "region",
      "type",
      :"",
      :x
    ])
  end

  defp random_leaf do
    case :rand.uniform(12) do
      1 -> :rand.uniform(1 <<< 70) - (1 <<< 69)
      2 -> :rand.uniform() * 1.0e12 - 5.0e11
      3 -> :crypto.strong_rand_bytes(:rand.uniform(8))
      4 -> Enum.random(["ecs", "cloudmap", "eu-west-2", "auto", "5s", "app@{ip}", "", "epmd"])
      5 -> Enum.random([:ecs, :cloudmap, :auto, :all, nil, true, false])
      6 -> self()
      7 -> make_ref()
      8 -> fn -> :ok end
      9 -> []
      10 -> %{}
      11 -> {}
      _ -> String.duplicate("a", :rand.uniform(300))
    end
  end

  test "the NIF handed thousands of random terms answers every one, never crashes" do
    :rand.seed(:exsss, {1, 2, 3})

    for _ <- 1..3_000 do
      t = random_term(:rand.uniform(5))

      case EcsPeers.validate(t) do
        {:ok, %{polling_interval: i}} when is_integer(i) -> :ok
        {:error, message} when is_binary(message) and message != "" -> :ok
        other -> flunk("validate(#{inspect(t)}) returned #{inspect(other)}")
      end
    end
  end
end
