#!/usr/bin/env bash
# Autobahn WebSocket conformance via kosoku (PyPI: `pip install kosoku`).
#
#   run.sh server PORT     kosoku (fuzzingclient) drives the server under test,
#                          already listening on ws://127.0.0.1:PORT/
#   run.sh client CMD...   kosoku (fuzzingserver) listens on a free port and
#                          CMD... ws://127.0.0.1:PORT is run; CMD must follow the
#                          Autobahn client protocol: /getCaseCount, then
#                          /runCase?case=N&agent=NAME for N=1..count (echoing every
#                          message), then /updateReports?agent=NAME.
#
# Environment:
#   KOSOKU        kosoku executable (default: kosoku on PATH)
#   REPORT_DIR    report directory (default: <repo>/.build/conformance/<mode>)
#   KOSOKU_ARGS   extra kosoku arguments, e.g. "-i 1.* -x 12.* -x 13.*"
#                 (not glob-expanded by the shell); -p N parallelises server mode
#
# Prints a tally per behavior and every case that is not clean (see tally.py);
# exits 0 if all clean, 1 if any case is not, 2 on a harness error.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
KOSOKU="${KOSOKU:-kosoku}"
read -r -a extra <<<"${KOSOKU_ARGS:-}"

usage() {
  echo "usage: $0 server PORT | $0 client CMD [ARGS...]" >&2
  exit 2
}

command -v "$KOSOKU" >/dev/null 2>&1 || {
  echo "conformance: kosoku not found (set KOSOKU or: pip install kosoku)" >&2
  exit 2
}

mode="${1:-}"
[ $# -ge 2 ] || usage
shift
case "$mode" in server | client) ;; *) usage ;; esac

report_dir="${REPORT_DIR:-$repo/.build/conformance/$mode}"
mkdir -p "$report_dir"
rm -f "$report_dir/index.json" # never tally a stale run
log="$report_dir/kosoku.log"

# Minimal stdlib WebSocket GET (for /getCaseCount and /updateReports): prints
# the first text message, if any, then closes.
ws_get() {
  python3 - "$1" "$2" <<'PY'
import base64, os, socket, struct, sys
port, path = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=30)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
buf = b""
while b"\r\n\r\n" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit(0)
    buf += chunk
if b" 101 " not in buf.split(b"\r\n", 1)[0]:
    sys.exit("unexpected handshake response: %r" % buf[:200])
buf = buf.split(b"\r\n\r\n", 1)[1]
def need(n):
    global buf
    while len(buf) < n:
        chunk = s.recv(4096)
        if not chunk:
            raise EOFError
        buf += chunk
try:
    need(2)
    op, ln = buf[0] & 0x0F, buf[1] & 0x7F
    hdr = 2
    if ln == 126:
        need(4); ln = struct.unpack("!H", buf[2:4])[0]; hdr = 4
    elif ln == 127:
        need(10); ln = struct.unpack("!Q", buf[2:10])[0]; hdr = 10
    need(hdr + ln)
    if op == 1:
        print(buf[hdr:hdr + ln].decode())
    s.sendall(b"\x88\x82" + b"\0\0\0\0" + struct.pack("!H", 1000))  # masked close, zero mask
except (EOFError, OSError):
    pass
s.close()
PY
}

run_server_mode() {
  local port="$1"
  [[ "$port" =~ ^[0-9]+$ ]] || usage
  echo "conformance: kosoku fuzzingclient -> ws://127.0.0.1:$port/ (log: $log)"
  local start=$SECONDS rc=0
  "$KOSOKU" -m fuzzingclient -o "$report_dir" ${extra[@]+"${extra[@]}"} \
    "ws://127.0.0.1:$port" >"$log" 2>&1 || rc=$?
  echo "conformance: kosoku finished in $((SECONDS - start))s (exit $rc)"
  python3 "$here/tally.py" "$report_dir"
}

run_client_mode() {
  # Port 0: the OS picks a free port; kosoku prints the one it bound.
  "$KOSOKU" -m fuzzingserver -o "$report_dir" ${extra[@]+"${extra[@]}"} \
    127.0.0.1:0 >"$log" 2>&1 &
  local kpid=$! port="" i
  # shellcheck disable=SC2064
  trap "kill $kpid 2>/dev/null || true" EXIT
  for ((i = 0; i < 100; i++)); do
    port="$(sed -n 's#.*fuzzingserver listening on ws://[^ ]*:\([0-9][0-9]*\).*#\1#p' "$log" | head -n1)"
    [ -n "$port" ] && break
    kill -0 "$kpid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "conformance: kosoku fuzzingserver did not start:" >&2
    cat "$log" >&2
    exit 2
  fi
  local url="ws://127.0.0.1:$port" expect
  expect="$(ws_get "$port" /getCaseCount)"
  echo "conformance: kosoku fuzzingserver at $url serving $expect cases (log: $log)"
  echo "conformance: running: $* $url"
  local start=$SECONDS crc=0
  "$@" "$url" || crc=$?
  echo "conformance: client exited $crc after $((SECONDS - start))s"

  # kosoku writes the reports and exits on /updateReports. If the client
  # never sent it (crash, bug), send it ourselves so partial results land.
  for ((i = 0; i < 50; i++)); do kill -0 "$kpid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$kpid" 2>/dev/null; then
    echo "conformance: client did not call /updateReports; requesting it"
    ws_get "$port" "/updateReports?agent=run.sh" >/dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$kpid" 2>/dev/null || break; sleep 0.1; done
  fi
  if kill -0 "$kpid" 2>/dev/null; then
    echo "conformance: kosoku did not exit; killing it" >&2
    kill "$kpid" 2>/dev/null || true
  fi
  wait "$kpid" 2>/dev/null || true
  trap - EXIT

  local trc=0
  python3 "$here/tally.py" "$report_dir" --expect "$expect" || trc=$?
  if [ "$trc" -eq 0 ] && [ "$crc" -ne 0 ]; then
    echo "conformance: FAIL (client command exited $crc)"
    exit 1
  fi
  exit "$trc"
}

if [ "$mode" = server ]; then
  [ $# -eq 1 ] || usage
  run_server_mode "$1"
else
  run_client_mode "$@"
fi
