#!/usr/bin/env bash
# Runs every Petrel test on a fresh machine: installs what it needs, builds, tests.
# This is the README's test command (`make test`); .ci/run calls it and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
# chromium and its driver are for the stock page's browser tests; socat, tinyproxy and
# dante-server for TLS and proxy tests; redis-server and nginx for the cluster (nginx also for
# the stock page behind proxies, Tests/Browser/test_page_proxies.py); rabbitmq-server
# (Web-STOMP) as the reference broker for the STOMP client tests; iptables for the partition
# between network namespaces (Tests/Faults/test_netns.py); libisal-dev for
# the second compression engine (built in when present; PETREL_REQUIRE_ISAL makes its absence fail).
bash tools/apt.sh pkg-config zlib1g-dev libssl-dev libisal-dev valgrind binutils g++ chromium chromium-driver socat tinyproxy dante-server libhiredis-dev redis-server nginx rabbitmq-server iptables

step "python venv (.venv, pinned in tools/requirements.txt)"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r tools/requirements.txt
export PETREL_PYTHON="$root/.venv/bin/python"
export PETREL_REQUIRE_ISAL=1

step "source rules"
# PetrelCore is sans-I/O and portable: no Foundation, and no existentials on its paths.
# PetrelRuntime's hot paths use Glibc and Synchronization only.
for dir in Sources/PetrelCore Sources/PetrelRuntime; do
    if grep -rn "import Foundation" "$dir"; then
        echo "error: $dir must not import Foundation" >&2
        exit 1
    fi
done
# (grep -n prints file:line: before each line, so doc comments are told apart after that prefix.)
if grep -rnE "\bany [A-Z]" Sources/PetrelCore --include=*.swift | grep -vE '^[^:]+:[0-9]+:\s*///'; then
    echo "error: PetrelCore must not use existentials (any P)" >&2
    exit 1
fi
# Synchronization.Mutex locks with futex calls ThreadSanitizer cannot see: state shared between
# threads goes through PetrelRuntime's Lock (a pthread mutex under -DPETREL_TSAN) everywhere else.
if grep -rnE "\bMutex\b" Sources Tests --include=*.swift | grep -v '^Sources/PetrelRuntime/Loop/Lock.swift:' | grep -vE '^[^:]+:[0-9]+:\s*//'; then
    echo "error: use Lock, not Synchronization.Mutex (ThreadSanitizer cannot see a Mutex)" >&2
    exit 1
fi
echo "ok"

step "swift test (unit, runtime, interop with websockets)"
# Swift 6 language mode with complete concurrency checking: the library builds with no warning
# (a new clone builds every file, so every warning shows here).
build_log=$(mktemp)
swift build --build-tests 2>&1 | tee "$build_log"
if grep -E "^/[^:]*/Sources/[^:]*:[0-9]+:[0-9]+: warning:" "$build_log" | sort -u; then
    echo "error: the library builds with warnings (above)" >&2
    exit 1
fi
rm -f "$build_log"
# The cooperative pool held to one thread: a test that blocks a pool thread (a blocking accept
# in a task, say) then fails here on every run, not only on a busy CI machine.
LIBDISPATCH_COOPERATIVE_POOL_STRICT=1 swift test --skip-build

step "the async API from a package of its own (examples/swift-async: cancel the server's task, see it stop)"
swift test --package-path examples/swift-async

step "swift test under AddressSanitizer and LeakSanitizer (tools/lsan.supp: the test runners' own allocations)"
swift build --build-tests --sanitize=address --scratch-path .build-asan -Xcc -DPETREL_LIBC_SYSCALLS
LSAN_OPTIONS="suppressions=$root/tools/lsan.supp" swift test --skip-build --sanitize=address --scratch-path .build-asan -Xcc -DPETREL_LIBC_SYSCALLS

step "swift test under ThreadSanitizer (-DPETREL_TSAN: locks on pthread mutexes, which TSan sees)"
swift build --build-tests --sanitize=thread --scratch-path .build-tsan -Xswiftc -DPETREL_TSAN -Xcc -DPETREL_LIBC_SYSCALLS
TSAN_OPTIONS="halt_on_error=1" swift test --skip-build --sanitize=thread --scratch-path .build-tsan -Xswiftc -DPETREL_TSAN -Xcc -DPETREL_LIBC_SYSCALLS
# And the churn soak (publishing from another thread while 4 workers connect and drop), shorter.
swift build --sanitize=thread --scratch-path .build-tsan -Xswiftc -DPETREL_TSAN -Xcc -DPETREL_LIBC_SYSCALLS --product petrel-soak
TSAN_OPTIONS="halt_on_error=1" .build-tsan/debug/petrel-soak --cycles 20000

step "C ABI: libpetrel.so, the header contract, C tests under valgrind, the C example"
make lib
prefix="$root/.build/c-prefix"
rm -rf "$prefix"
make install PREFIX="$prefix" >/dev/null
bash Tests/C/contract.sh "$prefix"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# Throwaway certificates for the TLS tests, made by the openssl command.
export PETREL_TEST_CERTS="$root/.build/test-certs"
rm -rf "$PETREL_TEST_CERTS"
bash Tests/TLS/make-certs.sh "$PETREL_TEST_CERTS"
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags petrel) Tests/C/test_petrel.c $(pkg-config --libs petrel) -lpthread \
    -Wl,-rpath,"$prefix/lib" -o .build/c-tests
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 -q .build/c-tests
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags petrel) Tests/C/test_engine.c $(pkg-config --libs petrel) -lpthread \
    -Wl,-rpath,"$prefix/lib" -o .build/c-engine-tests
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 -q .build/c-engine-tests
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags petrel) Tests/C/test_flow.c $(pkg-config --libs petrel) -lpthread \
    -Wl,-rpath,"$prefix/lib" -o .build/c-flow-tests
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 -q .build/c-flow-tests
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags petrel) Tests/C/test_stomp.c $(pkg-config --libs petrel) -lpthread \
    -Wl,-rpath,"$prefix/lib" -o .build/c-stomp-tests
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 -q .build/c-stomp-tests
# A malloc'd pointer per connection, freed in on_close: nothing leaks (111 made, 111 freed).
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags petrel) Tests/C/test_conn_data.c $(pkg-config --libs petrel) -lpthread \
    -Wl,-rpath,"$prefix/lib" -o .build/c-conn-data-tests
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 -q .build/c-conn-data-tests
# Visiting the open connections while clients come and go: no pointer freed under a visitor.
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags petrel) Tests/C/test_each_conn.c $(pkg-config --libs petrel) -lpthread \
    -Wl,-rpath,"$prefix/lib" -o .build/c-each-conn-tests
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 -q .build/c-each-conn-tests
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags petrel) Tests/C/test_ping_subprotocol_refusal.c $(pkg-config --libs petrel) -lpthread \
    -Wl,-rpath,"$prefix/lib" -o .build/c-ping-subprotocol-refusal-tests
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 -q .build/c-ping-subprotocol-refusal-tests
# The reconnecting client: a server restarting it twice, the states, the last event id it presents.
cc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags petrel) Tests/C/test_reconnect.c $(pkg-config --libs petrel) -lpthread \
    -Wl,-rpath,"$prefix/lib" -o .build/c-reconnect-tests
valgrind --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=3 -q .build/c-reconnect-tests
bash Tests/C/example.sh "$prefix"

step "Python bindings: pip install ./bindings/python, then pytest (with websockets)"
.venv/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./bindings/python
PETREL_LIBRARY="$prefix/lib/libpetrel.so" .venv/bin/python -m pytest bindings/python/tests -q -p no:cacheprovider

step "Python types: mypy --strict on the package and the Python examples"
MYPYPATH=bindings/python/src .venv/bin/python -m mypy --strict bindings/python/src/petrel examples/stock-python/stock_server.py examples/cluster/cluster.py

step "Python package as a new user gets it: pip wheel (py3-none-linux_x86_64, with libpetrel.so), pip install into a fresh venv with no PETREL_LIBRARY, an asyncio echo answering websockets"
bash bindings/python/tests/package.sh python3

step "the client through real proxies: tinyproxy (CONNECT, Basic auth, https:// via socat), dante (SOCKS5)"
PETREL_LIBRARY="$prefix/lib/libpetrel.so" .venv/bin/python -m pytest Tests/Proxy -q -p no:cacheprovider

step "hostile networks: Tests/Faults/faultproxy.py between real peers (chunked, slow, stalled, reset, black-holed), and clients that reconnect and resume through it"
PETREL_LIBRARY="$prefix/lib/libpetrel.so" .venv/bin/python -m pytest Tests/Faults -q -p no:cacheprovider

step "stock demo: three servers, the page in headless Chromium (direct, and behind nginx: WebSocket, stripped upgrade, buffering, TLS; behind tinyproxy refusing CONNECT; restarts, CORS), 1,000 WebSocket + 100 SSE clients, and 1,000 clients beside 5,000 slowloris connections"
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" make -C examples/stock-c
swift build -c release --package-path examples/stock-swift
PETREL_LIBRARY="$prefix/lib/libpetrel.so" .venv/bin/python -m pytest Tests/Browser -q -p no:cacheprovider
.venv/bin/python Tests/Load/stock_load.py
.venv/bin/python Tests/Load/slowloris.py

step "STOMP: stomp.py (a real client) against the stock server at /stomp, and the same tests against RabbitMQ's Web-STOMP"
.venv/bin/python -m pytest Tests/Stomp -q -p no:cacheprovider -rx

step "cluster: redis-server, the three stock servers and nginx; a server killed under 1,000 WebSocket + 100 SSE clients, Redis restarted, the page in Chromium"
PETREL_PREFIX="$prefix" .venv/bin/python -m pytest Tests/Cluster -q -p no:cacheprovider

step "fuzzing: every libFuzzer harness for a short budget (Fuzz/run.sh; the long budget is on demand)"
bash Fuzz/run.sh "${FUZZ_SECONDS:-20}"

step "release build of the conformance peers"
swift build -c release --product petrel-echo
swift build -c release --product petrel-autobahn-client
swift build -c release --product petrel-soak

step "soak and churn: 100,000 connect/handshake/close cycles (clean, reset, half-open, mid-handshake) while publishing"
.build/release/petrel-soak --cycles 100000

step "Autobahn conformance via kosoku: the Petrel server (fuzzingclient)"
export KOSOKU="$root/.venv/bin/kosoku"
log=$(mktemp)
.build/release/petrel-echo --port 0 >"$log" 2>&1 &
echo_pid=$!
trap 'kill $echo_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\)$/\1/p' "$log")
[ -n "$port" ] || { cat "$log"; echo "petrel-echo did not start" >&2; exit 1; }
bash Tests/Conformance/run.sh server "$port"
kill "$echo_pid"
trap - EXIT

step "Autobahn cases 1.* to 7.* over wss:// (kosoku speaks ws only: a socat TLS tunnel carries it)"
.build/release/petrel-echo --port 0 --tls-cert "$PETREL_TEST_CERTS/server.pem" --tls-key "$PETREL_TEST_CERTS/server.key" >"$log" 2>&1 &
echo_pid=$!
trap 'kill $echo_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.1; done
tls_port=$(sed -n 's/.*listening (TLS) on .*:\([0-9][0-9]*\)$/\1/p' "$log")
[ -n "$tls_port" ] || { cat "$log"; echo "petrel-echo (TLS) did not start" >&2; exit 1; }
tunnel_port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
socat "TCP-LISTEN:$tunnel_port,bind=127.0.0.1,reuseaddr,fork" \
    "OPENSSL:127.0.0.1:$tls_port,cafile=$PETREL_TEST_CERTS/ca.pem,commonname=localhost" 2>/dev/null &
socat_pid=$!
trap 'kill $echo_pid $socat_pid 2>/dev/null || true' EXIT
sleep 0.3
REPORT_DIR="$root/.build/conformance/server-tls" KOSOKU_ARGS="-i 1.* -i 2.* -i 3.* -i 4.* -i 5.* -i 6.* -i 7.*" \
    bash Tests/Conformance/run.sh server "$tunnel_port"
kill "$echo_pid" "$socat_pid"
trap - EXIT

step "Autobahn cases 1.* to 7.* through the fault proxy, every write cut at random (1 to 64 bytes)"
.build/release/petrel-echo --port 0 >"$log" 2>&1 &
echo_pid=$!
trap 'kill $echo_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\)$/\1/p' "$log")
[ -n "$port" ] || { cat "$log"; echo "petrel-echo did not start" >&2; exit 1; }
proxy_log=$(mktemp)
.venv/bin/python Tests/Faults/faultproxy.py "$port" --chunking random >"$proxy_log" 2>&1 &
proxy_pid=$!
trap 'kill $echo_pid $proxy_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q -- "->" "$proxy_log" && break; sleep 0.1; done
proxy_port=$(sed -n 's/^127.0.0.1:\([0-9][0-9]*\) ->.*/\1/p' "$proxy_log")
[ -n "$proxy_port" ] || { cat "$proxy_log"; echo "the fault proxy did not start" >&2; exit 1; }
REPORT_DIR="$root/.build/conformance/server-chunked" KOSOKU_ARGS="-i 1.* -i 2.* -i 3.* -i 4.* -i 5.* -i 6.* -i 7.*" \
    bash Tests/Conformance/run.sh server "$proxy_port"
kill "$echo_pid" "$proxy_pid"
trap - EXIT
rm -f "$proxy_log"

step "Autobahn conformance via kosoku: the Petrel client (fuzzingserver)"
bash Tests/Conformance/run.sh client .build/release/petrel-autobahn-client
