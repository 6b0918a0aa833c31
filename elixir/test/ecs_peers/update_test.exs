defmodule EcsPeers.UpdateTest do
  # The protocol between the NIF and Elixir has one definition on each side: UpdateTerm in
  # native/ecs_peers_nif/src/encode.rs and %EcsPeers.Update{}. No emulator needed.
  use ExUnit.Case, async: true

  test "the NIF encodes exactly the fields of %EcsPeers.Update{}" do
    ours = EcsPeers.Update.__struct__() |> Map.keys() |> List.delete(:__struct__) |> Enum.sort()
    assert Enum.sort(names(EcsPeers.Native.update_fields())) == ours
    assert EcsPeers.Update.check_nif() == :ok
  end

  test "every field of the struct is documented in its type" do
    {:docs_v1, _, _, _, _, _, docs} = Code.fetch_docs(EcsPeers.Update)
    [typedoc] = for {{:type, :t, 0}, _, _, %{"en" => doc}, _} <- docs, do: doc

    for field <- names(EcsPeers.Native.update_fields()) do
      assert typedoc =~ "`#{field}`", "EcsPeers.Update's @typedoc does not document #{field}"
    end
  end

  test "a NIF that names other fields is refused, naming them" do
    fields = EcsPeers.Native.update_fields()

    assert {:error, message} = EcsPeers.Update.check_fields([:new_field | fields -- [:dial]])
    assert message =~ "fields only the NIF has: [:new_field]; only EcsPeers.Update has: [:dial]"
  end

  test "a NIF whose source statuses lack a key this package reads is refused, naming it" do
    fields = EcsPeers.Native.update_fields()
    assert [{:sources, keys}] = for({:sources, _} = f <- fields, do: f)
    assert :state in keys and :ok in keys

    # A NIF of the protocol before source states: `sources` without its keys.
    old =
      Enum.map(fields, fn
        {:sources, _} -> :sources
        f -> f
      end)

    assert {:error, message} = EcsPeers.Update.check_fields(old)
    assert message =~ "its source statuses have no [:id, :state"

    without_state =
      Enum.map(fields, fn
        {:sources, k} -> {:sources, k -- [:state]}
        f -> f
      end)

    assert {:error, message} = EcsPeers.Update.check_fields(without_state)
    assert message =~ "its source statuses have no [:state]"
  end

  defp names(fields),
    do:
      Enum.map(fields, fn
        {name, _} -> name
        name -> name
      end)
end
