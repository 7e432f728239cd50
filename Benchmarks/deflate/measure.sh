#!/bin/sh
# Instructions per message for every case of ./engines list (or the cases given as arguments):
# callgrind's total Ir for N and for 2N messages; (Ir(2N) - Ir(N)) / N cancels set-up and start-up.
# One valgrind at a time (the machine has two cores and others use them).
# VECTOR=1: make glibc's memset/memcpy use vector loops instead of `rep stosb`/`rep movsb`, which
# callgrind counts once per byte (a 64 KiB memset is 65,536 "instructions" there, ~2,000 vector
# stores natively). The figures with VECTOR=1 are the fairer count of work.
set -e
cd "$(dirname "$0")"
[ -z "$VECTOR" ] || export GLIBC_TUNABLES=glibc.cpu.x86_rep_stosb_threshold=0x7fffffffffffffff:glibc.cpu.x86_rep_movsb_threshold=0x7fffffffffffffff
N=${N:-1000}
out=${TMPDIR:-/tmp}/engines-callgrind.$$
ir() {
    valgrind --tool=callgrind --callgrind-out-file="$out" ./engines run "$1" "$2" >/dev/null 2>&1
    sed -n 's/^summary: *//p; s/^totals: *//p' "$out" | head -1
    rm -f "$out"
}
[ $# -gt 0 ] || set -- $(./engines list)
printf '%-56s %12s\n' case "Ir/message"
for c in "$@"; do
    a=$(ir "$c" "$N")
    b=$(ir "$c" $((2 * N)))
    printf '%-56s %12.0f\n' "$c" "$(echo "($b - $a) / $N" | bc -l)"
done
