#!/usr/bin/env bash
# The scaling model on this machine (README "Scaling model"):
#  1. `aetrain comm-sweep` under mpirun -np 2: MPI_Allreduce and the ring all-reduce from 8 B to
#     4 MB, a node barrier, memory copies; fitted α and β (sweep.json).
#  2. Short runs (STEPS steps of MODEL at global batch BATCH, Fashion-MNIST, ROUNDS rounds
#     round-robin, the best round of each kept): np 1; np 2 and 4 with the shared exchange and the
#     all-reduce; np 4 as 2 × 2 pretend nodes (hierarchical) and 4 × 1 (all-reduce); np 2 as 2 × 1
#     (all-reduce, and hierarchical: the ring across two pretend nodes).
#  3. `aetrain scale-model` from the np 1 run and the sweep: predicted against measured samples/s
#     for every run, then the predicted table for 1–64 nodes of RANKS_PER_NODE ranks at each of
#     BATCHES; and the same with a cluster's network (CLUSTER_ALPHA s, CLUSTER_BETA s/B per node,
#     CLUSTER_RANKS_PER_NODE ranks per node) when CLUSTER_ALPHA is set.
# Everything lands in OUT (default ./scaling-run). Timings move with the machine's load: read the
# ratios. About 2 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
bin="${AETRAIN_BIN:-}"
if [[ -z "$bin" ]]; then
    swift build -c release >&2
    bin="$(swift build -c release --show-bin-path)/aetrain"
fi
[[ "$(id -u)" -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
model="${MODEL:-mlp3}" batch="${BATCH:-128}" steps="${STEPS:-600}" rounds="${ROUNDS:-3}"
cores="${MACHINE_CORES:-$(nproc --all)}" perNode="${RANKS_PER_NODE:-$(nproc --all)}"
out="${OUT:-scaling-run}"
mkdir -p "$out/runs"
mpirun --oversubscribe -np 2 "$bin" comm-sweep --output "$out/sweep.json" > /dev/null
# name np ranks-per-node(pretend; "-" = the real node) grad-sync
specs=("np1 1 - auto" "np2-shared 2 - auto" "np2-allreduce 2 - allreduce" "np4-shared 4 - auto" "np4-allreduce 4 - allreduce"
       "np4-2x2-hierarchical 4 2 auto" "np4-4x1-allreduce 4 1 auto" "np2-2x1-allreduce 2 1 auto" "np2-2x1-hierarchical 2 1 hierarchical")
for ((k = 1; k <= rounds; k++)); do
    for s in "${specs[@]}"; do
        read -r name np rpn gs <<< "$s"
        env=(); [[ $rpn != - ]] && env=(-x "AETRAIN_TEST_RANKS_PER_NODE=$rpn")
        o="$out/runs/$name-r$k"
        mpirun --oversubscribe -np "$np" "${env[@]}" "$bin" --model "$model" --batch-size "$batch" --max-steps "$steps" --epochs 100 \
            --test-limit 1000 --log-every 100000 --no-report --grad-sync "$gs" --out "$o" 2>"$o.log" \
            || { echo "scaling: $name failed: $(tail -1 "$o.log")" >&2; exit 1; }
    done
done
# The best round of each configuration.
best=()
for s in "${specs[@]}"; do
    read -r name _ <<< "$s"
    b="$(python3 - "$out/runs/$name"-r*/summary.json <<'EOF'
import json, sys
print(max(sys.argv[1:], key=lambda p: json.load(open(p))["samples_per_second"]))
EOF
)"
    mkdir -p "$out/best/$name" && cp "$b" "$out/best/$name/summary.json"
    best+=(--compare "$out/best/$name/summary.json")
done
common=(--summary "$out/best/np1/summary.json" --sweep "$out/sweep.json" --ranks-per-node "$perNode" --cores-per-node "$cores")
"$bin" scale-model "${common[@]}" --machine-cores "$cores" --batch-size "$batch" "${best[@]}" | tee "$out/validation.txt"
for b in ${BATCHES:-128 1024}; do
    echo
    "$bin" scale-model "${common[@]}" --batch-size "$b" | tee "$out/predicted-b$b.txt"
done
if [[ -n "${CLUSTER_ALPHA:-}" ]]; then
    for b in ${BATCHES:-128 1024}; do
        echo
        "$bin" scale-model --summary "$out/best/np1/summary.json" --sweep "$out/sweep.json" --alpha "$CLUSTER_ALPHA" --beta "${CLUSTER_BETA:?set CLUSTER_BETA}" \
            --ranks-per-node "${CLUSTER_RANKS_PER_NODE:-32}" --batch-size "$b" | tee "$out/cluster-b$b.txt"
    done
fi
