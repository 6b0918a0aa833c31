# Offline test builds only (ECS_PEERS_OFFLINE=1, no Hex): a stand-in for the :telemetry library's
# execute/3 and attach/4, so the strategy's events can be tested. With Hex, the real library is
# used instead and this file is not compiled.
defmodule :telemetry do
  @moduledoc false

  def attach(id, event, fun, config) do
    :persistent_term.put({__MODULE__, id}, {event, fun, config})
    :ok
  end

  def detach(id), do: :persistent_term.erase({__MODULE__, id})

  def execute(event, measurements, metadata) do
    for {{__MODULE__, id}, {^event, fun, config}} <- :persistent_term.get() do
      fun.(event, measurements, metadata, config)
      id
    end

    :ok
  end
end
