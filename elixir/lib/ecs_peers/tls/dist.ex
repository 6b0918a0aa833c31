defmodule EcsPeers.TLS.Dist do
  @moduledoc false
  # The `-proto_dist` modules of TLS distribution: `-proto_dist ecs_peers_tls` loads
  # `:ecs_peers_tls_dist` (IPv4, over OTP's `inet_tls_dist`), `-proto_dist ecs_peers_tls6` loads
  # `:ecs_peers_tls6_dist` (IPv6, over `inet6_tls_dist`); kernel's net_kernel names the module
  # `<proto>_dist` (kernel-8.5.3 net_kernel:protocol_childspecs/0). Each forwards every callback
  # of the distribution-module contract (erts "alt_dist" guide) to OTP's module, except:
  #
  # - `childspecs/0`: the options table, the peer list, and ssl's connection supervisors
  #   (`EcsPeers.TLS.childspecs/0`) instead of ssl_dist_sup's optfile;
  # - `accept_connection/5`: the allowed list is always `EcsPeers.TLS.accepted_hosts/0`, never
  #   net_kernel's (empty unless net_kernel:allow/1 was called, and empty means "anyone": with
  #   it, inet_tls_dist checks neither the certificate's names nor the node's claimed name).

  defmacro __using__(otp) do
    quote bind_quoted: [otp: otp] do
      @otp otp

      def childspecs, do: EcsPeers.TLS.childspecs()
      def listen(name, host), do: @otp.listen(name, host)
      def accept(listen), do: @otp.accept(listen)

      def accept_connection(accept_pid, dist_ctrl, my_node, _allowed, setup_time),
        do:
          @otp.accept_connection(
            accept_pid,
            dist_ctrl,
            my_node,
            EcsPeers.TLS.accepted_hosts(),
            setup_time
          )

      def setup(node, type, my_node, long_or_short, setup_time),
        do: @otp.setup(node, type, my_node, long_or_short, setup_time)

      def close(socket), do: @otp.close(socket)
      def select(node), do: @otp.select(node)
      def address, do: @otp.address()
      def is_node_name(node), do: :dist_util.is_node_name(node)
    end
  end
end

defmodule :ecs_peers_tls_dist do
  @moduledoc false
  # -proto_dist ecs_peers_tls: TLS distribution over IPv4 (EcsPeers.TLS).
  use EcsPeers.TLS.Dist, :inet_tls_dist
end

defmodule :ecs_peers_tls6_dist do
  @moduledoc false
  # -proto_dist ecs_peers_tls6: TLS distribution over IPv6 (EcsPeers.TLS).
  use EcsPeers.TLS.Dist, :inet6_tls_dist
end
