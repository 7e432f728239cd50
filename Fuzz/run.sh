#!/usr/bin/env bash
# Builds the libFuzzer harnesses with AddressSanitizer and runs each for a time budget.
#
#   Fuzz/run.sh [SECONDS] [HARNESS...]     default: 30 s each, every harness
#   FUZZ_RUNS=10000000 Fuzz/run.sh 0       the long budget: a number of executions each
#
# Each harness starts from Fuzz/corpus/<name> (the committed seeds: RFC examples and the unit
# tests' cases) and a working corpus in .build/fuzz/<name>, and first replays every input in
# Fuzz/regressions/<name> (inputs that once crashed). A finding stops the run: the input is
# saved as .build/fuzz/<name>-crash-… and the script exits 1. The last line per harness gives
# executions, coverage (cov) and features (ft); .build/fuzz/summary.md collects them.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-30}
shift || true
all=(fuzz-server-handshake fuzz-client-handshake fuzz-extensions fuzz-frames-server fuzz-frames-client fuzz-inflate fuzz-http
    fuzz-proxy-socks5 fuzz-proxy-connect fuzz-request-body fuzz-engine fuzz-stomp fuzz-client-address)
harnesses=("${@:-${all[@]}}")
[ $# -gt 0 ] || harnesses=("${all[@]}")
out=../.build/fuzz
mkdir -p "$out"
swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -g >/dev/null
bin=$(swift build -c release -Xswiftc -sanitize=fuzzer,address --show-bin-path)
summary="$out/summary.md"
printf '| harness | seconds | executions | exec/s | cov | ft | corpus |\n| --- | --- | --- | --- | --- | --- | --- |\n' >"$summary"
for h in "${harnesses[@]}"; do
    mkdir -p "$out/$h" "regressions/$h"
    if compgen -G "regressions/$h/*" >/dev/null; then
        "$bin/$h" -runs=0 regressions/$h/* >/dev/null 2>&1 || { echo "fuzz: $h fails a regression input" >&2; exit 1; }
    fi
    log="$out/$h.log"
    budget=(-max_total_time="$seconds")
    [ -z "${FUZZ_RUNS:-}" ] || budget=(-runs="$FUZZ_RUNS")
    start=$(date +%s)
    if ! "$bin/$h" "$out/$h" "corpus/$h" "${budget[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$out/$h-" >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz: $h found a problem (input saved under $out/$h-*)" >&2
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(find "$out/$h" -type f | wc -l)
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$h" "$(($(date +%s) - start))" "$execs" "$rate" "$cov" "$ft" "$corpus" | tee -a "$summary"
done
echo "fuzz: no findings; summary in .build/fuzz/summary.md"
