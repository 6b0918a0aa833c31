defmodule EcsPeers.Membership.Diagnosis do
  @moduledoc false
  # One diagnosis of one peer this node cannot connect to, run as a task under
  # `EcsPeers.Diagnoses` (a Task.Supervisor of `EcsPeers.Application`), off the membership
  # process: that process may be blocked for seconds in a connect (libcluster's connect is
  # synchronous, and a dropped SYN takes OTP's net_setuptime), and a diagnosis must be said
  # when it is known, not when the connect gives up.
  #
  # The checks are the core's doctor's (`EcsPeers.Native.diagnose/7`: EPMD or the one
  # distribution port, the name registered, the port, TLS with this node's certificate, a
  # handshake with this node's cookie),
  # run on the NIF's runtime for the peer the poller listed under that name; this task waits
  # for the answer, says it (a warning with its fix, and `[:ecs_peers, :peer, :unreachable]`)
  # when it differs from the peer's last (`Rules.diagnosis_change/2`), and sends it to the
  # membership process: `{:ecs_peers_diagnosed, tag, {:ok, diagnosis} | {:error, message}}`.

  require Logger

  alias EcsPeers.Membership.Rules

  # Longer than the checks can take (2 s per connection attempt, 4 s for the handshake).
  @answer_within 30_000

  @doc false
  # `job`: %{owner: pid, tag:, prefix:, topology:, poller: the poller's resource, node: atom,
  # previous: the peer's last diagnosis or nil, since: RFC 3339 text, polls: integer,
  # epmd_less: boolean}. Returns {:ok, pid} | {:error, reason} (also when the supervisor is not
  # running: the membership process carries on without the diagnosis).
  def start(job) do
    Task.Supervisor.start_child(EcsPeers.Diagnoses, fn -> run(job) end)
  catch
    :exit, reason -> {:error, reason}
  end

  defp run(job) do
    tag = :erlang.unique_integer([:positive])
    # This node's own cookie, handed to the check and nowhere else.
    cookie = if Node.alive?(), do: Atom.to_string(Node.get_cookie())
    # With TLS distribution, the checks speak TLS with this node's own certificate (nil: clear
    # text, and a peer requiring TLS is told apart).
    tls = EcsPeers.TLS.current_credentials()

    result =
      case EcsPeers.native(fn ->
             EcsPeers.Native.diagnose(
               job.poller,
               Atom.to_string(job.node),
               cookie,
               tls,
               job.epmd_less,
               self(),
               tag
             )
           end) do
        {:ok, :ok} ->
          receive do
            {:ecs_peers, ^tag, {:diagnosis, _node, result}} -> result
          after
            @answer_within -> {:error, "no answer from the checks within #{@answer_within} ms"}
          end

        {:error, message} ->
          {:error, message}
      end

    say(job, result)
    send(job.owner, {:ecs_peers_diagnosed, job.tag, result})
  end

  # Said only while the peer is still not connected (it may have connected during the checks).
  defp say(job, {:ok, diagnosis}) do
    if Rules.diagnosis_change(job.previous, diagnosis) == :changed and
         job.node not in Node.list(:connected) do
      Logger.warning(
        "[#{job.prefix}] cannot connect to #{diagnosis.subject} since #{job.since} " <>
          "(#{job.polls} polls): [#{diagnosis.code}] #{diagnosis.problem}. Fix: #{diagnosis.fix}"
      )

      EcsPeers.Telemetry.unreachable(
        job.topology,
        %{
          node: Atom.to_string(job.node),
          code: diagnosis.code,
          reason: diagnosis.problem,
          fix: diagnosis.fix,
          since: job.since
        },
        %{polls: job.polls, checked_ms: diagnosis.checked_ms}
      )
    end
  end

  defp say(job, {:error, message}),
    do: Logger.warning("[#{job.prefix}] cannot diagnose #{inspect(job.node)}: #{message}")
end
