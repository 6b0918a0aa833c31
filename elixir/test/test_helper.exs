# Two tiers. `mix test --exclude emulator` (the quick tier, ../scripts/test --quick) runs every
# test that needs neither the AWS emulator nor network namespaces nor a built release; `mix test`
# runs them all. Tag a test by what it needs: :emulator (the AWS emulator), :netns (network
# namespaces, root), :release (a built `mix release`); excluding :emulator also leaves out the
# other two, so the quick tier has one switch.
#
# The emulator (tests/awsemu) starts on the first test that uses it, once:
# EcsPeers.Test.Emu.shared/0 refuses to start it when :emulator is excluded, so an untagged test
# fails in the quick tier instead of slowing it down. The NIF is the one cargo built
# (scripts/test copies it to priv/native).
#
# The recorder module is loaded up front: libcluster's ensure_exported!/3 uses
# function_exported?/3, which does not load modules.
Code.ensure_loaded!(EcsPeers.Test.Recorder)
:inets.start()
EcsPeers.Test.Emu.init()
quick = :emulator in Keyword.get(ExUnit.configuration(), :exclude, [])
# The release dry run needs the tarball scripts/test builds first (its "release dry run" step).
ExUnit.start(exclude: [:release_dry_run | if(quick, do: [:netns, :release], else: [])])
