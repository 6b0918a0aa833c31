#!/usr/bin/env bash
# Fleet-wide AWS calls per minute with and without fleet-shared polling, counted at the emulator,
# for 2, 5, 10 and 20 BEAM nodes over two regions in the namespace test bed; convergence and
# memory per size (BENCHMARKS.md "Fleet-shared polling"). Needs root.
# Usage: benches/sharing_calls.sh [--sizes 2,5,10,20] [--modes off,on] [--window 30] [--interval-ms 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
ensure_awsemu_venv
ensure_elixir
ensure_testbed_tools
build_nif debug
(elixir_env; cd elixir; mix compile >/dev/null)
exec python3 benches/sharing_calls.py "$@"
