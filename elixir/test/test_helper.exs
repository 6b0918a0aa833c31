# Two tiers. `mix test --exclude emulator` (the quick tier, ../scripts/test --quick) runs every
# test that needs neither the AWS emulator nor network namespaces nor built releases; `mix test`
# runs them all. Tests that use the emulator are tagged :emulator, and the emulator
# (tests/awsemu) starts on the first such test, once: EcsPeers.Test.Emu.shared/0 refuses to
# start it when :emulator is excluded, so an untagged test fails in the quick tier instead of
# slowing it down. The NIF is the one cargo built (scripts/test copies it to priv/native).
#
# The recorder module is loaded up front: libcluster's ensure_exported!/3 uses
# function_exported?/3, which does not load modules.
Code.ensure_loaded!(EcsPeers.Test.Recorder)
:inets.start()
EcsPeers.Test.Emu.init()
# The release dry run needs the tarball scripts/test builds first (its "release dry run" step).
ExUnit.start(exclude: [:release_dry_run])
