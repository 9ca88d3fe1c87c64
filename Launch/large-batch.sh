#!/usr/bin/env bash
# Large-batch training: mlp3 on Fashion-MNIST for 10 epochs at global batch 128 (the default)
# against global batch 1,024, plain and with the linear scaling rule and a linear warm-up
# (--scale-lr --warmup-steps, constant or cosine after it). Prints the final test MSE of each
# seed, their mean and spread, and the margin to batch 128 (README "Large global batches").
#
# The results do not depend on the machine's speed or load (fixed seeds; any world size takes the
# same steps up to float summation order). One rank each, one BLAS thread.
#
# Usage: Launch/large-batch.sh                 SEEDS="0 1 2" EPOCHS=10 NP=1 (defaults)
# Fashion-MNIST: --data-dir from $AETRAIN_FMNIST_DIR, else aetrain's default search.
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
seeds=(${SEEDS:-0 1 2})
epochs="${EPOCHS:-10}"
np="${NP:-1}"
data=()
[[ -n "${AETRAIN_FMNIST_DIR:-}" ]] && data=(--data-dir "$AETRAIN_FMNIST_DIR")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# name | flags. Batch 1,024: ceil(60000 / 1024) = 59 steps per epoch, so --warmup-steps 59 is one epoch.
configs=(
    "batch 128|--batch-size 128"
    "batch 1024|--batch-size 1024"
    "batch 1024, --scale-lr (no warm-up)|--batch-size 1024 --scale-lr"
    "batch 1024, --scale-lr --warmup-steps 59|--batch-size 1024 --scale-lr --warmup-steps 59"
    "batch 1024, --scale-lr --warmup-steps 59 --lr-schedule cosine|--batch-size 1024 --scale-lr --warmup-steps 59 --lr-schedule cosine"
    "batch 1024, --lr 0.00283 (square-root rule) --warmup-steps 59|--batch-size 1024 --lr 0.00283 --warmup-steps 59"
)
launch=()
((np > 1)) && launch=(mpirun --oversubscribe -np "$np")
printf '%-66s %s\n' "configuration ($epochs epochs, mlp3, Fashion-MNIST)" "test MSE per seed (${seeds[*]}) | mean | spread | vs batch 128"
base=""
for c in "${configs[@]}"; do
    name="${c%%|*}"; read -r -a flags <<< "${c#*|}"
    vals=()
    for s in "${seeds[@]}"; do
        o="$work/$(echo "$name" | tr -c 'a-z0-9' '_')-s$s"
        "${launch[@]}" "$bin" --model mlp3 "${data[@]}" --epochs "$epochs" --seed "$s" --no-report --log-every 100000 \
            "${flags[@]}" --out "$o" 2>"$o.log" || { echo "large-batch: $name seed $s failed: $(tail -1 "$o.log")" >&2; exit 1; }
        vals+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["test_mse"])' "$o/summary.json")")
    done
    line="$(python3 - "${vals[@]}" <<'EOF'
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
print(" ".join(f"{x:.5f}" for x in v), f"| {statistics.mean(v):.5f} | {max(v) - min(v):.5f}")
EOF
)"
    mean="$(echo "$line" | awk -F'|' '{print $2}' | tr -d ' ')"
    [[ -z "$base" ]] && base="$mean"
    rel="$(python3 -c "import sys; print(f'{(float(sys.argv[1]) / float(sys.argv[2]) - 1) * 100:+.1f} %')" "$mean" "$base")"
    printf '%-66s %s | %s\n' "$name" "$line" "$rel"
done
