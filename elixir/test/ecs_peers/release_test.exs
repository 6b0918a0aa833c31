defmodule EcsPeers.ReleaseTest do
  # The release process (scripts/release-nif, scripts/package-hex) against what RustlerPrecompiled
  # computes. RustlerPrecompiled itself cannot be installed here (no Hex): its rule for this
  # machine's target is restated below from its source (lib/rustler_precompiled.ex 0.8.4:
  # target_config/1, system_arch/0, normalize_arch_os/1, find_compatible_nif_version/2, target/3,
  # lib_name/4, lib_name_with_ext/2) and checked against the script on this BEAM.
  use ExUnit.Case, async: true

  alias EcsPeers.Native.Loader

  @root Path.expand("../../..", __DIR__)
  @script Path.join(@root, "scripts/release-nif")

  defp release_nif(args) do
    System.cmd(@script, args,
      stderr_to_stdout: true,
      env: for(v <- ~w(TARGET_ARCH TARGET_VENDOR TARGET_OS TARGET_ABI), do: {v, nil})
    )
  end

  # The triple and NIF version RustlerPrecompiled picks for a system architecture and NIF version
  # (a Unix host; TARGET_* overrides left out).
  defp rustler_precompiled_target(sysarch, nif) do
    [arch, vendor, os | abi] = String.split(sysarch, "-")

    {arch, vendor, os} =
      cond do
        os =~ "darwin" -> {if(arch == "arm", do: "aarch64", else: arch), vendor, "darwin"}
        os =~ "linux" -> {normalize_arch(arch), linux_vendor(vendor), os}
        true -> {arch, vendor, os}
      end

    [major, minor] = String.split(nif, ".")

    listed =
      for v <- Loader.nif_versions(),
          [^major, m] = String.split(v, "."),
          String.to_integer(m) <= String.to_integer(minor),
          do: v

    chosen =
      if nif in Loader.nif_versions(),
        do: nif,
        else: Enum.max_by(listed, &Version.parse!(&1 <> ".0"), Version, fn -> nil end)

    {Enum.join([arch, vendor, os | abi], "-"), chosen}
  end

  defp normalize_arch("amd64"), do: "x86_64"
  defp normalize_arch("riscv64"), do: "riscv64gc"
  defp normalize_arch(arch), do: arch

  defp linux_vendor(v) when v in ~w(pc redhat suse alpine), do: "unknown"
  defp linux_vendor(v), do: v

  defp this_beam do
    rustler_precompiled_target(
      List.to_string(:erlang.system_info(:system_architecture)),
      List.to_string(:erlang.system_info(:nif_version))
    )
  end

  defp version, do: Mix.Project.config()[:version]

  test "this machine's target is the one RustlerPrecompiled derives from this BEAM" do
    sysarch = List.to_string(:erlang.system_info(:system_architecture))
    nif = List.to_string(:erlang.system_info(:nif_version))
    {triple, chosen} = this_beam()

    # Each piece, on this BEAM: a listed target, of this machine's architecture and OS; a listed
    # NIF version this VM can load (same major, not newer).
    assert triple in Loader.targets(), "#{sysarch} -> #{triple}, not listed in native.ex"
    assert String.starts_with?(triple, normalize_arch(hd(String.split(sysarch, "-"))) <> "-")
    assert chosen in Loader.nif_versions()
    assert Version.compare("#{chosen}.0", "#{nif}.0") in [:lt, :eq]
    assert hd(String.split(chosen, ".")) == hd(String.split(nif, "."))

    assert {out, 0} = release_nif(["host"])
    assert String.trim(out) == "nif-#{chosen}-#{triple}"
  end

  test "the script names other machines' targets as RustlerPrecompiled does" do
    cases = [
      {"x86_64-pc-linux-gnu", "2.16", "nif-2.15-x86_64-unknown-linux-gnu"},
      {"x86_64-pc-linux-gnu", "2.15", "nif-2.15-x86_64-unknown-linux-gnu"},
      {"amd64-pc-linux-gnu", "2.17", "nif-2.15-x86_64-unknown-linux-gnu"},
      {"x86_64-alpine-linux-musl", "2.16", "nif-2.15-x86_64-unknown-linux-musl"},
      {"aarch64-unknown-linux-gnu", "2.16", "nif-2.15-aarch64-unknown-linux-gnu"},
      {"aarch64-apple-darwin23.4.0", "2.17", "nif-2.15-aarch64-apple-darwin"},
      {"arm-apple-darwin22.1.0", "2.16", "nif-2.15-aarch64-apple-darwin"},
      {"x86_64-apple-darwin21.6.0", "2.16", "nif-2.15-x86_64-apple-darwin"}
    ]

    for {sysarch, nif, want} <- cases do
      assert {out, 0} = release_nif(["host", sysarch, nif])
      assert String.trim(out) == want, "#{sysarch} #{nif}: #{inspect(out)}"
      {triple, chosen} = rustler_precompiled_target(sysarch, nif)
      assert want == "nif-#{chosen}-#{triple}"
    end

    assert {out, 1} = release_nif(["host", "i686-pc-linux-gnu", "2.16"])
    assert out =~ "no precompiled NIF for this target: 'i686-unknown-linux-gnu'"
    assert {out, 1} = release_nif(["host", "x86_64-pc-linux-gnu", "2.14"])
    assert out =~ "no precompiled NIF for NIF version 2.14"
  end

  # The BEAM leaves SIGPIPE ignored in the programs it starts, so a script line whose reader stops
  # early (`grep` stops at its first match when its output is /dev/null) makes the writer print
  # "write error: Broken pipe" into the output now and then (CI saw it once in ~500 runs; the old
  # `grep -x ... <(targets) >/dev/null` failed this test in 3 of 3 tries). Many runs, side by side.
  test "the script's answer is exactly one line however its pipes are scheduled" do
    cases = [
      {"x86_64-pc-linux-gnu", "2.16", "nif-2.15-x86_64-unknown-linux-gnu"},
      {"aarch64-apple-darwin23.4.0", "2.17", "nif-2.15-aarch64-apple-darwin"}
    ]

    outs =
      Stream.cycle(cases)
      |> Stream.take(600)
      |> Task.async_stream(
        fn {sysarch, nif, want} -> {want, release_nif(["host", sysarch, nif])} end,
        max_concurrency: 4,
        timeout: 30_000
      )
      |> Enum.map(fn {:ok, result} -> result end)

    bad = for {want, {out, _} = got} <- outs, got != {want <> "\n", 0}, do: out
    assert bad == [], "#{length(bad)} of 600 runs answered otherwise: #{inspect(Enum.uniq(bad))}"
  end

  test "one tarball per target and NIF version of native.ex, under RustlerPrecompiled's names" do
    assert {out, 0} = release_nif(["names"])

    assert String.split(out) ==
             for(
               t <- Loader.targets(),
               n <- Loader.nif_versions(),
               do: "libecs_peers_nif-v#{version()}-nif-#{n}-#{t}.so.tar.gz"
             )
  end

  defp package_hex(args) do
    System.cmd(Path.join(@root, "scripts/package-hex"), args, stderr_to_stdout: true)
  end

  defp tmp_dir(tag) do
    dir = Path.join(System.tmp_dir!(), "ecs_peers_#{tag}_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    dir
  end

  test "the Hex package is refused without a checksum for every target native.ex lists" do
    dir = tmp_dir("package")
    {names, 0} = release_nif(["names"])
    [first | rest] = String.split(names)
    line = fn name -> ~s(  "#{name}" => "sha256:#{String.duplicate("ab", 32)}",\n) end

    partial = Path.join(dir, "partial.exs")
    File.write!(partial, ["%{\n", Enum.map(rest, line), "}\n"])
    assert {out, 1} = package_hex(["--checksum", partial, Path.join(dir, "out")])
    assert out =~ "has no sha256 for:\n  #{first}\n"
    refute File.exists?(Path.join(dir, "out"))

    assert {out, 1} =
             package_hex(["--checksum", Path.join(dir, "none.exs"), Path.join(dir, "out")])

    assert out =~ "no checksum file"

    complete = Path.join(dir, "complete.exs")
    File.write!(complete, ["%{\n", Enum.map([first | rest], line), "}\n"])
    assert {_, 0} = package_hex(["--checksum", complete, Path.join(dir, "out")])

    assert File.read!(Path.join(dir, "out/checksum-Elixir.EcsPeers.Native.exs")) ==
             File.read!(complete)

    # The docs mix.exs ships (`files`) and ExDoc lists (`extras`): the README and every guide.
    assert File.read!(Path.join(dir, "out/README.md")) ==
             File.read!(Path.join(@root, "README.md"))

    assert Enum.sort(File.ls!(Path.join(dir, "out/docs"))) ==
             Enum.sort(File.ls!(Path.join(@root, "docs")))
  end

  # scripts/test runs `scripts/release-nif --host --debug --out DIR` and then this test with
  # ECS_PEERS_RELEASE_DIR=DIR (`mix test --only release_dry_run`).
  @tag :release_dry_run
  @tag timeout: 120_000
  test "release dry run: this machine's tarball, its checksum, and the NIF inside answering in a BEAM" do
    dir = System.get_env("ECS_PEERS_RELEASE_DIR") || flunk("set ECS_PEERS_RELEASE_DIR")
    {triple, nif} = this_beam()
    lib_name = "libecs_peers_nif-v#{version()}-nif-#{nif}-#{triple}"
    tarball = Path.join(dir, lib_name <> ".so.tar.gz")

    assert Path.wildcard(Path.join(dir, "*.tar.gz")) == [tarball]

    # The checksum file as RustlerPrecompiled reads it: an Elixir map, "sha256:<hex>".
    {checksums, _} = Code.eval_file(Path.join(dir, "checksum-Elixir.EcsPeers.Native.exs"))
    sha = :crypto.hash(:sha256, File.read!(tarball)) |> Base.encode16(case: :lower)
    assert checksums == %{Path.basename(tarball) => "sha256:" <> sha}

    # Unpacked as RustlerPrecompiled does, and loaded from where it loads it (no extension).
    priv = tmp_dir("priv_native")
    assert :ok = :erl_tar.extract(String.to_charlist(tarball), [:compressed, cwd: priv])
    assert File.ls!(priv) == [lib_name <> ".so"]

    out = EcsPeers.Test.FreshBeam.validate([{"ECS_PEERS_NIF_PATH", Path.join(priv, lib_name)}])
    # The validated timings, whatever other keys validate/2 answers with (e.g. share_polling).
    assert out =~ ~r/VALIDATED %\{.*poll_timeout: 20000[,}]/, out
    assert out =~ ~r/VALIDATED %\{.*polling_interval: 5000[,}]/, out
  end
end
