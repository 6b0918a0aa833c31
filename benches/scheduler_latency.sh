#!/usr/bin/env bash
# Measures the scheduler latency EcsPeers.Strategy adds while polling TASKS ECS tasks (default 10000).
# Takes a few minutes: the emulator is slow to seed and describe that many tasks.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
TASKS="${1:-10000}"
SECONDS_PER_WINDOW="${2:-20}"
ensure_rust
ensure_awsemu_venv
ensure_elixir
build_nif release
cargo build --locked --release --quiet --bin ecs-peers
elixir_env
(cd elixir && mix compile >/dev/null)

PORT=$("$AWSEMU_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ENDPOINT="http://127.0.0.1:$PORT"
tests/awsemu/run -H 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
EMU=$!
trap 'kill $EMU 2>/dev/null || true' EXIT
"$AWSEMU_PYTHON" -c 'import sys,time,urllib.request
for _ in range(300):
    try: urllib.request.urlopen(sys.argv[1] + "/moto-api/", timeout=1); sys.exit(0)
    except OSError: time.sleep(0.1)
sys.exit("awsemu did not start")' "$ENDPOINT"

step "seeding $TASKS tasks"
"$AWSEMU_PYTHON" tests/support/world.py "$ENDPOINT" seed "{\"ecs\": [{\"region\": \"eu-west-2\", \"cluster\": \"big\", \"subnet\": \"10.64.0.0/16\", \"tasks\": [{\"family\": \"api\", \"count\": $TASKS, \"group\": \"service:api\"}]}]}" >/dev/null

step "measuring ($SECONDS_PER_WINDOW s per window, $(nproc) cores)"
cd elixir
elixir --erl "+S $(nproc)" -pa _build/test/lib/ecs_peers/ebin ../benches/scheduler_latency.exs \
  "$ENDPOINT" "$TASKS" "$SECONDS_PER_WINDOW" "$ROOT/target/release/ecs-peers" 2>&1 | grep -v -e "\[debug\]" -e "\[info\]" -e '^$'

