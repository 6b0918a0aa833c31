defmodule EcsPeers.Test.MetadataServer do
  @moduledoc false
  # A stand-in for the two HTTP endpoints a task reads at boot, on a loopback port:
  # - the ECS task metadata endpoint v4 (`$ECS_CONTAINER_METADATA_URI_V4` and `.../task`), with
  #   documents shaped like ECS's for awsvpc/Fargate, EC2 bridge and EC2 host tasks;
  # - EC2's instance metadata service with IMDSv2 only (a PUT for a token, then GETs that must
  #   carry it; without it: 401, as an instance with IMDSv2 required answers).

  @token "test-imds-token"

  def start(routes) do
    {:ok, listen} =
      :gen_tcp.listen(0, [
        :binary,
        ip: {127, 0, 0, 1},
        packet: :http_bin,
        active: false,
        reuseaddr: true
      ])

    {:ok, port} = :inet.port(listen)
    pid = spawn(fn -> accept(listen, routes) end)
    :ok = :gen_tcp.controlling_process(listen, pid)
    %{url: "http://127.0.0.1:#{port}", pid: pid}
  end

  def stop(%{pid: pid}), do: Process.exit(pid, :kill)

  defp accept(listen, routes) do
    case :gen_tcp.accept(listen) do
      {:ok, socket} ->
        serve(socket, routes)
        accept(listen, routes)

      {:error, _} ->
        :ok
    end
  end

  defp serve(socket, routes) do
    with {:ok, {:http_request, method, {:abs_path, path}, _}} <- :gen_tcp.recv(socket, 0, 5_000),
         {:ok, headers} <- headers(socket, %{}) do
      {status, body} = answer(to_string(method), path, headers, routes)

      reply =
        "HTTP/1.1 #{status} X\r\ncontent-length: #{byte_size(body)}\r\nconnection: close\r\n\r\n#{body}"

      :gen_tcp.send(socket, reply)
    end

    :gen_tcp.close(socket)
  end

  defp headers(socket, acc) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, {:http_header, _, name, _, value}} ->
        headers(socket, Map.put(acc, String.downcase(to_string(name)), value))

      {:ok, :http_eoh} ->
        {:ok, acc}

      other ->
        other
    end
  end

  defp answer("PUT", "/latest/api/token", %{"x-aws-ec2-metadata-token-ttl-seconds" => _}, %{
         imds: _
       }),
       do: {200, @token}

  defp answer("GET", "/latest/meta-data/" <> key, headers, %{imds: imds}) do
    cond do
      headers["x-aws-ec2-metadata-token"] != @token -> {401, ""}
      Map.has_key?(imds, key) -> {200, imds[key]}
      true -> {404, ""}
    end
  end

  defp answer("GET", path, _headers, routes) do
    case Map.fetch(routes, path) do
      {:ok, body} -> {200, body}
      :error -> {404, "not found"}
    end
  end

  defp answer(_method, _path, _headers, _routes), do: {405, ""}
end
