#!/usr/bin/env bash
# Petrel next to its peers, whole servers under load: builds everything in release mode, then
# runs Benchmarks/bench.py (every scenario for every server, in alternation, server pinned to
# CPU 0 and load generator to CPU 1) and writes .build/bench/results.md.
#
#   bash Benchmarks/run.sh                         # 3 rounds, every server, every scenario
#   bash Benchmarks/run.sh --rounds 1 --servers petrel,nio --scenarios echo-100x16
#   bash Benchmarks/run.sh --micro                 # also the Swift microbenchmarks
#   bash Benchmarks/run.sh --work                  # instead: instructions per message under callgrind (work.py)
#
# Peers: libwebsockets (Debian's libwebsockets-dev), Python websockets and picows (PyPI, pinned in
# Benchmarks/peers/requirements.txt, with uvloop), SwiftNIO's NIOWebSocket (Benchmarks/peers/nio-echo).
# Petrel three ways: petrel-echo (Swift), Benchmarks/servers/petrel-c-echo (C through libpetrel.so)
# and Benchmarks/servers/petrel_python_echo.py (the Python bindings).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
micro=0
work=0
args=()
for a in "$@"; do
    if [ "$a" = "--micro" ]; then micro=1; elif [ "$a" = "--work" ]; then work=1; else args+=("$a"); fi
done

echo "==> packages and the Python venv"
bash tools/apt.sh pkg-config zlib1g-dev libssl-dev libwebsockets-dev util-linux libhiredis-dev redis-server valgrind
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tools/requirements.txt -r Benchmarks/peers/requirements.txt

echo "==> release builds"
swift build -c release --product petrel-echo
make lib
make -C Benchmarks/servers petrel-c-echo
make -C Benchmarks/load
make -C Benchmarks/peers lws-echo
swift build -c release --package-path Benchmarks/peers/nio-echo

# 10,000 subscribers and idle connections need more descriptors than the default 1,024.
ulimit -n "$(ulimit -Hn)"
if [ "$micro" = 1 ]; then
    echo "==> microbenchmarks (CPU 0)"
    swift build -c release --package-path Benchmarks --product petrel-microbench
    taskset -c 0 Benchmarks/.build/release/petrel-microbench | tee .build/bench-micro.txt
fi
if [ "$work" = 1 ]; then
    echo "==> work: instructions per message, delivery and handshake under callgrind"
    .venv/bin/python Benchmarks/work.py "${args[@]}"
    exit 0
fi
echo "==> load runs"
.venv/bin/python Benchmarks/bench.py "${args[@]}"
