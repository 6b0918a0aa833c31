#!/usr/bin/env bash
# Prints AWS API calls per poll (first, steady state, after churn), counted by the SDK interceptor.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_awsemu_venv
cargo build --release --quiet --bin ecs-peers
"$AWSEMU_PYTHON" benches/api_calls.py
