#!/usr/bin/env bash
# Runs every Petrel test on a fresh machine: installs what it needs, builds, tests.
# This is the README's test command (`make test`); .ci/run calls it and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need=()
for pkg in pkg-config zlib1g-dev libssl-dev python3; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

step "source rules"
# PetrelCore is sans-I/O and portable: no Foundation, and no existentials on its paths.
if grep -rn "import Foundation" Sources/PetrelCore; then
    echo "error: PetrelCore must not import Foundation" >&2
    exit 1
fi
if grep -rnE "\bany [A-Z]" Sources/PetrelCore --include=*.swift | grep -v '^\s*///'; then
    echo "error: PetrelCore must not use existentials (any P)" >&2
    exit 1
fi
echo "ok"

step "swift test"
swift build --build-tests
swift test --skip-build
