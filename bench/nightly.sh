#!/usr/bin/env bash
# Benchmark of nightly tracking (issue 15 item 4): what following the nightly costs once the
# layers of the previous night are remembered.
#
# The fixture (examples/bench_fixture.rs) pushes a BASE_MIB / LAYERS-layer base (night 1,
# bench/kinoite-main:latest) and the "next night" base (bench/kinoite-next:latest): the same layers
# but the last two, replaced by two new ones of the same size, one carrying a new kernel directory,
# one whiting out the oldest kernel. Then, in one hyperfine run:
#   - cold: `resolve` of the next night without any memory (every layer is streamed);
#   - warm: `resolve --scan-cache DIR` of the next night, DIR holding what night 1's resolve
#     learned (copied fresh before every run, so each run is the first to see night 2);
#   - `skopeo copy docker://NEXT dir:DIR` (the reference's first step).
# Checked before timing: the kernels of both resolves are exactly the next night's, and the bytes
# the warm resolve downloads (its `layer scan memory` log line) are the two changed layers'.
#
# Usage: bench/nightly.sh [--base-mib N] [--layers N] [--runs N]
# Defaults: a 1024 MiB base in 40 gzip layers; 5 timed runs after 1 warm-up.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE_MIB=1024
LAYERS=40
RUNS=5
while [ $# -gt 0 ]; do
  case "$1" in
    --base-mib) BASE_MIB="$2"; shift 2 ;;
    --layers) LAYERS="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    *) echo "usage: $0 [--base-mib N] [--layers N] [--runs N]" >&2; exit 2 ;;
  esac
done

resolve_cmd() {
  echo "$OPERATOR resolve --base-image $1 --builder-image $BUILDER_REF --insecure-registry $REGISTRY"
}

# kernels BASE [flags...]: the kernel_releases a resolve prints; its stderr is kept in $BENCH_TMP/last.err.
kernels() {
  local base="$1"; shift
  # shellcheck disable=SC2046
  $(resolve_cmd "$base") "$@" 2>"$BENCH_TMP/last.err" |
    python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["inputs"]["kernel_releases"]))'
}

# The bytes_read of the last run's `layer scan memory` line.
bytes_read() {
  sed -n 's/.*layer scan memory.*bytes_read=\([0-9]*\).*/\1/p' "$BENCH_TMP/last.err" | tail -n 1
}

echo "load before: $(uptime)"
start_fixture --base-mib "$BASE_MIB" --layers "$LAYERS"
echo "night 1: $BASE_REF ($BASE_BYTES compressed layer bytes in $LAYERS layers)"
echo "night 2: $NEXT_REF ($NEXT_BYTES bytes in $NEXT_LAYERS layers, $NEXT_CHANGED_BYTES in the 2 changed ones)"

NIGHT1_CACHE="$BENCH_TMP/night1-cache"
WARM_CACHE="$BENCH_TMP/warm-cache"
COPY_DIR="$BENCH_TMP/copy"

# Night 1 with a scan cache: what the operator (or a script) remembers for the next night.
k1=$(kernels "$BASE_REF" --scan-cache "$NIGHT1_CACHE")
[ "$k1" = "$KERNELS" ] || { echo "bench: night 1 kernels '$k1', expected '$KERNELS'" >&2; exit 1; }
night1_bytes=$(bytes_read)

# Night 2, cold and warm: exactly the next night's kernels either way.
k_cold=$(kernels "$NEXT_REF" --scan-cache "$BENCH_TMP/empty-cache")
cold_bytes=$(bytes_read)
rm -rf "$WARM_CACHE" && cp -r "$NIGHT1_CACHE" "$WARM_CACHE"
k_warm=$(kernels "$NEXT_REF" --scan-cache "$WARM_CACHE")
warm_bytes=$(bytes_read)
for k in "$k_cold" "$k_warm"; do
  [ "$k" = "$NEXT_KERNELS" ] || { echo "bench: night 2 kernels '$k', expected '$NEXT_KERNELS'" >&2; exit 1; }
done
[ "$warm_bytes" = "$NEXT_CHANGED_BYTES" ] ||
  { echo "bench: warm resolve read $warm_bytes bytes, expected the changed layers' $NEXT_CHANGED_BYTES" >&2; exit 1; }

hyperfine --warmup 1 --runs "$RUNS" --export-json "$BENCH_TMP/nightly.json" \
  -n "cold resolve" --prepare "true" "$(resolve_cmd "$NEXT_REF") > /dev/null 2>&1" \
  -n "warm resolve" --prepare "rm -rf $WARM_CACHE && cp -r $NIGHT1_CACHE $WARM_CACHE" \
  "$(resolve_cmd "$NEXT_REF") --scan-cache $WARM_CACHE > /dev/null 2>&1" \
  -n "skopeo copy" --prepare "rm -rf $COPY_DIR" \
  "skopeo copy --src-tls-verify=false docker://$NEXT_REF dir:$COPY_DIR"
echo "load after timing: $(uptime)"

python3 - "$BENCH_TMP/nightly.json" "$night1_bytes" "$cold_bytes" "$warm_bytes" "$NEXT_BYTES" "$NEXT_CHANGED_BYTES" "$NEXT_KERNELS" <<'EOF'
import json, sys
path, night1, cold_b, warm_b, total, changed, kernels = sys.argv[1:]
night1, cold_b, warm_b, total, changed = map(int, (night1, cold_b, warm_b, total, changed))
r = {x["command"]: x for x in json.load(open(path))["results"]}
cold, warm, skopeo = r["cold resolve"], r["warm resolve"], r["skopeo copy"]
def line(name, x):
    print(f"{name:<13} mean {x['mean']:.3f} s ± {x['stddev']:.3f} (min {x['min']:.3f}, max {x['max']:.3f})")
print()
line("cold resolve", cold)
line("warm resolve", warm)
line("skopeo copy", skopeo)
print(f"speed-up     cold / warm = {cold['mean'] / warm['mean']:.1f}x (target: >= 10); skopeo copy / warm = {skopeo['mean'] / warm['mean']:.1f}x")
print(f"bytes        night 1 resolve {night1}; night 2 cold {cold_b}, warm {warm_b} = {warm_b / cold_b:.4f} of cold; changed/total = {changed}/{total} = {changed / total:.4f}")
print(f"kernels      night 2 (cold and warm): {kernels}")
EOF
echo "load at end: $(uptime)"
