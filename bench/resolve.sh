#!/usr/bin/env bash
# Benchmark of input resolution (issue 4 item 6).
#
# `kinoite-zfs-operator resolve` (base manifest and labels, builder pin, kernel discovery by
# streaming every base layer through the layer walker, immutable tag selection) against the
# reference's first step alone, `skopeo copy docker://BASE dir:DIR` of the same image, in the same
# hyperfine run; then the peak RSS of `resolve` on that base and on a base GROW_MIB big (memory
# must stay flat whatever the image size; target < 64 MiB).
#
# Usage: bench/resolve.sh [--base-mib N] [--layers N] [--grow-mib N|0] [--runs N]
# Defaults: a 1024 MiB base in 40 gzip layers, then 2048 MiB; 5 timed runs after 1 warm-up.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE_MIB=1024
LAYERS=40
GROW_MIB=2048
RUNS=5
while [ $# -gt 0 ]; do
  case "$1" in
    --base-mib) BASE_MIB="$2"; shift 2 ;;
    --layers) LAYERS="$2"; shift 2 ;;
    --grow-mib) GROW_MIB="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    *) echo "usage: $0 [--base-mib N] [--layers N] [--grow-mib N|0] [--runs N]" >&2; exit 2 ;;
  esac
done

resolve_cmd() {
  echo "$OPERATOR resolve --base-image $BASE_REF --builder-image $BUILDER_REF --insecure-registry $REGISTRY"
}

# Peak RSS (MiB, one decimal) of the worst of three resolve runs.
peak_rss_mib() {
  local worst=0 kib
  for _ in 1 2 3; do
    # shellcheck disable=SC2046
    kib=$(peak_rss_kib $(resolve_cmd))
    [ "$kib" -gt "$worst" ] && worst=$kib
  done
  awk -v k="$worst" 'BEGIN { printf "%.1f", k / 1024 }'
}

echo "load before: $(uptime)"
start_fixture --base-mib "$BASE_MIB" --layers "$LAYERS"
echo "base: $BASE_REF ($BASE_BYTES compressed layer bytes in $LAYERS layers)"

# The output must be right before it is timed.
# shellcheck disable=SC2046
kernels=$($(resolve_cmd) 2>/dev/null | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["inputs"]["kernel_releases"]))')
[ "$kernels" = "$KERNELS" ] || { echo "bench: resolve found kernels '$kernels', expected '$KERNELS'" >&2; exit 1; }

COPY_DIR="$BENCH_TMP/copy"
hyperfine --warmup 1 --runs "$RUNS" --export-json "$BENCH_TMP/resolve.json" \
  --prepare "rm -rf $COPY_DIR" \
  -n "resolve" "$(resolve_cmd) > /dev/null" \
  -n "skopeo copy" "skopeo copy --src-tls-verify=false docker://$BASE_REF dir:$COPY_DIR"

rss_base=$(peak_rss_mib)
echo "load after timing: $(uptime)"

rss_grow="-"
if [ "$GROW_MIB" -gt 0 ]; then
  kill "$FIXTURE_PID" 2>/dev/null || true
  wait "$FIXTURE_PID" 2>/dev/null || true
  FIXTURE_PID=""
  rm -f "$BENCH_TMP/fixture.env"
  start_fixture --base-mib "$GROW_MIB" --layers "$LAYERS"
  rss_grow=$(peak_rss_mib)
fi

python3 - "$BENCH_TMP/resolve.json" "$BASE_MIB" "$GROW_MIB" "$rss_base" "$rss_grow" <<'EOF'
import json, sys
path, base_mib, grow_mib, rss_base, rss_grow = sys.argv[1:]
results = {r["command"]: r for r in json.load(open(path))["results"]}
ours, skopeo = results["resolve"], results["skopeo copy"]
print()
print(f"resolve      mean {ours['mean']:.2f} s ± {ours['stddev']:.2f} (min {ours['min']:.2f}, max {ours['max']:.2f})")
print(f"skopeo copy  mean {skopeo['mean']:.2f} s ± {skopeo['stddev']:.2f} (min {skopeo['min']:.2f}, max {skopeo['max']:.2f})")
print(f"ratio        skopeo copy / resolve = {skopeo['mean'] / ours['mean']:.2f}x (target: > 1)")
print(f"peak RSS     resolve on {base_mib} MiB base: {rss_base} MiB; on {grow_mib} MiB base: {rss_grow} MiB (target: < 64 MiB)")
EOF
echo "load at end: $(uptime)"
