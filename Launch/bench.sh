#!/usr/bin/env bash
# Benchmark: models (mlp3, deep32, conv, vae) × world sizes (1, 2, and 4 oversubscribed) on
# Fashion-MNIST, one BLAS thread per rank, plus one rank at 2 BLAS threads for the thread policy.
# Several ranks use the default --grad-sync auto (shared on one node); mlp3 also runs np 2 and 4
# with --grad-sync allreduce for comparison.
# Prints a table and writes bench.json (or $BENCH_JSON). All rows come from this one run, so the
# ratios between them are what to read; absolute numbers move with the machine's load. Each
# configuration runs ROUNDS times (default 3) round-robin; the table shows the best round and the
# median ratio ("median"); bench.json keeps every round.
#
# Arithmetic: the global batch (128; 256 for conv) is split across ranks: 2 ranks × 64 = 128,
# 4 ranks × 32 = 128; one epoch is ceil(60000 / 128) = 469 steps. Each row runs STEPS steps.
#
# Usage: Launch/bench.sh [models...]      e.g. Launch/bench.sh mlp3 conv
# Two builds side by side (before/after a change): BENCH_BINS="old=/path/to/aetrain new=.build/release/aetrain"
# runs every row with each binary in the same round (nothing is built); the table gets a build
# column and ends with the per-round samples/s ratio of each later build to the first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
"$here/install-deps.sh"
bins=()  # label=path
if [[ -n "${BENCH_BINS:-}" ]]; then
    read -r -a bins <<< "$BENCH_BINS"
else
    swift build -c release >&2
    bins=("current=$(swift build -c release --show-bin-path)/aetrain")
fi
bin="${bins[0]#*=}"
[[ "$(id -u)" -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out="${BENCH_JSON:-bench.json}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
models=("$@")
((${#models[@]})) || models=(mlp3 deep32 conv vae)

"$bin" bench --threads 1 > "$work/sgemm.json"
rounds="${ROUNDS:-3}"
specs=()  # model np threads grad-sync
for m in "${models[@]}"; do
    for np in 1 2 4; do specs+=("$m $np 1 auto"); done
    [[ $m == mlp3 ]] && specs+=("$m 2 1 allreduce" "$m 4 1 allreduce")
    specs+=("$m 1 2 auto")
done
run() {  # label binary model np threads grad-sync round
    local label=$1 bin=$2; shift 2
    local m=$1 np=$2 th=$3 gs=$4 k=$5 bs=128 steps=600
    [[ $m == conv ]] && { bs=256; steps=40; }
    local o="$work/$label-$m-np$np-t$th-$gs-r$k"
    # mpirun binds each rank to one core by default; a multi-threaded rank must not be bound.
    local bind=(); ((th > 1)) && bind=(--bind-to none)
    OPENBLAS_NUM_THREADS=$th OMP_NUM_THREADS=$th mpirun --oversubscribe "${bind[@]}" -np "$np" "$bin" --model "$m" --batch-size $bs \
        --max-steps $steps --epochs 100 --test-limit 1000 --log-every 100000 --no-report --grad-sync "$gs" --out "$o" 2>"$o.log" \
        || { echo "bench: $m np $np failed: $(tail -1 "$o.log")" >&2; return 0; }
    echo "$label $m $np $th $gs $k $o/summary.json" >> "$work/rows"
}
# Every configuration runs ROUNDS times, round-robin, so that all rows see the same machine; the
# builds take turns going first.
for ((k = 1; k <= rounds; k++)); do
    for spec in "${specs[@]}"; do
        for ((j = 0; j < ${#bins[@]}; j++)); do
            b="${bins[(j + k) % ${#bins[@]}]}"
            run "${b%%=*}" "${b#*=}" $spec "$k"
        done
    done
done
python3 - "$work/sgemm.json" "$out" "$work/rows" "${bins[@]%%=*}" <<'PY'
import json, statistics, sys
sg = json.load(open(sys.argv[1])); out = sys.argv[2]
runs, labels, rounds_of = {}, sys.argv[4:], {}
for line in open(sys.argv[3]):
    label, m, np, th, gs, k, path = line.split()
    runs.setdefault((label, m, int(np), int(th), gs), []).append(json.load(open(path)))
    rounds_of.setdefault((label, m, int(np), int(th), gs), {})[int(k)] = runs[(label, m, int(np), int(th), gs)][-1]
configs = list(dict.fromkeys(key[1:] for key in runs))  # in the order they ran
ordered = [(label,) + c for c in configs for label in labels if (label,) + c in runs]
rows = []
for (label, m, np, th, gs) in ordered:
    ss = runs[(label, m, np, th, gs)]
    s = max(ss, key=lambda s: s["samples_per_second"])  # the best round
    ms = s["ms_per_step"]
    rows.append({"build": label, "model": s["model"], "world_size": s["world_size"], "blas_threads": s["blas_threads"], "grad_sync": s["grad_sync"],
                 "global_batch": s["global_batch_size"], "samples_per_second": s["samples_per_second"],
                 "samples_per_second_median": statistics.median(x["samples_per_second"] for x in ss),
                 "samples_per_second_rounds": [x["samples_per_second"] for x in ss],
                 "ms_per_step": ms, "gflops": s["train_gflops"], "sgemm_gflops_1thread": sg["sgemm_gflops"],
                 "fraction_of_sgemm": s["train_gflops"] / sg["sgemm_gflops"], "peak_rss_mb_per_rank": s["peak_rss_mb_per_rank"],
                 "allreduce_share": ms["allreduce"] / ms["total"] if ms["total"] else 0})
base = {(r["build"], r["model"]): r for r in rows if r["world_size"] == 1 and r["blas_threads"] == 1}
for r in rows:
    b = base.get((r["build"], r["model"]))
    r["speedup_vs_np1"] = r["samples_per_second"] / b["samples_per_second"] if b else None
    r["median_speedup_vs_np1"] = r["samples_per_second_median"] / b["samples_per_second_median"] if b else None
json.dump({"sgemm": sg, "rounds": len(next(iter(runs.values()))), "rows": rows}, open(out, "w"), indent=2)
print(f"one-thread sgemm: {sg['sgemm_gflops']:.1f} GFLOP/s (best of 512³ and the mlp3 shapes); best of {len(next(iter(runs.values())))} rounds per row")
lw = max(len(l) for l in labels) if len(labels) > 1 else 0
col = (lambda r: f"{r['build']:{lw}} ") if lw else (lambda r: "")
hdr = ((f"{'build':{lw}} " if lw else "") + f"{'model':7} {'ranks':>5} {'thr':>3} {'sync':>9} {'batch':>5} {'samples/s':>10} {'vs np1':>6} {'median':>6} {'ms/step':>7} "
       f"{'fwd':>6} {'bwd':>6} {'exch':>6} {'adam':>6} {'GFLOP/s':>7} {'%sgemm':>6} {'RSS MB/rank':>11}")
print(hdr); print("-" * len(hdr))
for r in rows:
    m = r["ms_per_step"]
    print(col(r) + f"{r['model']:7} {r['world_size']:>5} {r['blas_threads']:>3} {r['grad_sync']:>9} {r['global_batch']:>5} {r['samples_per_second']:>10.0f} "
          f"{(r['speedup_vs_np1'] or 0):>6.2f} {(r['median_speedup_vs_np1'] or 0):>6.2f} {m['total']:>7.3f} {m['forward']:>6.3f} {m['backward']:>6.3f} "
          f"{m['allreduce']:>6.3f} {m['optimizer']:>6.3f} {r['gflops']:>7.1f} {100 * r['fraction_of_sgemm']:>5.0f}% {max(r['peak_rss_mb_per_rank']):>11.1f}")
if len(labels) > 1:
    # Per-round ratios: both builds ran back to back in each round, so the ratio of a round is
    # measured under one machine load.
    print(f"\nsamples/s of each build over {labels[0]}'s, per round (median [min, max]):")
    for (label, m, np, th, gs) in ordered:
        if label == labels[0]: continue
        ss = runs[(label, m, np, th, gs)]
        mine, ref = rounds_of[(label, m, np, th, gs)], rounds_of.get((labels[0], m, np, th, gs), {})
        ratios = sorted(mine[k]["samples_per_second"] / ref[k]["samples_per_second"] for k in mine if k in ref)
        if ratios:
            print(f"  {label} {m} np {np} thr {th} {ss[0]['grad_sync']}: {statistics.median(ratios):.3f} [{ratios[0]:.3f}, {ratios[-1]:.3f}]")
print(f"wrote {out}")
PY
