# Shared by scripts/test, scripts/demo and benches: install what is missing, idempotently.
# Sourced, not run. Everything it installs is rebuilt from registries (apt, PyPI, crates.io).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The AWS emulator (tests/awsemu, started by tests/awsemu/run) and the venv it runs in.
export AWSEMU_PYTHON="$ROOT/.venv-awsemu/bin/python"

# step TEXT: announces the next step, after the seconds the previous one took (so a run's log
# says where its time went: the issues report what each new step adds to the suite).
step() {
  [ -n "${STEP_STARTED:-}" ] && printf '    (%s s)\n' "$((SECONDS - STEP_STARTED))" >&2
  STEP_STARTED=$SECONDS
  CURRENT_STEP="$*"
  printf '\n==> %s\n' "$*" >&2
}

apt_install() {
  # apt_install PKG...: installs the Debian packages that are not installed yet.
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "apt-get install ${missing[*]}"
  if [ ! -f /tmp/.ecs-peers-apt-updated ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && touch /tmp/.ecs-peers-apt-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null; then
    echo "cargo is not installed: this project needs a Rust toolchain (rustup) of 1.94 or later" >&2
    exit 1
  fi
}

# Every crate of Cargo.lock, for every platform: the Hex package's build resolves the lock
# offline, Windows-only crates included. A no-op (well under a second) once they are cached.
ensure_crates() {
  cargo fetch --locked --quiet
}

# The test command lints while it builds (scripts/clippy-rustc).
ensure_clippy() {
  command -v clippy-driver >/dev/null && return 0
  if command -v rustup >/dev/null; then
    step "rustup component add clippy rustfmt"
    rustup component add clippy rustfmt
  else
    echo "clippy-driver is not installed: install clippy with your Rust toolchain (rustup component add clippy)" >&2
    exit 1
  fi
}

ensure_awsemu_venv() {
  # .venv-awsemu at the repository root, from tests/awsemu/requirements.txt (moto pinned, boto3,
  # pytest for the emulator's self-test); reinstalled when that file changes.
  local req="$ROOT/tests/awsemu/requirements.txt" stamp="$ROOT/.venv-awsemu/.installed"
  if [ -x "$AWSEMU_PYTHON" ] && [ -f "$stamp" ] && cmp -s "$stamp" "$req"; then
    return 0
  fi
  step "installing the AWS emulator's venv (.venv-awsemu) from PyPI"
  python3 -m venv "$ROOT/.venv-awsemu" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$ROOT/.venv-awsemu"; }
  # `python -m pip`, not bin/pip: a venv copied from elsewhere keeps pip's old shebang.
  "$AWSEMU_PYTHON" -m pip install -q --disable-pip-version-check -r "$req"
  cp "$req" "$stamp"
}

# The end-to-end tests build task hosts with iproute2 and firewall them with iptables; the TLS
# bed captures packets with tcpdump and makes certificates with Python's cryptography.
ensure_testbed_tools() {
  command -v ip >/dev/null && command -v iptables >/dev/null || apt_install iproute2 iptables
  command -v tcpdump >/dev/null || apt_install tcpdump
  python3 -c 'import cryptography' 2>/dev/null || apt_install python3-cryptography
}

ensure_elixir() {
  command -v mix >/dev/null && command -v erl >/dev/null || apt_install elixir erlang-nox erlang-dev
}

# Builds the NIF with cargo and puts it where EcsPeers.Native loads it from (priv/native).
build_nif() {
  local profile="${1:-debug}" flag=""
  [ "$profile" = release ] && flag="--release"
  cargo build --locked -p ecs_peers_nif $flag
  mkdir -p "$ROOT/elixir/priv/native"
  cp "$ROOT/target/$profile/libecs_peers_nif.so" "$ROOT/elixir/priv/native/libecs_peers_nif.so"
}

# Environment for the Elixir package without Hex: the libcluster contract double and a cargo-built
# NIF; credentials for the local AWS emulator.
elixir_env() {
  export ECS_PEERS_OFFLINE=1 MIX_ENV="${MIX_ENV:-test}"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true
  export MIX_HOME="${MIX_HOME:-$ROOT/.mix}" HEX_OFFLINE=1
}
