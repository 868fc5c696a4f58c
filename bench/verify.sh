#!/usr/bin/env bash
# Benchmark of candidate verification (issue 5, item 6), in one hyperfine run:
#   1. `verify --base-image` (reads only the ZFS delta on top of the base),
#   2. `verify` without a base (full scan of every layer, streamed, nothing written),
#   3. `skopeo copy docker://CANDIDATE dir:` (the reference's way: copy the whole image first).
# Then bytes read (from verify's JSON) and peak RSS (GNU time) of each verify.
#
# Usage: bench/verify.sh [bench_fixture flags, e.g. --base-mib 256 --layers 10]
# Env: RUNS (default 5), WARMUP (default 1), OUT (markdown summary file, default: stdout only).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export RUST_LOG="${RUST_LOG:-warn}"
RUNS="${RUNS:-5}"
WARMUP="${WARMUP:-1}"

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
start_fixture "$@"

BASE_PINNED="$REGISTRY/bench/kinoite-main@$BASE_DIGEST"
read -r -a kernels <<<"$KERNELS"
verify=("$OPERATOR" verify --insecure-registry "$REGISTRY" --image "$CANDIDATE_REF")
for k in "${kernels[@]}"; do verify+=(--kernel-release "$k"); done
delta=("${verify[@]}" --base-image "$BASE_PINNED")
copy_dir="$BENCH_TMP/copy"

# Both verifications must succeed before anything is timed.
"${delta[@]}" >"$BENCH_TMP/delta.json"
"${verify[@]}" >"$BENCH_TMP/full.json"

q() { printf '%q ' "$@"; }
hyperfine --warmup "$WARMUP" --runs "$RUNS" --export-json "$BENCH_TMP/hyperfine.json" \
  --prepare "rm -rf $(q "$copy_dir")" \
  -n "verify --base-image (delta)" "$(q "${delta[@]}")" \
  -n "verify (full scan)" "$(q "${verify[@]}")" \
  -n "skopeo copy dir:" "skopeo copy --quiet --src-tls-verify=false $(q "docker://$CANDIDATE_REF") $(q "dir:$copy_dir")"

rss_delta="$(peak_rss_kib "${delta[@]}")"
rss_full="$(peak_rss_kib "${verify[@]}")"
rm -rf "$copy_dir"
rss_skopeo="$(peak_rss_kib skopeo copy --quiet --src-tls-verify=false "docker://$CANDIDATE_REF" "dir:$copy_dir")"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$BENCH_TMP" "$DELTA_BYTES" "$BASE_BYTES" "$rss_delta" "$rss_full" "$rss_skopeo" \
  "$load_before" "$load_after" "$(nproc)" <<'PY' | tee "${OUT:-/dev/null}"
import json, sys
tmp, delta_bytes, base_bytes, rss_d, rss_f, rss_s, load_before, load_after, cores = sys.argv[1:]
h = json.load(open(f"{tmp}/hyperfine.json"))["results"]
mean = {r["command"]: (r["mean"], r["stddev"] or 0.0) for r in h}
names = ["verify --base-image (delta)", "verify (full scan)", "skopeo copy dir:"]
d, f = json.load(open(f"{tmp}/delta.json")), json.load(open(f"{tmp}/full.json"))
assert d["verified"] and f["verified"], "both verifications must pass"
mib = lambda b: int(b) / 1048576
print(f"Machine: {cores} cores, load average before {load_before}, after {load_after} (shared with other builds).")
print(f"Image: base {mib(base_bytes):.0f} MiB in {d['scan']['base_layers']} gzip layers + ZFS delta {mib(delta_bytes):.1f} MiB (compressed).")
print()
print("| command | mean ± σ (s) | vs delta |")
print("|---|---|---|")
t_delta = mean[names[0]][0]
for n in names:
    m, s = mean[n]
    print(f"| `{n}` | {m:.3f} ± {s:.3f} | {m / t_delta:.1f}× |")
print()
print("| verify | bytes read | layers read | peak RSS |")
print("|---|---|---|---|")
print(f"| delta | {d['bytes_read']} ({mib(d['bytes_read']):.1f} MiB; delta blob {int(delta_bytes)}) | {d['scan']['layers_scanned']} of {d['scan']['layers_total']} | {int(rss_d) / 1024:.1f} MiB |")
print(f"| full | {f['bytes_read']} ({mib(f['bytes_read']):.1f} MiB) | {f['scan']['layers_scanned']} of {f['scan']['layers_total']} | {int(rss_f) / 1024:.1f} MiB |")
print(f"| (skopeo copy) | — | — | {int(rss_s) / 1024:.1f} MiB |")
print()
speedup = mean[names[2]][0] / t_delta
print(f"delta verify is {speedup:.1f}× faster than the skopeo copy (target ≥ 10×), "
      f"{mean[names[1]][0] / t_delta:.1f}× faster than a full scan; "
      f"bytes read / delta size = {d['bytes_read'] / int(delta_bytes):.3f}; "
      f"peak RSS {int(rss_d) / 1024:.1f} MiB (target < 64 MiB).")
PY
