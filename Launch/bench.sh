#!/usr/bin/env bash
# Benchmark: models (mlp3, deep32, conv, vae, lstm) × world sizes (1, 2, and 4 oversubscribed) ×
# precision (f32, bf16) on Fashion-MNIST, one compute thread per rank, plus one rank at 2 threads
# for the thread policy. Several ranks use the default --grad-sync auto (shared on one node); mlp3
# also runs np 2 and 4 with --grad-sync allreduce for comparison.
#
# Every row is expressed as a share of the measured peak of the cores it used: `aetrain bench`
# times oneDNN's matmul primitive on one core (f32, and bf16 inputs with f32 accumulation, at 512³
# and at mlp3's shapes), and %peak = the row's GFLOP/s / (that peak × cores in use).
#
# Side by side in the same rounds, when available:
# - PyTorch (when `import torch` works for $AETRAIN_TORCH_PYTHON, default python3): the same
#   models, batch sizes and data in Launch/torch_bench.py, one thread, f32 with fused Adam and
#   bf16 autocast; the last table gives aetrain / PyTorch.
# - BASELINE_BIN=/path/to/older/aetrain: that binary's one-rank f32 rows (e.g. the build before a
#   change), so that old and new are measured on the same machine at the same time.
#
# Prints the tables and writes bench.json (or $BENCH_JSON). All rows come from this one run, so the
# ratios between them are what to read; absolute numbers move with the machine's load. Each
# configuration runs ROUNDS times (default 3) round-robin; the tables show the best round and the
# median ratio ("median"); bench.json keeps every round.
#
# Arithmetic: the global batch (128; 256 for conv) is split across ranks: 2 ranks × 64 = 128,
# 4 ranks × 32 = 128; one epoch is ceil(60000 / 128) = 469 steps. Each row runs STEPS steps.
#
# Usage: Launch/bench.sh [models...]      e.g. Launch/bench.sh mlp3 conv
#        PRECISIONS=f32 ROUNDS=5 BASELINE_BIN=/tmp/aetrain-old Launch/bench.sh mlp3
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
"$here/install-deps.sh"
swift build -c release >&2
bin="$(swift build -c release --show-bin-path)/aetrain"
[[ "$(id -u)" -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out="${BENCH_JSON:-bench.json}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
models=("$@")
((${#models[@]})) || models=(mlp3 deep32 conv vae lstm)
read -r -a precisions <<< "${PRECISIONS:-f32 bf16}"
base="${BASELINE_BIN:-}"
if [[ -n "$base" && ! -x "$base" ]]; then echo "bench: BASELINE_BIN $base is not an executable" >&2; exit 2; fi

"$bin" bench --threads 1 > "$work/peak.json"
if ! grep -q '"peak_bf16_gflops"' "$work/peak.json"; then
    precisions=(f32)  # this CPU has no AVX-512: oneDNN has no bf16 kernels here
fi

# PyTorch beside aetrain, when importable; it reads the same Fashion-MNIST files.
py="${AETRAIN_TORCH_PYTHON:-python3}"
torch_ok=0
if "$py" -c 'import torch, numpy' 2>/dev/null; then torch_ok=1; else echo "bench: no PyTorch for $py (set AETRAIN_TORCH_PYTHON); PyTorch rows skipped" >&2; fi
data=""
for d in "${AETRAIN_DATA_DIR:+$AETRAIN_DATA_DIR/fashion-mnist}" /usr/share/datasets/fashion-mnist ./data/fashion-mnist; do
    [[ -n "$d" && -f "$d/train-images-idx3-ubyte.gz" || -n "$d" && -f "$d/train-images-idx3-ubyte" ]] && { data="$d"; break; }
done
[[ -z "$data" ]] && torch_ok=0
pin=(); command -v taskset >/dev/null && pin=(taskset -c 0)

rounds="${ROUNDS:-3}"
specs=()  # binary model np threads grad-sync precision
for m in "${models[@]}"; do
    for p in "${precisions[@]}"; do
        nps=(1 2 4); [[ $p == bf16 ]] && nps=(1 2)
        for np in "${nps[@]}"; do specs+=("new $m $np 1 auto $p"); done
        ((torch_ok)) && [[ $m != sparse* && $m != contractive && $m != denoising && $m != shallow32 ]] && specs+=("torch $m 1 1 none $p")
    done
    [[ $m == mlp3 ]] && specs+=("new $m 2 1 allreduce f32" "new $m 4 1 allreduce f32")
    specs+=("new $m 1 2 auto f32")
    [[ -n "$base" ]] && specs+=("base $m 1 1 auto f32")
done
run() {  # binary model np threads grad-sync precision round
    local b=$1 m=$2 np=$3 th=$4 gs=$5 p=$6 k=$7 bs=128 steps=600
    [[ $m == conv ]] && { bs=256; steps=40; }
    [[ $m == lstm ]] && steps=150
    local o="$work/$b-$m-np$np-t$th-$gs-$p-r$k"
    if [[ $b == torch ]]; then
        local ts=$((steps / 2)); ((ts < 10)) && ts=10
        OMP_NUM_THREADS=1 "${pin[@]}" "$py" "$here/torch_bench.py" "$data" "$m" "$p" $bs $ts > "$o.json" 2>"$o.log" \
            || { echo "bench: PyTorch $m $p failed: $(tail -1 "$o.log")" >&2; return 0; }
        echo "$b $m $np $th $gs $p $o.json" >> "$work/rows"
        return 0
    fi
    local exe="$bin" flags=(--precision "$p")
    [[ $b == base ]] && { exe="$base"; flags=(); }
    # mpirun binds each rank to one core by default; a multi-threaded rank must not be bound.
    local bind=(); ((th > 1)) && bind=(--bind-to none)
    OPENBLAS_NUM_THREADS=$th OMP_NUM_THREADS=$th mpirun --oversubscribe "${bind[@]}" -np "$np" "$exe" --model "$m" --batch-size $bs \
        --max-steps $steps --epochs 100 --test-limit 1000 --log-every 100000 --no-report --grad-sync "$gs" "${flags[@]}" --out "$o" 2>"$o.log" \
        || { echo "bench: $b $m np $np $p failed: $(tail -1 "$o.log")" >&2; return 0; }
    echo "$b $m $np $th $gs $p $o/summary.json" >> "$work/rows"
}
# Every configuration runs ROUNDS times, round-robin, so that all rows see the same machine.
for ((k = 1; k <= rounds; k++)); do
    for spec in "${specs[@]}"; do run $spec "$k"; done
done
python3 - "$work/peak.json" "$out" "$work/rows" "$(nproc)" <<'PY'
import json, statistics, sys
peak = json.load(open(sys.argv[1])); out = sys.argv[2]; ncpu = int(sys.argv[4])
runs = {}
for line in open(sys.argv[3]):
    b, m, np, th, gs, p, path = line.split()
    runs.setdefault((b, m, int(np), int(th), gs, p), []).append(json.load(open(path)))
rows, torch_rows = [], {}
for (b, m, np, th, gs, p), ss in runs.items():
    if b == "torch":
        torch_rows[(m, p)] = {"model": m, "precision": p, "samples_per_second": max(s["samples_per_second"] for s in ss),
                              "samples_per_second_median": statistics.median(s["samples_per_second"] for s in ss),
                              "samples_per_second_rounds": [s["samples_per_second"] for s in ss], "torch": ss[0]["torch"],
                              "global_batch": ss[0]["global_batch_size"]}
        continue
    s = max(ss, key=lambda s: s["samples_per_second"])  # the best round
    ms = s["ms_per_step"]
    prec = s.get("compute_precision", s.get("precision", "f32"))
    cores = min(np * th, ncpu)
    pk = peak[f"peak_{prec}_gflops"]
    rows.append({"binary": b, "model": s["model"], "precision": prec, "world_size": s["world_size"], "threads": th, "grad_sync": s["grad_sync"],
                 "global_batch": s["global_batch_size"], "samples_per_second": s["samples_per_second"],
                 "samples_per_second_median": statistics.median(x["samples_per_second"] for x in ss),
                 "samples_per_second_rounds": [x["samples_per_second"] for x in ss],
                 "ms_per_step": ms, "gflops": s["train_gflops"], "cores": cores, "peak_gflops_per_core": pk,
                 "fraction_of_peak": s["train_gflops"] / (pk * cores), "peak_rss_mb_per_rank": s["peak_rss_mb_per_rank"],
                 "exchange_share": ms["allreduce"] / ms["total"] if ms["total"] else 0})
ref = {(r["binary"], r["model"], r["precision"]): r for r in rows if r["world_size"] == 1 and r["threads"] == 1}
for r in rows:
    b = ref.get((r["binary"], r["model"], r["precision"]))
    r["speedup_vs_np1"] = r["samples_per_second"] / b["samples_per_second"] if b else None
    r["median_speedup_vs_np1"] = r["samples_per_second_median"] / b["samples_per_second_median"] if b else None
json.dump({"peak": peak, "rounds": len(next(iter(runs.values()))), "rows": rows, "pytorch": list(torch_rows.values())}, open(out, "w"), indent=2)
print(f"peak of one core (oneDNN matmul, {peak['isa']}): f32 {peak['peak_f32_gflops']:.1f} GFLOP/s"
      + (f", bf16 {peak['peak_bf16_gflops']:.1f} GFLOP/s" if "peak_bf16_gflops" in peak else "")
      + f"; OpenBLAS sgemm {peak['sgemm_gflops']:.1f}; best of {len(next(iter(runs.values())))} rounds per row")
hdr = (f"{'model':7} {'bin':4} {'prec':4} {'ranks':>5} {'thr':>3} {'sync':>9} {'batch':>5} {'samples/s':>10} {'vs np1':>6} {'median':>6} {'ms/step':>7} "
       f"{'fwd':>6} {'bwd':>6} {'exch':>6} {'adam':>6} {'GFLOP/s':>7} {'%peak':>5} {'RSS MB/rank':>11}")
print(hdr); print("-" * len(hdr))
for r in rows:
    m = r["ms_per_step"]
    print(f"{r['model']:7} {r['binary']:4} {r['precision']:4} {r['world_size']:>5} {r['threads']:>3} {r['grad_sync']:>9} {r['global_batch']:>5} {r['samples_per_second']:>10.0f} "
          f"{(r['speedup_vs_np1'] or 0):>6.2f} {(r['median_speedup_vs_np1'] or 0):>6.2f} {m['total']:>7.3f} {m['forward']:>6.3f} {m['backward']:>6.3f} "
          f"{m['allreduce']:>6.3f} {m['optimizer']:>6.3f} {r['gflops']:>7.1f} {100 * r['fraction_of_peak']:>4.0f}% {max(r['peak_rss_mb_per_rank']):>11.1f}")
one = {(r["model"], r["precision"]): r for r in rows if r["binary"] == "new" and r["world_size"] == 1 and r["threads"] == 1}
base = {r["model"]: r for r in rows if r["binary"] == "base" and r["world_size"] == 1 and r["threads"] == 1}
if torch_rows or base:
    print()
    print("one thread, samples/s (best round; ratio of the best rounds, and of the medians)")
    h2 = f"{'model':7} {'prec':4} {'aetrain':>9} " + (f"{'baseline':>9} {'×base':>6} " if base else "") + (f"{'PyTorch':>9} {'×torch':>6} {'median':>6}" if torch_rows else "")
    print(h2); print("-" * len(h2))
    for (m, p), r in one.items():
        line = f"{m:7} {p:4} {r['samples_per_second']:>9.0f} "
        if base:
            b = base.get(m) if p == "f32" else None
            line += f"{b['samples_per_second']:>9.0f} {r['samples_per_second'] / b['samples_per_second']:>6.2f} " if b else f"{'':>9} {'':>6} "
        t = torch_rows.get((m, p))
        if t:
            line += f"{t['samples_per_second']:>9.0f} {r['samples_per_second'] / t['samples_per_second']:>6.2f} {r['samples_per_second_median'] / t['samples_per_second_median']:>6.2f}"
        print(line)
print(f"wrote {out}")
PY
