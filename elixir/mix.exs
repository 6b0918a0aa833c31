defmodule EcsPeers.MixProject do
  use Mix.Project

  @version "0.1.0"
  @source_url "https://github.com/ecs-peers/ecs-peers"

  # Hex users get the precompiled NIF (rustler_precompiled; rustler when building from source).
  # libcluster is optional: with it, EcsPeers.Strategy is compiled; without it (Phoenix apps with
  # no libcluster) EcsPeers.Cluster clusters on its own. Where Hex cannot be reached (this
  # project's CI), ECS_PEERS_OFFLINE=1 compiles against the libcluster contract double in
  # test/support and loads a NIF built by cargo.
  @offline System.get_env("ECS_PEERS_OFFLINE") in ["1", "true"]

  # The README and the guides (docs/*.md) live at the repository's top, outside this directory,
  # and a Hex package ships only files under its own root: scripts/package-hex copies them into
  # the package beside this file. So they are here in the assembled package, and one level up in
  # the repository; ExDoc reads them from either.
  @guides_root if File.dir?(Path.join(__DIR__, "docs")), do: ".", else: ".."

  def project do
    [
      app: :ecs_peers,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: deps(),
      # EcsPeers.Native.Loader hashes cached tarballs only while ecs_peers compiles with
      # RustlerPrecompiled, which needs :crypto itself: not needed at run time.
      xref: [exclude: [:crypto]],
      package: package(),
      description:
        "Clustering for AWS ECS and Cloud Map, with or without libcluster: nodes in every configured region find each other",
      docs: docs()
    ]
  end

  # EcsPeers.Application supervises what every topology shares (the sharing scope, the status
  # registry).
  def application do
    [mod: {EcsPeers.Application, []}, extra_applications: extra_applications(Mix.env())]
  end

  # :ssl (and :public_key, which it starts): TLS distribution (EcsPeers.TLS) runs on OTP's
  # inet_tls_dist, so every release that uses ecs_peers holds it. :inets only for the tests'
  # HTTP calls to the AWS emulator.
  defp extra_applications(:test), do: [:logger, :ssl, :public_key, :inets]
  defp extra_applications(_), do: [:logger, :ssl, :public_key]

  defp elixirc_paths(:test) do
    if @offline, do: ["lib", "test/support", "test/offline"], else: ["lib", "test/support"]
  end

  # Offline, every environment compiles against the libcluster contract double (a fresh app with
  # ecs_peers as a path dependency compiles it in :prod).
  defp elixirc_paths(_) do
    if @offline, do: ["lib", "test/support/libcluster"], else: ["lib"]
  end

  defp deps do
    if @offline do
      []
    else
      [
        {:libcluster, "~> 3.3", optional: true},
        {:rustler_precompiled, "~> 0.8"},
        # 0.36.x: rustler_mix 0.37.0 needs Elixir 1.15 (System.cmd's :lines) while still
        # declaring ~> 1.11, and 0.37.1+ declare ~> 1.15; Hex does not filter by the Elixir
        # version, so a wider requirement resolves to a rustler that fails on Elixir 1.14.
        {:rustler, "~> 0.36.0", optional: true},
        {:telemetry, "~> 0.4 or ~> 1.0", optional: true},
        {:ex_doc, "~> 0.34", only: :dev, runtime: false}
      ]
    end
  end

  # ExDoc (a :dev dependency from Hex): the README as the main page, every guide of docs/ as an
  # extra beside the API (the key reference in docs/configuration.md is generated from the core's
  # key table).
  defp docs do
    readme = Path.join(@guides_root, "README.md")
    guides = Path.wildcard(Path.join(@guides_root, "docs/*.md"))

    [
      main: "readme",
      source_url: @source_url,
      extras: [readme | guides],
      groups_for_extras: [Guides: guides]
    ]
  end

  defp package do
    [
      licenses: ["Apache-2.0"],
      links: %{"GitHub" => @source_url},
      files: ~w(lib native checksum-*.exs mix.exs README.md docs)
    ]
  end
end
