#!/usr/bin/env bash
# AWS calls per minute of an ECS source with `regions` (1, 3 and every region of the aws
# partition), fleet-shared polling off and on, counted at the emulator (BENCHMARKS.md "regions").
# Usage: benches/regions_calls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
ensure_awsemu_venv
exec cargo bench --bench regions_calls
