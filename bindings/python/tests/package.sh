#!/usr/bin/env bash
# The package as a new user gets it, with no PETREL_LIBRARY set:
# - `pip wheel ./bindings/python` gives a py3-none-linux_x86_64 wheel that carries libpetrel.so
#   and the LICENSE, with License-Expression: MIT in its metadata;
# - `pip install ./bindings/python` into a fresh venv gives a package that imports, loads its
#   own copy of the library, and serves: an asyncio echo server answers a `websockets` client.
# Usage: package.sh [PYTHON]   (the interpreter the venv is made with; default python3)
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
python=${1:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
unset PETREL_LIBRARY
fail() { echo "package: $*" >&2; exit 1; }

"$python" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip wheel -q --disable-pip-version-check --no-deps "$root/bindings/python" -w "$tmp/wheels"
wheel=$(cd "$tmp/wheels" && ls)
[[ $wheel == petrel_ws-*-py3-none-linux_x86_64.whl ]] || fail "the wheel is $wheel, not petrel_ws-*-py3-none-linux_x86_64.whl"
# Listed first, then searched: `grep -q` in a pipe may stop reading early (EPIPE under pipefail).
listing=$("$py" -m zipfile -l "$tmp/wheels/$wheel")
grep -q '^petrel/libpetrel.so ' <<<"$listing" || fail "$wheel has no petrel/libpetrel.so"
grep -q '^petrel/LICENSE ' <<<"$listing" || fail "$wheel has no petrel/LICENSE"
"$py" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
metadata = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
sys.exit("License-Expression: MIT" not in z.read(metadata).decode().splitlines())' "$tmp/wheels/$wheel" \
    || fail "$wheel's metadata has no License-Expression: MIT"

"$py" -m pip install -q --disable-pip-version-check "$root/bindings/python"
websockets=$(grep -i '^websockets==' "$root/tools/requirements.txt")
"$py" -m pip install -q --disable-pip-version-check "$websockets"
cd "$tmp"
"$py" - <<'PY'
import asyncio
from pathlib import Path

import petrel
import petrel.asyncio
import websockets

loaded = Path(petrel._lib.lib._name)
assert loaded == Path(petrel.__file__).parent / "libpetrel.so", f"loaded {loaded}, not the package's copy"


async def main() -> None:
    async def echo(ws: petrel.asyncio.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with petrel.asyncio.serve(echo, "127.0.0.1", 0, threads=1) as server:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/") as ws:
            for text in ("hello", "é" * 1000):
                await ws.send(text)
                assert await ws.recv() == text
            await ws.send(b"\x00\x01")
            assert await ws.recv() == b"\x00\x01"


asyncio.run(main())
print(f"package: {Path(petrel.__file__).parent} imports with its own libpetrel.so; an asyncio echo server answered websockets")
PY
echo "package: $wheel carries petrel/libpetrel.so and petrel/LICENSE (MIT)"
