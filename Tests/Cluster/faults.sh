#!/usr/bin/env bash
# Fault injection for aetrain under `mpirun -np 2`: preemption, a stopped rank, a killed rank,
# bad inputs, a full disk and a diverging loss. Each case checks the exit code (mpirun's and,
# where every rank exits by itself, each rank's), a one-line message naming the file or flag and
# the cause, that it ends within seconds, and that the last checkpoint still validates
# (`aetrain info`). Prints PASS/FAIL per case with the reason and measured times; the last line
# is "N passed, M failed[, K skipped]" and the exit status is 1 when anything failed.
#
# Time limits are not fixed numbers of seconds: a healthy 4-step run under the same mpirun is timed
# first (BASE), and each limit is a multiple of it plus a few seconds, so they hold on a loaded
# machine while a hang (ended by `timeout` at 60 s) still fails.
#
# Environment: AETRAIN_BIN (default .build/release/aetrain, built when missing),
#   AETRAIN_MNIST_DIR (default ./data/mnist in the repository), AETRAIN_FAULTS_KEEP=1 keeps the
#   temp dir (under $TMPDIR, default /tmp).
# Needs root only for the tmpfs cases (full disk, read-only --out); they print SKIP otherwise
# (Launch/test.sh counts a SKIP as a failure unless AETRAIN_ALLOW_SKIP=1).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

started=$(date +%s)
passed=0
failed=0
skipped=0
say() { printf '[faults %3ds] %s\n' "$(($(date +%s) - started))" "$*"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }

# --- the binary, data, MPI environment --------------------------------------------------------
T="$(mktemp -d "${TMPDIR:-/tmp}/aetrain-faults.XXXXXX")"
bin="${AETRAIN_BIN:-$root/.build/release/aetrain}"
if [[ ! -x "$bin" ]]; then
    say "building aetrain (swift build -c release)"
    timeout 900 swift build -c release >"$T/build.log" 2>&1 \
        || { say "FAIL: build failed: $(tail -n 3 "$T/build.log" | tr '\n' '|')"; echo "0 passed, 1 failed"; exit 1; }
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
command -v mpirun >/dev/null || { say "FAIL: mpirun not found (apt-get install openmpi-bin)"; echo "0 passed, 1 failed"; exit 1; }

dataset=mnist
data=""
for d in "${AETRAIN_MNIST_DIR:-}" "$root/data/mnist"; do
    if [[ -n "$d" && -e "$d/train-images-idx3-ubyte.gz" ]]; then data="$(cd "$d" && pwd)"; break; fi
done
[[ -n "$data" ]] || { say "FAIL: MNIST not found: set AETRAIN_MNIST_DIR or put the four files in ./data/mnist (Launch/test.sh finds or fetches them)"; echo "0 passed, 1 failed"; exit 1; }

if [[ "$(id -u)" -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
export SWIFT_BACKTRACE=enable=no   # a crash should print its one line, not a page of backtrace
mpi=(mpirun -np 2)
(($(nproc) < 2)) && mpi+=(--oversubscribe)

mounts=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local left
    left="$(pgrep -f -- "$T/" 2>/dev/null | grep -vx "$$" || true)"
    if [[ -n "$left" ]]; then
        # shellcheck disable=SC2086
        kill -CONT $left 2>/dev/null
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
    fi
    for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
    if [[ "${AETRAIN_FAULTS_KEEP:-0}" == 1 ]]; then say "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# Each rank records its own exit code (bad-input cases, where every rank must exit by itself).
# Once one rank has exited non-zero, mpirun sends TERM to the others: the trap (a handler, so the
# child keeps default signal dispositions) is deferred until the child has exited, so the
# wrapper still records the child's own code, and a rank that mpirun really killed shows 143/137.
wrap="$T/rank-exit.sh"
cat >"$wrap" <<'EOF'
#!/bin/sh
trap ': deferred until the child exits' TERM INT
"$@"
rc=$?
[ -n "${AET_RCDIR:-}" ] && echo "$rc" >"$AET_RCDIR/rank-${OMPI_COMM_WORLD_RANK:-x}"
exit $rc
EOF
chmod +x "$wrap"

result() { # result NAME REASONS...: PASS when no reasons
    local name="$1"; shift
    if (($# == 0)); then
        passed=$((passed + 1)); say "PASS: $name"
    else
        failed=$((failed + 1)); say "FAIL: $name: $(IFS=';'; echo "$*")"
    fi
}
skip_case() { skipped=$((skipped + 1)); say "SKIP: $1"; }

# --- synthetic IDX files (pure bash: printf for the header, /dev/urandom for pixels) ----------
be32() { local v=$1; printf "\\x$(printf %02x $(((v >> 24) & 255)))\\x$(printf %02x $(((v >> 16) & 255)))\\x$(printf %02x $(((v >> 8) & 255)))\\x$(printf %02x $((v & 255)))"; }
mk_images() { # mk_images FILE COUNT [MAGIC] [COUNT_ACTUALLY_WRITTEN]
    local f="$1" n="$2" magic="${3:-2051}" actual="${4:-$2}"
    { be32 "$magic"; be32 "$n"; be32 28; be32 28; head -c $((actual * 784)) /dev/urandom; } | gzip -c >"$f"
}
mk_labels() { # mk_labels FILE COUNT [MAGIC]
    local f="$1" n="$2" magic="${3:-2049}"
    { be32 "$magic"; be32 "$n"; head -c "$n" /dev/zero; } | gzip -c >"$f"
}
good="$T/data/good"
mkdir -p "$good"
mk_images "$good/train-images-idx3-ubyte.gz" 256
mk_labels "$good/train-labels-idx1-ubyte.gz" 256
mk_images "$good/t10k-images-idx3-ubyte.gz" 64
mk_labels "$good/t10k-labels-idx1-ubyte.gz" 64
bad_dir() { # bad_dir NAME -> a copy of the good set to damage
    local d="$T/data/$1"
    rm -rf "$d"; cp -r "$good" "$d"; echo "$d"
}

small=(--dataset mnist --model mlp3 --batch-size 64 --max-steps 4 --log-every 1)

# BASE: the fastest of two healthy 4-step runs on the synthetic set under the same mpirun
# (start-up, data, 4 steps, checkpoint, teardown). Limits are K·BASE + C seconds, never less than
# a fixed floor.
mkdir -p "$T/log"
base=""
for attempt in 1 2; do
    t0=$(now)
    if ! timeout -k 5 60 "${mpi[@]}" "$bin" "${small[@]}" --data-dir "$good" --out "$T/o/base-$attempt" \
        >"$T/log/base.out" 2>"$T/log/base.err"; then
        say "FAIL: a healthy 4-step run failed: $(grep -m1 'error' "$T/log/base.err")"
        echo "0 passed, 1 failed"
        exit 1
    fi
    dt=$(secs "$t0" "$(now)")
    if [[ -z "$base" ]] || ! le "$base" "$dt"; then base="$dt"; fi
done
limit() { # limit K C FLOOR: max(K·BASE + C, FLOOR) seconds
    awk -v b="$base" -v k="$1" -v c="$2" -v f="$3" 'BEGIN { v = k * b + c; printf "%.1f", (v > f) ? v : f }'
}
say "TIME baseline: a healthy 4-step run under ${mpi[*]} takes $base s"

# --- the bad-input runner ----------------------------------------------------------------------
# expect NAME RC PATTERN [mpirun-layout...] -- aetrain args
#   default layout: -np 2 with every rank's exit code recorded. PATTERN is an ERE that rank 0's
#   single "error: ..." line must match.
expect() {
    local name="$1" want="$2" pattern="$3"; shift 3
    local rcdir="$T/rc/$name" errf="$T/log/$name.err" t0 t1 rc dt
    mkdir -p "$rcdir" "$T/log"
    t0=$(now)
    AET_RCDIR="$rcdir" timeout -k 5 60 "${mpi[@]}" "$wrap" "$bin" "$@" >"$T/log/$name.out" 2>"$errf"
    rc=$?
    t1=$(now); dt=$(secs "$t0" "$t1")
    judge "$name" "$want" "$pattern" "$rc" "$dt" "$rcdir" "$errf" 2
}
judge() { # judge NAME WANT PATTERN RC SECONDS RCDIR ERRFILE RANKS
    # Rank 0 must print exactly one (distinct) "error: ..." line; the cause (PATTERN) must be in
    # rank 0's line or, when another rank found the fault, in that rank's "rank N: error:" line.
    local name="$1" want="$2" pattern="$3" rc="$4" dt="$5" rcdir="$6" errf="$7" ranks="$8"
    local why=() r f lines line match
    [[ "$rc" == "$want" ]] || why+=("mpirun exit $rc, expected $want")
    for ((r = 0; r < ranks; r++)); do
        f="$rcdir/rank-$r"
        if [[ ! -f "$f" ]]; then why+=("rank $r did not exit by itself (killed)")
        elif [[ "$(cat "$f")" != "$want" ]]; then why+=("rank $r exited $(cat "$f"), expected $want"); fi
    done
    local lim
    lim=$(limit 3 10 15)  # start-up and the failing read, not a hang
    le "$dt" "$lim" || why+=("took $dt s (limit $lim s: 3 × baseline + 10, at least 15)")
    lines="$(grep '^error: ' "$errf" | sort -u | grep -c .)"
    line="$(grep -m1 '^error: ' "$errf")"
    match="$(grep -E '^(rank [0-9]+: )?error: ' "$errf" | grep -m1 -E -- "$pattern")"
    [[ "$lines" == 1 ]] || why+=("rank 0 printed $lines distinct 'error:' lines, expected 1 ($(grep -v -e '^-' -e '^ ' -e '^$' -e '^epoch' "$errf" | head -n 3 | tr '\n' '|' | cut -c1-300))")
    [[ -n "$match" ]] || why+=("no message matches /$pattern/ (got: $(grep -E '^(rank [0-9]+: )?error: ' "$errf" | sort -u | tr '\n' '|' | cut -c1-300))")
    [[ -n "$match" && "$match" != "$line" ]] && line="$line | $match"
    result "$name (exit $rc in $dt s): ${line:-no message}" "${why[@]}"
}

say "aetrain $("$bin" --version 2>/dev/null) at $bin; data $data ($dataset); temp $T"

# ================================================================================================
# 1. Bad inputs: every rank exits non-zero within seconds with one line naming the file/flag.
# ================================================================================================
d=$(bad_dir missing); rm "$d/train-labels-idx1-ubyte.gz"
expect missing-file 3 'train-labels-idx1-ubyte\.gz: file not found' "${small[@]}" --data-dir "$d" --out "$T/o/missing"

d=$(bad_dir empty); : >"$d/train-images-idx3-ubyte.gz"
expect empty-file 3 'train-images-idx3-ubyte\.gz: empty file' "${small[@]}" --data-dir "$d" --out "$T/o/empty"

d=$(bad_dir notgzip); head -c 5000 /dev/urandom | tr -d '\037' >"$d/train-images-idx3-ubyte.gz"
expect not-gzip 3 'train-images-idx3-ubyte\.gz: not a gzip file' "${small[@]}" --data-dir "$d" --out "$T/o/notgzip"

d=$(bad_dir corrupt)
{ head -c 200 "$good/train-images-idx3-ubyte.gz"; head -c 3000 /dev/urandom; } >"$d/train-images-idx3-ubyte.gz"
expect corrupt-gzip-stream 3 'train-images-idx3-ubyte\.gz: (corrupt gzip data|truncated)' "${small[@]}" --data-dir "$d" --out "$T/o/corrupt"

d=$(bad_dir magic); mk_images "$d/train-images-idx3-ubyte.gz" 256 2049
expect wrong-magic 3 'train-images-idx3-ubyte\.gz: wrong magic number 0x801' "${small[@]}" --data-dir "$d" --out "$T/o/magic"

d=$(bad_dir count); mk_labels "$d/train-labels-idx1-ubyte.gz" 200
expect count-mismatch 3 'train-labels-idx1-ubyte\.gz: 200 labels but .*train-images-idx3-ubyte\.gz has 256 images' \
    "${small[@]}" --data-dir "$d" --out "$T/o/count"

d=$(bad_dir truncated); mk_images "$d/train-images-idx3-ubyte.gz" 256 2051 100
expect truncated-file 3 'train-images-idx3-ubyte\.gz: truncated' "${small[@]}" --data-dir "$d" --out "$T/o/truncated"

expect unknown-model 2 '--model nosuchmodel: unknown model' "${small[@]}" --data-dir "$good" --model nosuchmodel --out "$T/o/model"
expect batch-size-0 2 '--batch-size 0: must be positive' "${small[@]}" --data-dir "$good" --batch-size 0 --out "$T/o/bs0"
# Typed as users type it, with a space. (A bug: ArgumentParser reads "-5" as an option and says
# "Missing value for '--batch-size'"; --batch-size=-5 gets the right message.)
expect batch-size-minus-5 2 '--batch-size -5: must be positive' "${small[@]}" --data-dir "$good" --batch-size -5 --out "$T/o/bsm5"
expect lr-0 2 '--lr 0(\.0)?: must be a positive number' "${small[@]}" --data-dir "$good" --lr 0 --out "$T/o/lr0"
expect lr-minus-1 2 '--lr -1(\.0)?: must be a positive number' "${small[@]}" --data-dir "$good" --lr -1 --out "$T/o/lrm1"
expect world-larger-than-batch 2 '--batch-size 1: smaller than the world size 2' "${small[@]}" --data-dir "$good" --batch-size 1 --out "$T/o/bs1"
expect data-dir-is-a-file 3 '--data-dir .*: is a file' "${small[@]}" --data-dir "$good/train-images-idx3-ubyte.gz" --out "$T/o/ddfile"

: >"$T/a-regular-file"
expect out-under-a-file 4 '--out .*a-regular-file/out: .*([Nn]ot a directory)' "${small[@]}" --data-dir "$good" --out "$T/a-regular-file/out"

mkdir -p "$T/ro"
if [[ "$(id -u)" -eq 0 ]] && mount -t tmpfs -o ro,size=64k tmpfs "$T/ro" 2>/dev/null; then
    mounts+=("$T/ro")
    expect out-read-only-fs 4 "--out $T/ro: not writable: Read-only file system" "${small[@]}" --data-dir "$good" --out "$T/ro"
else
    skip_case "out-read-only-fs: cannot mount a read-only tmpfs here"
fi

# A run that finishes, for the checkpoint cases.
done_out="$T/o/finished"
timeout -k 5 60 "${mpi[@]}" "$bin" --dataset mnist --data-dir "$good" --model mlp3 --batch-size 64 --epochs 1 \
    --out "$done_out" >"$T/log/finished.out" 2>"$T/log/finished.err"
ck="$(ls "$done_out"/checkpoints/step-*.safetensors 2>/dev/null | tail -n 1)"
if [[ -n "$ck" ]]; then
    expect checkpoint-of-another-model 3 "$ck: checkpoint is for model mlp3, this run is deep32" \
        --dataset mnist --data-dir "$good" --model deep32 --batch-size 64 --max-steps 4 --resume "$ck" --out "$T/o/deep32"
    # Running a finished job again with --resume auto (what a requeued or resubmitted sbatch job
    # does) must simply report the finished run (nothing left to train) and exit 0.
    mkdir -p "$T/rc/rerun-finished"
    t0=$(now)
    AET_RCDIR="$T/rc/rerun-finished" timeout -k 5 60 "${mpi[@]}" "$wrap" "$bin" --dataset mnist --data-dir "$good" \
        --model mlp3 --batch-size 64 --epochs 1 --resume auto --out "$done_out" >"$T/log/rerun.out" 2>"$T/log/rerun.err"
    rc=$?; dt=$(secs "$t0" "$(now)")
    why=()
    [[ "$rc" == 0 ]] || why+=("mpirun exit $rc, expected 0 ($(grep -v -e '^-' -e '^ ' -e '^$' "$T/log/rerun.err" | tail -n 2 | tr '\n' '|' | cut -c1-240))")
    grep -q 'resuming from' "$T/log/rerun.err" || why+=("no 'resuming from' line")
    result "rerun-finished-with-resume-auto (exit $rc in $dt s)" "${why[@]}"
else
    result "finished run for the checkpoint cases" "no checkpoint written ($(tail -n 2 "$T/log/finished.err" | tr '\n' '|'))"
fi

# Config mismatch between ranks (MPMD: one flag differs).
mkdir -p "$T/rc/config-mismatch"
t0=$(now)
AET_RCDIR="$T/rc/config-mismatch" timeout -k 5 60 mpirun -np 1 "$wrap" "$bin" "${small[@]}" --data-dir "$good" --lr 1e-3 --out "$T/o/mm" \
    : -np 1 "$wrap" "$bin" "${small[@]}" --data-dir "$good" --lr 2e-3 --out "$T/o/mm" >"$T/log/mm.out" 2>"$T/log/mm.err"
rc=$?
# The message must name the setting that differs (lr), not only that something does.
judge config-mismatch 6 "configuration differs from rank 0's.*lr" "$rc" "$(secs "$t0" "$(now)")" "$T/rc/config-mismatch" "$T/log/mm.err" 2

# Launch mismatch: the scheduler asked for 4 tasks but only 2 ranks joined.
mkdir -p "$T/rc/launch-mismatch"
t0=$(now)
AET_RCDIR="$T/rc/launch-mismatch" timeout -k 5 60 "${mpi[@]}" -x SLURM_NTASKS=4 "$wrap" "$bin" "${small[@]}" --data-dir "$good" \
    --out "$T/o/lm" >"$T/log/lm.out" 2>"$T/log/lm.err"
rc=$?
judge launch-mismatch 6 "MPI world size is 2 but SLURM_NTASKS=4" "$rc" "$(secs "$t0" "$(now)")" "$T/rc/launch-mismatch" "$T/log/lm.err" 2

# ================================================================================================
# 2. Full disk: a 1 MiB tmpfs as --out; an mlp3 checkpoint (~2.6 MB) cannot be written.
# ================================================================================================
mkdir -p "$T/full"
if [[ "$(id -u)" -eq 0 ]] && mount -t tmpfs -o size=1M tmpfs "$T/full" 2>/dev/null; then
    mounts+=("$T/full")
    expect full-disk-stop 4 'checkpoint failed at step 2: .*step-00000002\.safetensors: write failed: No space left on device' \
        "${small[@]}" --data-dir "$good" --checkpoint-every 2 --out "$T/full/stop"
    leftovers="$(ls -A "$T/full/stop/checkpoints" 2>/dev/null | tr '\n' ' ')"
    result "full-disk-stop leaves no partial or temp checkpoint files (${leftovers:-none})" \
        ${leftovers:+"found: $leftovers"}
    rm -rf "$T/full/stop"
    t0=$(now)
    timeout -k 5 60 "${mpi[@]}" "$bin" "${small[@]}" --data-dir "$good" --checkpoint-every 2 --on-checkpoint-error continue \
        --out "$T/full/cont" >"$T/log/full-cont.out" 2>"$T/log/full-cont.err"
    rc=$?; dt=$(secs "$t0" "$(now)")
    why=()
    [[ "$rc" == 0 ]] || why+=("exit $rc, expected 0 ($(grep '^error' "$T/log/full-cont.err" | head -n 1))")
    grep -q 'warning: checkpoint not written at step 2: .*No space left on device' "$T/log/full-cont.err" \
        || why+=("no warning naming the step and the cause")
    [[ -f "$T/full/cont/summary.json" ]] || why+=("no summary.json")
    result "full-disk-continue (exit $rc in $dt s): $(grep -m1 '^warning: checkpoint' "$T/log/full-cont.err" | cut -c1-160)" "${why[@]}"
else
    skip_case "full disk: cannot mount a 1 MiB tmpfs here (needs root and mount permission)"
fi
# metrics.jsonl on a full disk: a 64 KiB tmpfs with 3 pages left (the lock file and config.json
# take one each, metrics.jsonl fills the third): every line is whole, the warning names ENOSPC, and summary.json
# then cannot be written either (exit 4).
mkdir -p "$T/full2"
if [[ "$(id -u)" -eq 0 ]] && mount -t tmpfs -o size=64k tmpfs "$T/full2" 2>/dev/null; then
    mounts+=("$T/full2")
    head -c $((13 * 4096)) /dev/zero >"$T/full2/filler"
    mkdir -p "$T/full2/m"
    mkdir -p "$T/rc/full-metrics"
    t0=$(now)
    AET_RCDIR="$T/rc/full-metrics" timeout -k 5 60 "${mpi[@]}" "$wrap" "$bin" "${small[@]}" --data-dir "$good" --max-steps 80 --epochs 100 \
        --on-checkpoint-error continue --out "$T/full2/m" >"$T/log/full-metrics.out" 2>"$T/log/full-metrics.err"
    rc=$?; dt=$(secs "$t0" "$(now)")
    judge full-metrics 4 'summary\.json: .*No space left on device' "$rc" "$dt" "$T/rc/full-metrics" "$T/log/full-metrics.err" 2
    m="$T/full2/m/metrics.jsonl"
    why=()
    lines=$(grep -c . "$m" 2>/dev/null); lines=${lines:-0}
    ((lines > 10 && lines < 80)) || why+=("$lines lines in metrics.jsonl, expected some but not all")
    [[ "$(tail -c 1 "$m" | od -An -c | tr -d ' ')" == '\n' ]] || why+=("metrics.jsonl ends in a torn line: $(tail -c 40 "$m")")
    bad=$(grep -cv '^{.*}$' "$m" || true)
    ((bad == 0)) || why+=("$bad lines are not whole JSON objects")
    grep -q "^warning: .*metrics.jsonl: cannot append metrics: No space left on device" "$T/log/full-metrics.err" \
        || why+=("no warning naming ENOSPC ($(grep -m1 'metrics' "$T/log/full-metrics.err" | cut -c1-160))")
    result "full-disk metrics.jsonl: $lines whole lines, $(grep -m1 'cannot append metrics' "$T/log/full-metrics.err" | sed 's/.*cannot/cannot/' | cut -c1-80)" "${why[@]}"
else
    skip_case "full-disk metrics.jsonl: cannot mount a 64 KiB tmpfs here (needs root and mount permission)"
fi

# ================================================================================================
# 3. Non-finite loss: a huge learning rate.
# ================================================================================================
expect nan-stop 5 'non-finite loss or gradient at step [0-9]+ .*--on-nan skip' \
    --dataset "$dataset" --data-dir "$data" --train-limit 1000 --test-limit 200 --max-steps 20 --lr 1e6 --out "$T/o/nan"
t0=$(now)
timeout -k 5 60 "${mpi[@]}" "$bin" --dataset "$dataset" --data-dir "$data" --train-limit 1000 --test-limit 200 --max-steps 20 \
    --lr 1e6 --on-nan skip --out "$T/o/nanskip" >"$T/log/nanskip.out" 2>"$T/log/nanskip.err"
rc=$?; dt=$(secs "$t0" "$(now)")
why=()
[[ "$rc" == 0 ]] || why+=("exit $rc, expected 0")
grep -q 'step skipped (--on-nan skip)' "$T/log/nanskip.err" || why+=("no 'step skipped' warning")
grep -q '"steps" : 20' "$T/o/nanskip/summary.json" 2>/dev/null || why+=("summary.json does not show 20 steps")
result "nan-skip continues to the end (exit $rc in $dt s, $(grep -c 'step skipped' "$T/log/nanskip.err") steps skipped)" "${why[@]}"

# ================================================================================================
# 4. Process faults on a real MNIST run.
# ================================================================================================
long=(--dataset "$dataset" --data-dir "$data" --model mlp3 --train-limit 10000 --test-limit 500 --batch-size 128 --log-every 1)

steps_logged() { if [[ -f "$1/metrics.jsonl" ]]; then grep -c '"loss"' "$1/metrics.jsonl" || true; else echo 0; fi; }
wait_steps() { # wait_steps OUT N PID: until metrics.jsonl has N step lines (or the run ended)
    local deadline=$(($(date +%s) + 30))
    while (($(date +%s) < deadline)) && kill -0 "$3" 2>/dev/null; do
        (($(steps_logged "$1") >= $2)) && return 0
        sleep 0.05
    done
    return 1
}
rank_pid() { # rank_pid OUT RANK: the aetrain process of that rank (argv[0] is the binary)
    local p
    for p in $(pgrep -f -- "^$bin .*--out $1( |\$)"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$p"; return 0; fi
    done
    return 1
}
wait_exit() { # wait_exit PID SECONDS: wait for a background job; sets RC
    local deadline=$(($(date +%s) + $2))
    while kill -0 "$1" 2>/dev/null && (($(date +%s) < deadline)); do sleep 0.02; done
    if kill -0 "$1" 2>/dev/null; then RC=999; return 1; fi
    wait "$1"; RC=$?
}
ckpt_info() { # ckpt_info FILE: validates; prints "step batch_in_epoch"
    "$bin" info "$1" >"$T/log/info.txt" 2>&1 || return 1
    echo "$(sed -n 's/^  step: //p' "$T/log/info.txt") $(sed -n 's/^  batch_in_epoch: //p' "$T/log/info.txt")"
}
newest_ckpt() { ls "$1"/checkpoints/step-*.safetensors 2>/dev/null | sort | tail -n 1; }

# --- preemption: SIGTERM to one rank -> all ranks checkpoint, exit 75, resume finishes ---------
out="$T/o/preempt"; max=300
mkdir -p "$T/rc/preempt"
AET_RCDIR="$T/rc/preempt" timeout -k 5 60 "${mpi[@]}" "$wrap" "$bin" "${long[@]}" --max-steps $max --checkpoint-every 0 \
    --out "$out" >"$T/log/preempt.out" 2>"$T/log/preempt.err" &
job=$!
why=()
if wait_steps "$out" 15 "$job" && victim="$(rank_pid "$out" 1)"; then
    t0=$(now); kill -TERM "$victim"
    wait_exit "$job" 30; t1=$(now); dt=$(secs "$t0" "$t1")
    say "TIME preemption: SIGTERM to rank 1 -> mpirun exited: $dt s"
    [[ "$RC" == 75 ]] || why+=("mpirun exit $RC, expected 75")
    for r in 0 1; do [[ "$(cat "$T/rc/preempt/rank-$r" 2>/dev/null)" == 75 ]] || why+=("rank $r exit $(cat "$T/rc/preempt/rank-$r" 2>/dev/null || echo killed)"); done
    lim=$(limit 2 8 10)  # finish the step, write the checkpoint, tear down
    le "$dt" "$lim" || why+=("took $dt s from signal to exit (limit $lim s: 2 × baseline + 8, at least 10)")
    grep -q '^rank 1: error: stopped by SIGTERM at step' "$T/log/preempt.err" || why+=("rank 1 did not report SIGTERM")
    grep -q '^error: stopped by a signal on another rank at step' "$T/log/preempt.err" || why+=("rank 0 did not report the other rank's signal")
    ck="$(newest_ckpt "$out")"
    if info="$(ckpt_info "$ck")"; then
        read -r cstep cbie <<<"$info"
        ((cbie > 0)) || why+=("checkpoint $ck is not mid-epoch (batch_in_epoch $cbie)")
    else
        why+=("no valid checkpoint (${ck:-none}): $(head -n 1 "$T/log/info.txt" 2>/dev/null)")
    fi
    result "preemption: SIGTERM to rank 1 -> exit ${RC} in $dt s, checkpoint $(basename "${ck:-none}") (step ${cstep:-?}, batch_in_epoch ${cbie:-?}) validates" "${why[@]}"
    # resume
    why=()
    t0=$(now)
    timeout -k 5 60 "${mpi[@]}" "$bin" "${long[@]}" --max-steps $max --checkpoint-every 0 --resume auto --out "$out" \
        >"$T/log/resume.out" 2>"$T/log/resume.err"
    rc=$?; dt=$(secs "$t0" "$(now)")
    [[ "$rc" == 0 ]] || why+=("exit $rc")
    grep -q "resuming from .*step-0*${cstep:-x}\.safetensors at step ${cstep:-x}" "$T/log/resume.err" || why+=("no 'resuming from ... at step ${cstep:-?}'")
    grep -q "\"steps\" : $max" "$out/summary.json" 2>/dev/null || why+=("summary.json steps != $max")
    grep -q "\"resumed_from_step\" : ${cstep:-x}" "$out/summary.json" 2>/dev/null || why+=("summary.json lacks resumed_from_step ${cstep:-?}")
    result "preemption: --resume auto continues from step ${cstep:-?} to $max (exit $rc in $dt s)" "${why[@]}"
else
    wait_exit "$job" 30
    result "preemption" "the run never reached step 15 or rank 1 was not found (exit ${RC:-?}; $(tail -n 2 "$T/log/preempt.err" | tr '\n' '|'))"
fi

# --- a stopped rank: SIGSTOP -> the collective watchdog ends the job ----------------------------
out="$T/o/stop"; tmo=5
timeout -k 5 60 "${mpi[@]}" "$bin" "${long[@]}" --max-steps 3000 --collective-timeout $tmo --out "$out" \
    >"$T/log/stop.out" 2>"$T/log/stop.err" &
job=$!
why=()
if wait_steps "$out" 10 "$job" && victim="$(rank_pid "$out" 1)"; then
    t0=$(now); kill -STOP "$victim"
    wait_exit "$job" $((tmo + 15)); t1=$(now); dt=$(secs "$t0" "$t1")
    if [[ "$RC" == 999 ]]; then  # still hanging: end it ourselves (stopped rank first)
        kill -CONT "$victim" 2>/dev/null; kill -KILL "$victim" 2>/dev/null
        for p in $(pgrep -f -- "^$bin .*--out $out( |\$)"); do kill -KILL "$p" 2>/dev/null; done
        wait_exit "$job" 10
        RC="hung, ended by the test after $dt s"
    fi
    kill -CONT "$victim" 2>/dev/null; kill -KILL "$victim" 2>/dev/null
    say "TIME stall detection: SIGSTOP to rank 1 -> mpirun exited: $dt s (--collective-timeout $tmo)"
    [[ "$RC" == 6 ]] || why+=("mpirun exit $RC, expected 6")
    lim=$(limit 1 $((tmo + 5)) $((tmo + 5)))  # the watchdog fires after tmo s, then the job is torn down
    le "$dt" "$lim" || why+=("took $dt s, more than --collective-timeout + baseline + 5 s ($lim s)")
    line="$(grep -m1 'pending for more than' "$T/log/stop.err")"
    grep -qE "^rank 0: collective '[a-z -]+' at step [0-9]+ pending for more than $tmo s \(--collective-timeout\)" <<<"$line" \
        || why+=("no message naming the rank, the collective and the step ($(grep -v -e '^-' -e '^ ' -e '^epoch' "$T/log/stop.err" | head -n 2 | tr '\n' '|'))")
    result "stalled rank (SIGSTOP) -> exit $RC in $dt s: ${line:-no message}" "${why[@]}"
else
    wait_exit "$job" 30
    result "stalled rank" "the run never reached step 10 or rank 1 was not found (exit ${RC:-?})"
fi

# --- a killed rank: SIGKILL -> the job ends, the previous checkpoint validates ---------------------
out="$T/o/kill9"
timeout -k 5 60 "${mpi[@]}" "$bin" "${long[@]}" --max-steps 3000 --checkpoint-every 10 --out "$out" \
    >"$T/log/kill9.out" 2>"$T/log/kill9.err" &
job=$!
why=()
if wait_steps "$out" 25 "$job" && victim="$(rank_pid "$out" 1)"; then
    t0=$(now); kill -KILL "$victim"
    wait_exit "$job" 40; t1=$(now); dt=$(secs "$t0" "$t1")
    say "TIME kill -9 of rank 1 -> mpirun exited: $dt s"
    [[ "$RC" != 0 && "$RC" != 999 ]] || why+=("mpirun exit $RC, expected non-zero")
    lim=$(limit 2 8 10)
    le "$dt" "$lim" || why+=("took $dt s (limit $lim s: 2 × baseline + 8, at least 10)")
    left="$(pgrep -f -- "^$bin .*--out $out( |\$)" | tr '\n' ' ')"
    [[ -z "$left" ]] || why+=("ranks still alive: $left")
    ck="$(newest_ckpt "$out")"
    if info="$(ckpt_info "$ck")"; then
        read -r cstep cbie <<<"$info"
    else
        why+=("newest checkpoint ${ck:-none} does not validate: $(head -n 1 "$T/log/info.txt" 2>/dev/null)")
    fi
    tmp="$(ls -A "$out/checkpoints" | grep -v '^step-' | tr '\n' ' ')"
    result "killed rank (SIGKILL) -> exit $RC in $dt s; previous checkpoint $(basename "${ck:-none}") (step ${cstep:-?}) validates${tmp:+; temp files left: $tmp}" "${why[@]}"
    # It can be resumed.
    why=()
    timeout -k 5 60 "${mpi[@]}" "$bin" "${long[@]}" --max-steps $((cstep + 5)) --checkpoint-every 10 --resume auto --out "$out" \
        >"$T/log/kill9-resume.out" 2>"$T/log/kill9-resume.err"
    rc=$?
    [[ "$rc" == 0 ]] || why+=("exit $rc")
    grep -q "resuming from .* at step ${cstep:-x}" "$T/log/kill9-resume.err" || why+=("did not resume from step ${cstep:-?}")
    result "killed rank: --resume auto continues from step ${cstep:-?} (exit $rc)" "${why[@]}"
else
    wait_exit "$job" 30
    result "killed rank" "the run never reached step 25 or rank 1 was not found (exit ${RC:-?})"
fi

say "total $(($(date +%s) - started)) s"
if ((skipped)); then echo "$passed passed, $failed failed, $skipped skipped"; else echo "$passed passed, $failed failed"; fi
((failed == 0))
