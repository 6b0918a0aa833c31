defmodule EcsPeers.Application do
  @moduledoc false
  # Owns the processes every topology of this node shares, so none of them is started unlinked
  # or by whichever topology happens to come first:
  #
  # - the `:pg` scope of fleet-shared polling (`EcsPeers.Sharing`), which must run under the same
  #   name on every node of the cluster (remote scopes talk to it by name);
  # - the status registry (`EcsPeers.Status`), which `EcsPeers.status/1` reads, sharing or not;
  # - the task supervisor of the diagnoses of unreachable peers (`EcsPeers.Diagnoses`, see
  #   `EcsPeers.Membership.Diagnosis`), so no check runs unlinked.
  #
  # A topology's membership process monitors the scope and joins again when it restarts.

  use Application

  @impl Application
  def start(_type, _args) do
    children = [
      EcsPeers.Sharing.scope_spec(),
      EcsPeers.Status,
      {Task.Supervisor, name: EcsPeers.Diagnoses}
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: EcsPeers.Supervisor)
  end
end
