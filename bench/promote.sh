#!/usr/bin/env bash
# Promotion benchmark (issue 7, item 5): `kinoite-zfs-operator promote` of a candidate with one
# ~1 GiB layer to another repository of the same registry, against `skopeo copy` of the same
# digest with an empty blob-info cache, in the same hyperfine run. Every timing run of either
# command writes to a fresh repository (hyperfine --prepare), so nothing is pre-mounted.
#
# Isolation (so the figures mean what they say):
# - The whole benchmark runs in its own network and mount namespaces (unshare; root, or a user
#   namespace otherwise). The loopback counters of that namespace then count only this
#   benchmark's traffic: the "loopback bytes" figures are every byte both directions of one run
#   moved, headers included, an upper bound of what it uploaded.
# - skopeo keeps a blob-info cache (root: /var/lib/containers/cache/blob-info-cache-v1.boltdb)
#   that remembers where blobs were seen and would let it mount instead of copying. In the
#   private mount namespace that directory is an empty tmpfs, and the cache file is deleted
#   before every skopeo run, so each run starts with an empty cache. HOME and XDG_DATA_HOME
#   point into the benchmark's temp dir too (where a non-root skopeo keeps its cache).
#
# Usage: bench/promote.sh [RUNS]   (default 5 timing runs per command)

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUNS="${1:-5}"

if [ -z "${KZO_BENCH_ISOLATED:-}" ]; then
  # Build with network access; inside the namespace there is none.
  (cd "$HERE/.." && cargo build --release --quiet --bin kinoite-zfs-operator --example bench_fixture)
  if [ "$(id -u)" = 0 ]; then
    exec unshare --net --mount env KZO_BENCH_ISOLATED=1 CARGO_NET_OFFLINE=true bash "$0" "$@"
  fi
  exec unshare --user --map-root-user --net --mount env KZO_BENCH_ISOLATED=1 CARGO_NET_OFFLINE=true bash "$0" "$@"
fi

# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
need ip iproute2
ip link set lo up
CACHE_DIR=/var/lib/containers/cache
mkdir -p "$CACHE_DIR"
mount -t tmpfs tmpfs "$CACHE_DIR"
SKOPEO_HOME="$BENCH_TMP/skopeo-home"
mkdir -p "$SKOPEO_HOME/.local/share"

echo "bench: machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
start_fixture --base-mib 8 --layers 2 --delta-mib 1 --big-layer-mib 1024
echo "bench: candidate $PROMOTE_REF, layer $BIG_LAYER_BYTES bytes" >&2

REPO_FILE="$BENCH_TMP/repo"
NEXT_REPO="echo bench/stable-\$(date +%s%N) > $REPO_FILE"
PROMOTE="$OPERATOR promote --candidate $PROMOTE_REF --to $REGISTRY/\$(cat $REPO_FILE) --tag latest --insecure-registry $REGISTRY"
SKOPEO="env HOME=$SKOPEO_HOME XDG_DATA_HOME=$SKOPEO_HOME/.local/share skopeo copy --preserve-digests --src-tls-verify=false --dest-tls-verify=false docker://$PROMOTE_REF docker://$REGISTRY/\$(cat $REPO_FILE):latest"

lo_bytes() { awk '$1 == "lo:" { print $2 }' /proc/net/dev; }

# One measured run of each outside hyperfine: loopback traffic and promote's own report.
sh -c "$NEXT_REPO"
before=$(lo_bytes)
sh -c "$PROMOTE" >"$BENCH_TMP/report.json"
promote_traffic=$(($(lo_bytes) - before))
sh -c "$NEXT_REPO; rm -f $CACHE_DIR/blob-info-cache-v1.boltdb"
before=$(lo_bytes)
sh -c "$SKOPEO" >/dev/null
skopeo_traffic=$(($(lo_bytes) - before))

hyperfine --runs "$RUNS" --export-json "$BENCH_TMP/hyperfine.json" \
  --prepare "$NEXT_REPO" -n "promote" "$PROMOTE" \
  --prepare "$NEXT_REPO; rm -f $CACHE_DIR/blob-info-cache-v1.boltdb" -n "skopeo copy" "$SKOPEO"

echo "bench: load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$BENCH_TMP/hyperfine.json" "$BENCH_TMP/report.json" "$promote_traffic" "$skopeo_traffic" "$BIG_LAYER_BYTES" <<'EOF'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
report = json.load(open(sys.argv[2]))
promote_traffic, skopeo_traffic, layer = (int(x) for x in sys.argv[3:6])
p, s = results["promote"], results["skopeo copy"]
fmt = lambda r: f'{r["mean"]*1000:.1f} ms ± {r["stddev"]*1000:.1f} (min {r["min"]*1000:.1f}, max {r["max"]*1000:.1f})'
blobs = report["blobs"]
assert report["result"] == "Promoted", report
print()
print("| | promote | skopeo copy (empty blob-info cache) |")
print("|---|---|---|")
print(f"| time, {len(p['times'])} runs each | {fmt(p)} | {fmt(s)} |")
print(f"| loopback bytes of one run (both directions, headers) | {promote_traffic:,} | {skopeo_traffic:,} |")
print(f"| blob bytes uploaded (promote's report) | {blobs['bytesCopied']:,} ({blobs['mounted']} mounted, {blobs['copied']} copied) | ≈ {layer:,} (the layer) |")
print()
print(f"ratio: promote is {s['mean'] / p['mean']:.0f}x faster than skopeo copy (target ≥ 10x)")
print(f"uploaded: {blobs['bytesCopied']} blob bytes; all loopback traffic {promote_traffic:,} bytes (target < 1 MiB = 1,048,576)")
EOF
