#!/usr/bin/env bash
# Builds examples/c-echo against the installed library with pkg-config, starts it, checks that
# the websockets library gets its message echoed, and that SIGTERM stops it.
# Usage: example.sh PREFIX   (PETREL_PYTHON: a Python with websockets)
set -euo pipefail
prefix=$1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
bin=$(mktemp -d)/echo
cc -std=c11 -Wall -Wextra -Werror "$here/examples/c-echo/echo.c" $(pkg-config --cflags --libs petrel) -Wl,-rpath,"$prefix/lib" -o "$bin"
port=$("${PETREL_PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" "$port" > "$bin.log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q "echo server" "$bin.log" && break; sleep 0.1; done
"${PETREL_PYTHON:-python3}" - "$port" <<'PY'
import asyncio, sys, websockets
async def main():
    async with websockets.connect(f"ws://127.0.0.1:{sys.argv[1]}/") as ws:
        await ws.send("ping from websockets")
        assert await ws.recv() == "ping from websockets"
asyncio.run(main())
PY
kill -TERM "$pid"
for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
    echo "example: echo did not stop on SIGTERM"
    kill -9 "$pid"
    echo "example: 0 passed, 1 failed"
    exit 1
fi
wait "$pid"
echo "example: 1 passed, 0 failed"
