defmodule EcsPeers.TlsCredentialsTest do
  # EcsPeers.Native.tls_credentials/1 against the emulator: two tasks at loopback addresses
  # (a 127.0.0.0/24 subnet gives 127.0.0.4 and .5) get certificates from a cluster CA kept in
  # Secrets Manager, and OTP's own ssl takes them as issued: public_key decodes them, and a
  # loopback handshake with verify_peer both ways succeeds with the hostname check OTP 25's
  # distribution makes (SNI = the node name's host, checked as a dNSName), and fails for a name
  # the certificate does not carry. The test CA is made here (Python `cryptography`, in the
  # emulator's venv); no key material is committed.
  use ExUnit.Case, async: false

  alias EcsPeers.Test.Emu

  @moduletag :emulator
  # ssl logs the refused handshake of the name check at notice level.
  @moduletag :capture_log
  @region "eu-west-2"

  # A fresh P-256 CA, stored as the secret `name` (certificate and key, PEM, concatenated);
  # prints the CA certificate's PEM.
  @make_ca ~S"""
  import datetime, sys, boto3
  from cryptography import x509
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import NameOID
  endpoint, region, name = sys.argv[1:4]
  key = ec.generate_private_key(ec.SECP256R1())
  dn = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exunit cluster CA")])
  now = datetime.datetime.now(datetime.timezone.utc)
  cert = (x509.CertificateBuilder().subject_name(dn).issuer_name(dn).public_key(key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
  cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
  key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()).decode()
  boto3.client("secretsmanager", region_name=region, endpoint_url=endpoint).create_secret(
      Name=name, SecretString=cert_pem + key_pem)
  print(cert_pem, end="")
  """

  setup_all do
    {:ok, _} = Application.ensure_all_started(:ssl)
    emu = Emu.shared()
    cluster = "tls-#{System.unique_integer([:positive])}"

    Emu.seed(emu, %{
      ecs: [%{region: @region, cluster: cluster, subnet: "127.0.0.0/24", tasks: []}]
    })

    tasks =
      Emu.run_tasks(emu, %{
        region: @region,
        cluster: cluster,
        subnet: "127.0.0.0/24",
        family: "api",
        count: 2
      })

    secret = "ecs-peers/#{cluster}/ca"

    {ca_pem, 0} =
      System.cmd(emu.python, ["-c", @make_ca, emu.endpoint, @region, secret],
        env: [{"AWS_ACCESS_KEY_ID", "test"}, {"AWS_SECRET_ACCESS_KEY", "test"}]
      )

    [{:Certificate, ca_der, :not_encrypted}] = :public_key.pem_decode(ca_pem)
    %{emu: emu, tasks: tasks, secret: secret, ca_der: ca_der}
  end

  defp config(ctx, task, tls_ca \\ nil) do
    [
      tls_ca: tls_ca || ctx.secret,
      tls_validity: "10m",
      endpoint_url: ctx.emu.endpoint,
      metadata_url: task["metadata_uri"],
      max_attempts: 1
    ]
  end

  defp issue(ctx, task) do
    assert {:ok, creds} = EcsPeers.Native.tls_credentials(config(ctx, task))
    creds
  end

  test "the certificate decodes with public_key and names the task's address", ctx do
    [task | _] = ctx.tasks
    ip = task["ip"]
    creds = issue(ctx, task)
    assert %{cert: cert, key: {:ECPrivateKey, key}, cacerts: [ca], not_after: not_after} = creds
    assert ca == ctx.ca_der
    assert creds.names == [ip, task["dns"]]
    assert creds.renew_at < not_after

    otp_cert = :public_key.pkix_decode_cert(cert, :otp)
    assert :public_key.pkix_is_issuer(otp_cert, :public_key.pkix_decode_cert(ca, :otp))
    {:ok, ip_tuple} = :inet.parse_address(String.to_charlist(ip))
    assert :public_key.pkix_verify_hostname(otp_cert, [{:ip, ip_tuple}])
    assert :public_key.pkix_verify_hostname(otp_cert, [{:dns_id, String.to_charlist(ip)}])
    refute :public_key.pkix_verify_hostname(otp_cert, [{:dns_id, ~c"127.0.0.99"}])

    assert {:ECPrivateKey, _, _, {:namedCurve, _}, _, _} =
             :public_key.der_decode(:ECPrivateKey, key)
  end

  test "two issued certificates complete a mutual loopback handshake that checks names", ctx do
    [a, b] = ctx.tasks
    server = issue(ctx, a)
    client = issue(ctx, b)
    {:ok, server_ip} = :inet.parse_address(String.to_charlist(a["ip"]))
    {:ok, client_ip} = :inet.parse_address(String.to_charlist(b["ip"]))

    {:ok, listen} =
      :ssl.listen(0, [
        {:ip, server_ip},
        {:cert, server.cert},
        {:key, server.key},
        {:cacerts, server.cacerts},
        {:verify, :verify_peer},
        {:fail_if_no_peer_cert, true},
        {:versions, [:"tlsv1.2"]},
        {:reuseaddr, true}
      ])

    {:ok, {_, port}} = :ssl.sockname(listen)
    parent = self()

    acceptor =
      spawn_link(fn ->
        for _ <- 1..2 do
          {:ok, socket} = :ssl.transport_accept(listen)

          case :ssl.handshake(socket, 5000) do
            {:ok, s} ->
              {:ok, peer} = :ssl.peercert(s)
              send(parent, {:server_saw, peer})

            {:error, _} ->
              :ok
          end
        end
      end)

    connect = fn sni ->
      :ssl.connect(
        server_ip,
        port,
        [
          {:ip, client_ip},
          {:cert, client.cert},
          {:key, client.key},
          {:cacerts, client.cacerts},
          {:verify, :verify_peer},
          {:server_name_indication, sni},
          {:versions, [:"tlsv1.2"]}
        ],
        5000
      )
    end

    # As OTP 25's inet_tls_dist dials: SNI is the node name's host, an IP address as a string.
    assert {:ok, socket} = connect.(String.to_charlist(a["ip"]))
    assert_receive {:server_saw, peer_cert}, 5000
    assert peer_cert == client.cert
    :ssl.close(socket)

    # A name the server's certificate does not carry is refused.
    assert {:error, {:tls_alert, {_, why}}} = connect.(String.to_charlist(b["ip"]))
    assert to_string(why) =~ "hostname_check_failed"

    Process.unlink(acceptor)
    :ssl.close(listen)
  end

  test "a missing secret is an error naming tls_ca and the fix", ctx do
    [task | _] = ctx.tasks

    assert {:error, message} =
             EcsPeers.Native.tls_credentials(config(ctx, task, "ecs-peers/none"))

    assert message =~ "tls_ca: cannot read the cluster CA ecs-peers/none"
    assert message =~ "create the secret"
  end

  test "a config that is not valid names the key" do
    assert {:error, message} = EcsPeers.Native.tls_credentials(tls_ca: "not a name")
    assert message =~ "tls_ca: "
  end
end
