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
# The web UI's browser test: Debian's chromium and its driver (never a downloaded browser).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
command -v npm >/dev/null || need_apt+=(npm)
# The dataplane bench's traffic (iperf3 between pods of a node).
command -v iperf3 >/dev/null || need_apt+=(iperf3)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "installing: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# axe-core (npm) for the browser test's accessibility checks, pinned and checked, cached
# outside the clone; it is injected into pages by the test only, never served by Tessera.
AXE_VERSION=4.11.0
AXE_SHA256=e9e5863c33a874f09bc01acd9234b7e3c871479f5eef8802fa582544465e6d01
axe="$HOME/.cache/tessera/axe"
if ! echo "$AXE_SHA256  $axe/node_modules/axe-core/axe.min.js" | sha256sum -c --quiet 2>/dev/null; then
    mkdir -p "$axe"
    npm install --silent --no-audit --no-fund --prefix "$axe" "axe-core@$AXE_VERSION"
    echo "$AXE_SHA256  $axe/node_modules/axe-core/axe.min.js" | sha256sum -c --quiet
fi

# Python peers of the tests, in a project-local virtualenv: aggregate6 (route aggregation
# reference), schemathesis (OpenAPI conformance against a running controller) and moto's EC2
# server (the VPC route tables the real aws-sdk-ec2 talks to).
if [ ! -x .venv/bin/aggregate6 ] || [ ! -x .venv/bin/schemathesis ] || [ ! -x .venv/bin/moto_server ]; then
    [ -x .venv/bin/pip ] || python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check 'aggregate6==1.0.15' 'schemathesis==4.32.5' 'moto[server]==5.2.6'
fi

# The operator's tests run the real kube-apiserver and etcd, built from Go (1.24 or newer) at a
# pinned release and cached outside the clone (~/.cache/tessera). Without a new enough Go, the
# toolchain comes from the Go module proxy (golang.org/toolchain), as `GOTOOLCHAIN` would fetch it.
go_ok() { command -v go >/dev/null && [ "$(printf '%s\n' go1.24 "$(go env GOVERSION)" | sort -V | head -1)" = go1.24 ]; }
if ! go_ok; then
    toolchain="$HOME/.cache/tessera/go1.24.13"
    if [ ! -x "$toolchain/bin/go" ]; then
        command -v curl >/dev/null && command -v unzip >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl unzip; }
        mkdir -p "$toolchain.tmp"
        curl -fsSL "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go1.24.13.linux-amd64.zip" -o "$toolchain.zip"
        unzip -q "$toolchain.zip" -d "$toolchain.tmp"
        mv "$toolchain.tmp/golang.org/toolchain@v0.0.1-go1.24.13.linux-amd64" "$toolchain"
        rm -rf "$toolchain.tmp" "$toolchain.zip"
    fi
    export PATH="$toolchain/bin:$PATH"
fi
bash tests/kube/build.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The integration tests run the binaries (controller, CLI) as processes: build them first.
cargo build --workspace --bins --locked
cargo test --workspace --locked
