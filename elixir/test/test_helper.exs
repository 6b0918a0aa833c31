# Tests run against awsemu (started here, once) and the NIF built by cargo (scripts/test copies
# it to priv/native). The recorder module is loaded up front: libcluster's ensure_exported!/3
# uses function_exported?/3, which does not load modules.
Code.ensure_loaded!(EcsPeers.Test.Recorder)
:inets.start()
# The NIF reads the OS environment, which System.put_env/2 does not change (OTP keeps its own
# copy), so the credentials for the emulator must be exported before the VM starts.
for var <- ~w(AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY), System.get_env(var) in [nil, ""] do
  raise "export #{var}=test (any value; the tests talk to a local AWS emulator), or run ../scripts/test"
end

emu = EcsPeers.Test.Emu.start()
Application.put_env(:ecs_peers, :test_emu, emu)
System.at_exit(fn _ -> EcsPeers.Test.Emu.stop(emu) end)
# The release dry run needs the tarball scripts/test builds first (its "release dry run" step).
ExUnit.start(exclude: [:release_dry_run])
