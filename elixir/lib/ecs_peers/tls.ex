defmodule EcsPeers.TLS do
  @moduledoc """
  Erlang distribution over TLS, mutually authenticated by one identity rule, with the
  certificate held in memory and renewed while the node runs.

  Start the VM with `-proto_dist ecs_peers_tls` (IPv4) or `-proto_dist ecs_peers_tls6`
  (IPv6; `:ecs_peers_tls_dist` and `:ecs_peers_tls6_dist`, in `tls/dist.ex`): OTP's
  `inet_tls_dist` / `inet6_tls_dist` carry the connections; this module decides who may connect
  and holds the options. No `-ssl_dist_optfile`: the options are built in memory (DER) from the
  credentials, at the moment distribution starts. See docs/tls.md.

  ## The identity rule (both directions)

  Every certificate is verified (`verify_peer`) against the cluster CA; the server requires one
  (`fail_if_no_peer_cert`). A node's *address* is the host part of its node name (`app@10.0.1.5`,
  `app-4e3c…@10.0.1.5` in bridge mode: the instance's address), and its certificate names that
  address as an `iPAddress` and as a `dNSName` SAN.

  - **Dialling** `name@host`: the server's certificate must name `host`. OTP uses `host` as the
    SNI and as a `dns_id` reference, which matches only `dNSName` SANs (public_key
    `pkix_verify_hostname/3`); `match_address/2` (the `customize_hostname_check` `match_fun`)
    also matches it against the `iPAddress` SANs, so a certificate for another address is
    refused (`hostname_check_failed`). dist_util then checks that the node answering is the node
    dialled.
  - **Accepting** a node that claims `name@host`: its certificate must name an address that is a
    *listed host* (during the TLS handshake, `verify_client/3`), and `host` must be one of the
    listed hosts its certificate names (after it, `inet_tls_dist`'s allowed-nodes check, which
    the dist module always runs with the listed hosts, never with OTP's empty "anyone" list).
    The listed hosts are the hosts of the nodes discovery lists now (`EcsPeers.Epmd`'s table,
    which `EcsPeers.Strategy` and `EcsPeers.Cluster` fill with every update, and
    `ECS_PEERS_STATIC_PEERS`) and this node's own host (its `remote`/`rpc` consoles).

  The source address of a connection is never compared with anything: peers on the same EC2
  instance in bridge mode arrive through the docker bridge's gateway, consoles dial 127.0.0.1.
  The unit of identity is the address: a certificate names an address, not a node, so in
  bridge mode the tasks of one instance (which share its address) can take each other's names,
  and a node not listed can still connect from a listed node's address only with that address's
  certificate. A node with a CA-signed certificate for another address, or claiming a node
  name at an address its certificate does not name, or at an address discovery does not list,
  is refused. `net_kernel:allow/1` still limits the nodes this node dials; for the nodes it
  accepts, this rule decides.

  ## Credentials and renewal

  `start_link/0` runs as a child of kernel's `net_sup` (through the dist module's
  `childspecs/0`), before `net_kernel` listens: it gets this node's credentials
  (`credentials/1`: a certificate for this task's address, signed by the cluster CA that
  `ECS_PEERS_TLS_CA` names, issued by the Rust core) and writes the ssl options into the
  `ssl_dist_opts` table that `inet_tls_dist` reads for **each new connection** (ssl-10.8.7
  `inet_tls_dist:get_ssl_options/1`). OTP creates that table from `-ssl_dist_optfile` once, in
  `ssl_dist_sup:start_link/0`, and never re-reads it; here this process owns it, so a renewed
  certificate is used by the next connection while established links stay up. The certificate
  is renewed at the `renew_at` the issuer gives (the core's rule: two thirds of the way to
  `not_after`); a failed renewal keeps the current one and is retried in 30 s, or sooner: in a
  third of the time the current certificate has left (at least half a second), so that several
  attempts fit before it expires (at `tls_validity`'s least, one minute, renewal begins 20 s
  before the end); a warning naming the key and the fix is logged. Until the first certificate
  arrives (distribution starts during the kernel's boot, before the file server and logger:
  the first attempt may fail, and the next is made half a second later, then sooner than 30 s)
  every handshake is refused: distribution never runs unencrypted or unverified.

  Nothing is written to disk and the CA's key never reaches this VM: the core signs.

  ## Configuration (OS environment, read when distribution starts)

  | variable | meaning |
  | --- | --- |
  | `ECS_PEERS_TLS_CA` | The `tls_ca` key: the Secrets Manager or SSM ARN of the cluster CA. Required. |
  | `ECS_PEERS_TLS_VALIDITY` | The `tls_validity` key: `24h`, `10m`, or milliseconds (the core's default, 24 h, when unset). |

  Both are handed to the core as text and read by its key table (`src/config/keys.rs`), which
  names the key and the fix when a value is wrong. Without `ECS_PEERS_TLS_CA` distribution does
  not start, and the reason is printed.
  """

  use GenServer

  # The table inet_tls_dist reads its options from (ssl-10.8.7 inet_tls_dist:get_ssl_options/1).
  @table :ssl_dist_opts
  @retry_ms 30_000
  @first_retry_ms 500

  @typedoc """
  A node's credentials: its certificate (DER), its private key, the CA certificates that verify
  its peers (DER), when the certificate expires and when to renew it (Unix seconds), and the
  names it carries.
  """
  @type credentials :: %{
          cert: binary(),
          key: {:ECPrivateKey, binary()},
          cacerts: [binary()],
          not_after: integer(),
          renew_at: integer(),
          names: [String.t()]
        }

  # ---------------------------------------------------------------------------------------------
  # Public API

  @doc """
  This node's credentials for `config` (`[tls_ca: text, tls_validity: text]`, as `read_config/1`
  gives them; validated by the core's key table): `{:ok, t:credentials/0}` or `{:error, message}`. Issued by the Rust core
  (`EcsPeers.Native.tls_credentials/1`), or by the application environment's issuer
  (`issue_with/1`).
  """
  @spec credentials(keyword()) :: {:ok, credentials()} | {:error, String.t()}
  def credentials(config) do
    result =
      case Application.get_env(:ecs_peers, :tls_issuer) do
        {m, f, a} when is_atom(m) and is_atom(f) and is_list(a) ->
          apply(m, f, a ++ [config])

        nil ->
          EcsPeers.native(fn -> apply(EcsPeers.Native, :tls_credentials, [config]) end)

        other ->
          {:error,
           "the :tls_issuer of :ecs_peers is #{inspect(other)}; expected {module, function, args}"}
      end

    check_credentials(result)
  rescue
    e in UndefinedFunctionError ->
      {:error, "the issuer is missing: #{Exception.message(e)}"}

    # Never the exception's message or stack: its terms may hold a private key.
    e ->
      {:error, "the issuer raised #{inspect(e.__struct__)}"}
  catch
    kind, reason -> {:error, "the issuer failed (#{kind} #{summary(reason)})"}
  end

  # The outline of an exit or throw reason: atoms and tuple shapes, never binaries or strings.
  defp summary(reason) when is_atom(reason), do: inspect(reason)

  defp summary(reason) when is_tuple(reason) and tuple_size(reason) > 0,
    do: "{" <> Enum.map_join(Tuple.to_list(reason), ", ", &summary_item/1) <> "}"

  defp summary(_reason), do: "..."

  defp summary_item(item) when is_atom(item), do: inspect(item)
  defp summary_item(item) when is_tuple(item), do: summary(item)
  defp summary_item(_item), do: "_"

  @doc """
  Makes `credentials/1` call `mod.fun(args ++ [config])` instead of the core, which must return
  what `credentials/1` returns: for nodes whose certificate comes from elsewhere, and tests.
  It sets `:tls_issuer` in `:ecs_peers`' application environment, which a release's
  `config/config.exs` can set too (`config :ecs_peers, tls_issuer: {mod, :fun, args}`: the
  release loads it before distribution starts; `config/runtime.exs` is read too late). Call it
  before distribution starts (a late `:net_kernel.start/1`) or before a renewal. `:ok`.
  """
  @spec issue_with({module(), atom(), list()}) :: :ok
  def issue_with({m, f, a} = mfa) when is_atom(m) and is_atom(f) and is_list(a),
    do: Application.put_env(:ecs_peers, :tls_issuer, mfa)

  @doc """
  Renews this node's certificate now: `{:ok, not_after}` (Unix seconds) or `{:error, message}`
  (the current certificate stays). New connections use the new certificate; established ones
  keep theirs.
  """
  @spec renew() :: {:ok, integer()} | {:error, String.t()}
  def renew do
    case GenServer.whereis(__MODULE__) do
      nil ->
        {:error, "TLS distribution is not running (start the VM with -proto_dist ecs_peers_tls)"}

      pid ->
        GenServer.call(pid, :renew, 60_000)
    end
  end

  @doc """
  Whether this VM's distribution runs over TLS: it was started with `-proto_dist
  ecs_peers_tls` or `ecs_peers_tls6` (the VM's argument, as `net_kernel` reads it).
  """
  @spec in_use?() :: boolean()
  def in_use? do
    case :init.get_argument(:proto_dist) do
      {:ok, [[proto | _] | _]} -> proto in [~c(ecs_peers_tls), ~c(ecs_peers_tls6)]
      _ -> false
    end
  end

  @doc "When this node's current certificate expires (Unix seconds), or `nil` when TLS is off."
  @spec not_after() :: integer() | nil
  def not_after do
    case :ets.lookup(@table, {__MODULE__, :not_after}) do
      [{_, not_after}] -> not_after
      [] -> nil
    end
  rescue
    ArgumentError -> nil
  end

  defmodule Current do
    @moduledoc """
    This node's current TLS credentials as the in-process diagnosis uses them
    (`EcsPeers.TLS.current_credentials/0`): its certificate (DER), its key (`ECPrivateKey` DER),
    the CA certificates (DER) and `tls_validity` as the node was given it
    (`ECS_PEERS_TLS_VALIDITY`'s text, read by the core's key table; `nil`: the default). Its
    `inspect` form leaves the key out.
    """
    @derive {Inspect, except: [:key]}
    @enforce_keys [:cert, :key, :cacerts, :validity]
    defstruct [:cert, :key, :cacerts, :validity]
  end

  @doc """
  What this node's distribution presents and trusts now, for the doctor's checks run in-process
  (`EcsPeers.Membership.Diagnosis`): a `%EcsPeers.TLS.Current{}`, or `nil` when TLS
  distribution is not running or has no certificate yet. The key is for those checks only.
  """
  @spec current_credentials() :: %Current{} | nil
  def current_credentials do
    with [{:client, opts}] <- :ets.lookup(@table, :client),
         cert when is_binary(cert) <- Keyword.get(opts, :cert),
         {:ECPrivateKey, key} <- Keyword.get(opts, :key) do
      validity =
        case read_config(System.get_env()) do
          {:ok, config} -> Keyword.get(config, :tls_validity)
          {:error, _} -> nil
        end

      %Current{cert: cert, key: key, cacerts: Keyword.get(opts, :cacerts, []), validity: validity}
    else
      _ -> nil
    end
  rescue
    ArgumentError -> nil
  end

  # ---------------------------------------------------------------------------------------------
  # The identity rule

  @doc """
  The hosts a connecting node may be at: the hosts of the nodes discovery lists and this node's
  own host, as charlists (the `Allowed` list `inet_tls_dist:accept_connection/5` takes). Never
  empty while distribution runs (an empty list would let anyone in).
  """
  @spec accepted_hosts() :: [charlist()]
  def accepted_hosts do
    own = host(Atom.to_string(node()))

    [own | Enum.map(EcsPeers.Epmd.listed_nodes(), &host/1)]
    |> Enum.reject(&is_nil/1)
    |> Enum.uniq()
    |> Enum.map(&String.to_charlist/1)
  end

  @doc false
  # The server's verify_fun (ssl `verify_fun`): the chain is verified by ssl; for the peer's own
  # certificate, it must name one of accepted_hosts/0.
  def verify_client(_cert, {:bad_cert, _} = reason, _state), do: {:fail, reason}
  def verify_client(_cert, {:extension, _}, state), do: {:unknown, state}
  def verify_client(_cert, :valid, state), do: {:valid, state}

  def verify_client(cert, :valid_peer, state) do
    if names_any?(cert, accepted_hosts()),
      do: {:valid, state},
      else: {:fail, :cert_names_no_listed_node}
  end

  @doc """
  Whether certificate `cert` (DER or `OTPCertificate`) names one of `hosts` (addresses or names,
  as strings or charlists) as a `dNSName` or `iPAddress` SAN.
  """
  @spec names_any?(binary() | tuple(), [String.t() | charlist()]) :: boolean()
  def names_any?(cert, hosts) do
    refs =
      Enum.flat_map(hosts, fn h ->
        h = to_charlist(h)

        case :inet.parse_strict_address(h) do
          {:ok, ip} -> [{:dns_id, h}, {:ip, ip}]
          {:error, _} -> [{:dns_id, h}]
        end
      end)

    refs != [] and :public_key.pkix_verify_hostname(cert, refs, match_fun: &match_address/2)
  end

  @doc false
  # customize_hostname_check's match_fun: OTP dials with the node's host as a dns_id (the SNI),
  # which by default matches only dNSName SANs; an IP literal also matches the iPAddress SAN of
  # the same address. Anything else: public_key's default rule.
  def match_address({:dns_id, host}, {:iPAddress, bytes}) do
    case :inet.parse_strict_address(to_charlist(host)) do
      {:ok, ip} -> ip_bytes(ip) == :erlang.list_to_binary(bytes)
      {:error, _} -> false
    end
  end

  def match_address(_reference, _presented), do: :default

  defp ip_bytes({a, b, c, d}), do: <<a, b, c, d>>

  defp ip_bytes(ip6) when tuple_size(ip6) == 8,
    do: for(w <- Tuple.to_list(ip6), into: <<>>, do: <<w::16>>)

  defp host(node) do
    case String.split(node, "@", parts: 2) do
      [_, host] when host != "" -> host
      _ -> nil
    end
  end

  # ---------------------------------------------------------------------------------------------
  # The ssl options (OTP ssl-10.8.7 option names)

  @doc false
  # The options inet_tls_dist passes to ssl:handshake/3 (server) and ssl:connect/4 (client).
  def ssl_options(%{cert: cert, key: key, cacerts: cacerts}) do
    common = [cert: cert, key: key, cacerts: cacerts, verify: :verify_peer]

    [
      server:
        common ++
          [fail_if_no_peer_cert: true, verify_fun: {&__MODULE__.verify_client/3, nil}],
      client: common ++ [customize_hostname_check: [match_fun: &__MODULE__.match_address/2]]
    ]
  end

  # ---------------------------------------------------------------------------------------------
  # Children of net_sup (through the dist module's childspecs/0)

  @doc false
  # This process (the options), EcsPeers.Epmd when the VM's EPMD module is another (so the list
  # of nodes discovery hands to EcsPeers.Epmd.put_peers/1 is kept in both modes), then OTP's
  # ssl_dist_sup started without its optfile step (its init/1 starts the connection
  # supervisors; the options table is ours).
  def childspecs do
    epmd =
      if EcsPeers.Epmd.in_use?(),
        do: [],
        else: [%{id: EcsPeers.Epmd, start: {EcsPeers.Epmd, :start_link, []}, shutdown: 2000}]

    {:ok,
     [%{id: __MODULE__, start: {__MODULE__, :start_link, []}, shutdown: 2000}] ++
       epmd ++
       [
         %{
           id: :ssl_dist_sup,
           start: {:supervisor, :start_link, [{:local, :ssl_dist_sup}, :ssl_dist_sup, []]},
           type: :supervisor,
           shutdown: :infinity,
           modules: [:ssl_dist_sup]
         }
       ]}
  end

  @doc false
  def start_link, do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @impl GenServer
  def init(:ok) do
    # Outside a release the application is not loaded yet when distribution starts: load it, so
    # its environment (config, or `-ecs_peers tls_issuer ...` on the command line) is read.
    _ = Application.load(:ecs_peers)

    case read_config(System.get_env()) do
      {:ok, config} ->
        :ets.new(@table, [:named_table, :protected, :set, read_concurrency: true])
        # Until the first credentials arrive every handshake fails: never OTP's defaults (its
        # client would not verify the server).
        true = :ets.insert(@table, refusing_options())
        {_result, s} = renew_now(%{config: config, timer: nil, retry_ms: @first_retry_ms})
        {:ok, s}

      {:error, message} ->
        # Logger may not run yet (distribution starts before applications): print it.
        :erlang.display_string(~c"EcsPeers.TLS: distribution not started: #{message}\n")
        {:stop, {:invalid_config, message}}
    end
  end

  # Options with which no TLS handshake completes: no certificate of ours, no CA to verify with,
  # and a verify_fun that refuses every certificate.
  defp refusing_options do
    refuse = [verify: :verify_peer, cacerts: [], verify_fun: {&__MODULE__.refuse/3, nil}]
    [server: refuse ++ [fail_if_no_peer_cert: true], client: refuse]
  end

  @doc false
  def refuse(_cert, _event, _state), do: {:fail, :no_credentials_yet}

  @impl GenServer
  def handle_call(:renew, _from, s) do
    {result, s} = renew_now(s)
    {:reply, result, s}
  end

  @impl GenServer
  def handle_info(:renew, s) do
    {_result, s} = renew_now(s)
    {:noreply, s}
  end

  def handle_info(_other, s), do: {:noreply, s}

  # Credentials now; on failure the current ones stay (none at first: every handshake fails) and
  # the attempt is repeated, sooner while this node has none: when distribution starts during
  # the kernel's boot, the first attempt runs before kernel's file server and logger exist.
  defp renew_now(s) do
    if s.timer, do: Process.cancel_timer(s.timer)

    case credentials(s.config) do
      {:ok, creds} ->
        put_options(creds)

        {{:ok, creds.not_after},
         %{s | timer: schedule(creds.renew_at), retry_ms: @first_retry_ms}}

      {:error, message} ->
        retry_ms = retry_in(s.retry_ms, not_after(), System.os_time(:millisecond))
        report_failure(message, retry_ms)
        next = min(s.retry_ms * 2, @retry_ms)

        {{:error, message},
         %{s | timer: Process.send_after(self(), :renew, retry_ms), retry_ms: next}}
    end
  end

  @doc false
  # How long until a failed renewal is tried again, in ms. While the current certificate is
  # valid: 30 s, but at most a third of the time it has left (and at least half a second), so
  # that several attempts fit before it expires. With no certificate, or an expired one (every
  # new handshake fails either way): `backoff_ms`, the back-off doubling from half a second to
  # 30 s. `not_after_s`: Unix seconds (nil: none yet); `now_ms`: OS time in ms.
  @spec retry_in(pos_integer(), integer() | nil, integer()) :: pos_integer()
  def retry_in(backoff_ms, nil, _now_ms), do: backoff_ms

  def retry_in(backoff_ms, not_after_s, now_ms) do
    case not_after_s * 1000 - now_ms do
      left when left > 0 -> left |> div(3) |> min(@retry_ms) |> max(@first_retry_ms)
      _expired -> backoff_ms
    end
  end

  defp report_failure(message, retry_ms) do
    text =
      case not_after() do
        nil -> "EcsPeers.TLS: no certificate yet, distribution refuses every connection"
        t -> "EcsPeers.TLS: the certificate (valid until #{t}, Unix seconds) was not renewed"
      end <> " (retrying in #{retry_ms} ms): #{with_variable(message)}"

    # Standard output too, once: during the kernel's boot no logger handler runs yet.
    if is_nil(not_after()) and retry_ms == @first_retry_ms,
      do: :erlang.display_string(~c"#{text}\n")

    :logger.warning(text)
  end

  # The core's messages name the key; on a node the key came from an environment variable.
  defp with_variable("tls_validity" <> _ = m),
    do: m <> " (tls_validity is ECS_PEERS_TLS_VALIDITY)"

  defp with_variable("tls_ca" <> _ = m), do: m <> " (tls_ca is ECS_PEERS_TLS_CA)"
  defp with_variable(m), do: m

  defp put_options(creds) do
    true =
      :ets.insert(@table, ssl_options(creds) ++ [{{__MODULE__, :not_after}, creds.not_after}])
  end

  # Renewed at the issuer's renew_at (the core's rule), at least a second from now.
  defp schedule(renew_at) do
    Process.send_after(self(), :renew, max(1, renew_at - System.os_time(:second)) * 1000)
  end

  @doc false
  # The tls_ca / tls_validity keys from the OS environment (distribution starts before any
  # application config), as text: the core's key table reads and validates them. `{:ok,
  # keyword}`, or `{:error, message}` naming the variable when ECS_PEERS_TLS_CA is unset.
  def read_config(env) do
    with {:ok, ca} <- required(env, "ECS_PEERS_TLS_CA") do
      case Map.get(env, "ECS_PEERS_TLS_VALIDITY", "") |> String.trim() do
        "" -> {:ok, [tls_ca: ca]}
        validity -> {:ok, [tls_ca: ca, tls_validity: validity]}
      end
    end
  end

  defp required(env, var) do
    case Map.get(env, var, "") |> String.trim() do
      "" ->
        {:error,
         "#{var} is not set: set it to the ARN of the cluster CA's secret (the tls_ca key), " <>
           "or start the VM without -proto_dist ecs_peers_tls"}

      value ->
        {:ok, value}
    end
  end

  defp check_credentials(
         {:ok,
          %{
            cert: c,
            key: {:ECPrivateKey, k},
            cacerts: [_ | _] = cas,
            not_after: t,
            renew_at: r
          } = creds}
       )
       when is_binary(c) and is_binary(k) and is_integer(t) and is_integer(r) do
    if Enum.all?(cas, &is_binary/1),
      do: {:ok, creds},
      else: {:error, "the credentials' cacerts are not DER binaries"}
  end

  defp check_credentials({:error, message}) when is_binary(message), do: {:error, message}

  # Never inspected whole: it may hold a private key.
  defp check_credentials(other) do
    shape =
      case other do
        {:ok, %{} = map} -> "{:ok, map with keys #{inspect(Map.keys(map))}}"
        _ -> "a term that is neither {:ok, map} nor {:error, message}"
      end

    {:error,
     "the issuer returned #{shape}; expected {:ok, %{cert: der, key: {:ECPrivateKey, der}, cacerts: [der], not_after: unix_seconds, renew_at: unix_seconds, names: [string]}} or {:error, message}"}
  end
end
