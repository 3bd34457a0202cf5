#!/usr/bin/env bash
# Run every Tessera test on a Debian 12 machine, installing what the tests need first.
# Needs Rust (rustup, 1.94 or newer (aws-sdk-ec2 needs it)) and root for the package installs; CI runs it as root.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15)
command -v setpriv >/dev/null || need_apt+=(util-linux)
command -v pg_isready >/dev/null || [ -x /usr/lib/postgresql/15/bin/pg_isready ] || need_apt+=(postgresql-client-15)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v cc >/dev/null || need_apt+=(build-essential)
command -v nft >/dev/null || need_apt+=(nftables)
command -v ip >/dev/null || need_apt+=(iproute2)
[ -x /usr/lib/cni/portmap ] || need_apt+=(containernetworking-plugins)
command -v iptables >/dev/null || need_apt+=(iptables)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v bird >/dev/null || need_apt+=(bird2)
command -v gobgpd >/dev/null || need_apt+=(gobgpd)
[ -x /usr/lib/frr/bgpd ] || need_apt+=(frr)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# Python peers of the tests, in a project-local virtualenv: aggregate6 (route aggregation
# reference), schemathesis (OpenAPI conformance against a running controller) and moto's EC2
# server (the VPC route tables the real aws-sdk-ec2 talks to).
if [ ! -x .venv/bin/aggregate6 ] || [ ! -x .venv/bin/schemathesis ] || [ ! -x .venv/bin/moto_server ]; then
    [ -x .venv/bin/pip ] || python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check 'aggregate6==1.0.15' 'schemathesis==4.32.5' 'moto[server]==5.2.6'
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The integration tests run the binaries (controller, CLI) as processes: build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
