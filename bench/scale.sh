#!/usr/bin/env bash
# Scale benchmark (issue 6 item 10): N ZfsImageBuilds against the Kubernetes API simulator
# (examples/apisim.rs), a real registry (examples/bench_scale.rs fixture) and the operator binary
# (`run`, release build). The driver (examples/bench_scale.rs drive) applies the builds, completes
# their image Jobs envtest-style, waits until all are Ready, then watches /metrics for a steady
# period. Measured for the baseline (1 build) and for N builds (default 500), each against a fresh
# simulator and operator, in the same run:
#   - time until every build is Ready (and p50/p95 per build),
#   - reconciles per minute at steady state (target: none; no schedule tick falls in the window),
#   - peak RSS of the operator process (VmHWM; target < 100 MiB).
#
# Usage: bench/scale.sh [BUILDS] [STEADY_SECONDS]
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUILDS="${1:-500}"
STEADY="${2:-60}"
PIDS=()

stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
trap 'stop_all; cleanup' EXIT

need docker-registry docker-registry
(cd "$BENCH_ROOT" && cargo build --release --quiet --bin kinoite-zfs-operator --example apisim --example bench_scale)
EXAMPLES="$BENCH_ROOT/target/release/examples"

"$EXAMPLES/bench_scale" fixture --env-file "$BENCH_TMP/fixture.env" 2>"$BENCH_TMP/fixture.log" &
FIXTURE_PID=$!
for _ in $(seq 1 600); do [ -s "$BENCH_TMP/fixture.env" ] && break; sleep 0.1; done
[ -s "$BENCH_TMP/fixture.env" ] || { echo "bench: the fixture did not start" >&2; cat "$BENCH_TMP/fixture.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$BENCH_TMP/fixture.env"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# measure NAME BUILDS: a fresh simulator and operator, the driver, then the operator's peak RSS.
measure() {
  local name="$1" builds="$2" dir="$BENCH_TMP/$1"
  mkdir -p "$dir"
  "$EXAMPLES/apisim" --kubeconfig "$dir/kubeconfig" --install-crds >"$dir/apisim.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do [ -s "$dir/kubeconfig" ] && break; sleep 0.1; done
  local port; port="$(free_port)"
  KUBECONFIG="$dir/kubeconfig" RUST_LOG=warn "$OPERATOR" run --http-address "127.0.0.1:$port" \
    --insecure-registry "$REGISTRY" >"$dir/operator.log" 2>&1 &
  local operator_pid=$!
  PIDS+=("$operator_pid")
  for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  local idle_rss_kib; idle_rss_kib="$(awk '/VmRSS/ {print $2}' "/proc/$operator_pid/status")"
  "$EXAMPLES/bench_scale" drive --kubeconfig "$dir/kubeconfig" --registry "$REGISTRY" \
    --metrics "http://127.0.0.1:$port" --builds "$builds" --steady-secs "$STEADY" >"$dir/result" 2>"$dir/driver.log" ||
    { echo "bench: driver failed" >&2; cat "$dir/driver.log" "$dir/operator.log" >&2; exit 1; }
  local peak_kib; peak_kib="$(awk '/VmHWM/ {print $2}' "/proc/$operator_pid/status")"
  local rss_kib; rss_kib="$(awk '/VmRSS/ {print $2}' "/proc/$operator_pid/status")"
  {
    echo "IDLE_RSS_KIB=$idle_rss_kib"
    echo "PEAK_RSS_KIB=$peak_kib"
    echo "STEADY_RSS_KIB=$rss_kib"
    echo "OPERATOR_ERRORS=$(grep -c '"ERROR\| ERROR ' "$dir/operator.log" || true)"
  } >>"$dir/result"
  stop_all
}

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
measure baseline 1
measure scale "$BUILDS"
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"

value() { grep "^$2=" "$BENCH_TMP/$1/result" | cut -d= -f2; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

echo "machine: $(nproc) cores; load average before $LOAD_BEFORE, after $LOAD_AFTER"
printf '%-36s %14s %14s %10s\n' "" "baseline (1)" "scale ($BUILDS)" "ratio"
row() {
  local label="$1" key="$2" scale="${3:-1}"
  local b s; b="$(value baseline "$key")"; s="$(value scale "$key")"
  b="$(python3 -c "print(round($b/$scale, 2))")"; s="$(python3 -c "print(round($s/$scale, 2))")"
  local r="-"; python3 -c "import sys; sys.exit(0 if $b > 0 else 1)" && r="$(ratio "$s" "$b")"
  printf '%-36s %14s %14s %10s\n' "$label" "$b" "$s" "$r"
}
row "time until all Ready (s)" ALL_READY_SECONDS
row "Ready p50 (s)" READY_P50_SECONDS
row "Ready p95 (s)" READY_P95_SECONDS
row "reconciles in total" RECONCILES_TOTAL
row "steady reconciles per minute" STEADY_RECONCILES_PER_MINUTE
row "operator RSS when ready (MiB)" IDLE_RSS_KIB 1024
row "operator peak RSS (MiB)" PEAK_RSS_KIB 1024
row "operator RSS at steady state (MiB)" STEADY_RSS_KIB 1024
row "akmods Jobs" AKMODS_JOBS
row "image Jobs" IMAGE_JOBS
row "operator ERROR log lines" OPERATOR_ERRORS
