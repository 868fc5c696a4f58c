# Shared helpers for the benchmark scripts in bench/ (source it; bash only).
#
# start_fixture [fixture flags...]: builds the release binary and the bench fixture, starts the
#   fixture (a real docker-registry with benchmark-size synthetic images) in the background, waits
#   for its env file and sources it (REGISTRY, BASE_REF, CANDIDATE_REF, ... see
#   examples/bench_fixture.rs). The fixture is stopped when the script exits.
# peak_rss_kib CMD...: runs CMD once and prints its peak resident set size in KiB.

set -euo pipefail

BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_TMP="$(mktemp -d /tmp/kzo-bench.XXXXXX)"
OPERATOR="$BENCH_ROOT/target/release/kinoite-zfs-operator"
FIXTURE_PID=""

cleanup() {
  if [ -n "$FIXTURE_PID" ]; then
    kill "$FIXTURE_PID" 2>/dev/null || true
    wait "$FIXTURE_PID" 2>/dev/null || true
  fi
  rm -rf "$BENCH_TMP"
}
trap cleanup EXIT

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is required (apt-get install -y $2)" >&2; exit 1; }
}

start_fixture() {
  need hyperfine hyperfine
  need skopeo skopeo
  need docker-registry docker-registry
  (cd "$BENCH_ROOT" && cargo build --release --quiet --bin kinoite-zfs-operator --example bench_fixture)
  local env_file="$BENCH_TMP/fixture.env"
  "$BENCH_ROOT/target/release/examples/bench_fixture" --env-file "$env_file" "$@" &
  FIXTURE_PID=$!
  for _ in $(seq 1 1200); do
    [ -s "$env_file" ] && break
    kill -0 "$FIXTURE_PID" 2>/dev/null || { echo "bench: fixture exited early" >&2; exit 1; }
    sleep 0.5
  done
  [ -s "$env_file" ] || { echo "bench: fixture did not become ready" >&2; exit 1; }
  # shellcheck disable=SC1090
  source "$env_file"
}

peak_rss_kib() {
  /usr/bin/time -f '%M' -o "$BENCH_TMP/rss" "$@" >/dev/null 2>"$BENCH_TMP/rss.err" ||
    { echo "bench: command failed: $*" >&2; cat "$BENCH_TMP/rss.err" >&2; exit 1; }
  tail -n 1 "$BENCH_TMP/rss"
}
