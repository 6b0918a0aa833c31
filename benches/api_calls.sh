#!/usr/bin/env bash
# Prints AWS API calls per poll (first, steady state, after churn; ECS on EC2: first, steady, one
# new instance), counted by the SDK interceptor. Usage: benches/api_calls.sh [fargate|ec2|all]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_awsemu_venv
if [ -z "${ECS_PEERS_BIN:-}" ]; then cargo build --release --quiet --bin ecs-peers; fi
"$AWSEMU_PYTHON" benches/api_calls.py "$@"
