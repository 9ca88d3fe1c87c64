#!/usr/bin/env bash
# End-to-end test of Launch/aetrain.sbatch on a real single-node Slurm (22.05, localhost only).
#
# Starts its own slurmctld and slurmd (auth/none, free loopback ports, state in a temp dir),
# then, for each launcher the sbatch script supports (srun --mpi=pmix and mpirun):
#   (a) submits a short 2-task MNIST job and checks COMPLETED, summary.json (world_size 2) and
#       metrics.jsonl;
#   (b) submits a longer job, preempts it with `scancel --batch --signal=USR1` once it is
#       training, and checks: exit 75 after a mid-epoch checkpoint that validates, the job
#       requeues itself, the second run logs "resuming from" and finishes with steps == max
#       steps and resumed_from_step set. Prints the time from the signal to the first run's exit.
# Every daemon and job it started is stopped on exit (scancel, TERM, KILL after 10 s).
#
# Deadlines are not fixed numbers of seconds: the same 40-step run is first timed under a plain
# `mpirun -np 2` (BASE), and each deadline is a multiple of it plus a margin for Slurm's scheduling,
# so they hold on a loaded machine while a job that hangs still fails.
#
# Needs root (slurmd) and the Debian packages slurmctld slurmd slurm-client (installed with
# apt-get when missing); prints SKIP and exits 0 when it cannot have them (Launch/test.sh counts
# a SKIP as a failure unless AETRAIN_ALLOW_SKIP=1).
# Environment: AETRAIN_BIN (default .build/release/aetrain, built when missing),
#   AETRAIN_MNIST_DIR (default ./data/mnist in the repository), AETRAIN_E2E_KEEP=1 keeps the
#   temp dir (under $TMPDIR, default /tmp). Last line: "N passed, M failed"; exit status 1 when
#   anything failed.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

started=$(date +%s)
passed=0
failed=0
say() { printf '[slurm-e2e %3ds] %s\n' "$(($(date +%s) - started))" "$*"; }
pass() { passed=$((passed + 1)); say "PASS: $*"; }
fail() { failed=$((failed + 1)); say "FAIL: $*"; }
check() { # check "description" command...
    local what="$1"; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
skip() {
    say "SKIP: $*"
    echo "0 passed, 0 failed, 1 skipped"
    exit 0
}

# --- prerequisites -------------------------------------------------------------------------
[[ "$(id -u)" -eq 0 ]] || skip "not root: slurmd needs root to launch job steps"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null; then
    if ! command -v apt-get >/dev/null; then skip "Slurm is not installed and there is no apt-get"; fi
    say "installing slurmctld slurmd slurm-client"
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(slurmctld slurmd slurm-client)
    aptlog="${TMPDIR:-/tmp}/slurm-e2e-apt.$$.log"
    if ! timeout 240 apt-get install -y --no-install-recommends "${pkgs[@]}" >"$aptlog" 2>&1; then
        timeout 120 apt-get update >>"$aptlog" 2>&1
        timeout 240 apt-get install -y --no-install-recommends "${pkgs[@]}" >>"$aptlog" 2>&1 \
            || skip "apt-get could not install ${pkgs[*]} (see $aptlog)"
    fi
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        || skip "Slurm commands still missing after apt-get install"
fi

bin="${AETRAIN_BIN:-$root/.build/release/aetrain}"
if [[ ! -x "$bin" ]]; then
    say "building aetrain (swift build -c release)"
    buildlog="${TMPDIR:-/tmp}/slurm-e2e-build.$$.log"
    timeout 600 swift build -c release >"$buildlog" 2>&1 \
        || { say "FAIL: build failed (see $buildlog)"; echo "0 passed, 1 failed"; exit 1; }
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
export AETRAIN_BIN="$bin"

data=""
for d in "${AETRAIN_MNIST_DIR:-}" "$root/data/mnist"; do
    if [[ -n "$d" && -e "$d/train-images-idx3-ubyte.gz" ]]; then data="$(cd "$d" && pwd)"; break; fi
done
[[ -n "$data" ]] || { say "FAIL: MNIST not found: set AETRAIN_MNIST_DIR or put the four files in ./data/mnist (Launch/test.sh finds or fetches them)"; echo "0 passed, 1 failed"; exit 1; }

# --- temp dir, ports, slurm.conf ----------------------------------------------------------
T="$(mktemp -d "${TMPDIR:-/tmp}/aetrain-slurm.XXXXXX")"
chmod 755 "$T"
mkdir -p "$T/state" "$T/spool" "$T/logs" "$T/work"

ctld_pid=""
slurmd_pid=""
export SLURM_CONF="$T/slurm.conf"

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$ctld_pid" ]] && kill -0 "$ctld_pid" 2>/dev/null; then
        local jobs
        jobs="$(timeout 5 squeue -h -o %i 2>/dev/null)"
        if [[ -n "$jobs" ]]; then
            # shellcheck disable=SC2086
            timeout 5 scancel $jobs 2>/dev/null
            for _ in $(seq 30); do
                [[ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ]] && break
                sleep 0.5
            done
        fi
    fi
    local pids=()
    for p in $slurmd_pid $ctld_pid; do kill -0 "$p" 2>/dev/null && pids+=("$p"); done
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null
        for _ in $(seq 100); do
            local alive=0
            for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
            ((alive)) || break
            sleep 0.1
        done
        for p in "${pids[@]}"; do
            if kill -0 "$p" 2>/dev/null; then say "daemon $p still alive after 10 s: KILL"; kill -KILL "$p" 2>/dev/null; fi
        done
    fi
    # Any job process left behind (its command line holds our temp dir): end it by PID.
    local left
    left="$(pgrep -f -- "$T/" 2>/dev/null | grep -vx "$$" || true)"
    if [[ -n "$left" ]]; then
        say "leftover job processes: $left: KILL"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
    fi
    if [[ "${AETRAIN_E2E_KEEP:-0}" == 1 ]]; then say "kept $T"; else rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# BASE: the short job's run under a plain mpirun (whole seconds, rounded up); deadlines below are
# K·BASE + C seconds, never less than the fixed deadlines they replace.
t0=$(date +%s.%N)
if ! OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1 timeout -k 5 120 mpirun --oversubscribe -np 2 \
    "$bin" --dataset mnist --data-dir "$data" --model mlp3 --test-limit 1000 --batch-size 128 --max-steps 40 --train-limit 4000 \
    --log-every 10 --out "$T/base" >"$T/logs/base.out" 2>&1; then
    say "FAIL: the baseline run under mpirun failed: $(grep -m1 error "$T/logs/base.out")"
    echo "0 passed, 1 failed"
    exit 1
fi
base=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { d = b - a; printf "%d", (d == int(d)) ? d : int(d) + 1 }')
say "TIME baseline: the 40-step run under mpirun -np 2 takes up to $base s"
within() { local v=$(($1 * base + $2)); echo $((v > $3 ? v : $3)); }  # within K C FLOOR: max(K·BASE + C, FLOOR) s

port_free() {
    ! ss -Htan 2>/dev/null | awk '{print $4}' | grep -qE "[:.]$1\$"
}
pick_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 40000))
        if port_free "$p" && [[ "$p" != "${1:-}" ]]; then echo "$p"; return 0; fi
    done
    return 1
}
ctld_port="$(pick_port)" || skip "no free port"
slurmd_port="$(pick_port "$ctld_port")" || skip "no free port"
node="$(hostname -s)"

cat >"$SLURM_CONF" <<EOF
ClusterName=aetraintest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/logs/slurmctld.log
SlurmdLogFile=$T/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
SchedulerParameters=sched_interval=1
KillWait=5
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# --- daemons -------------------------------------------------------------------------------
say "starting slurmctld (port $ctld_port) and slurmd (port $slurmd_port) in $T"
setsid slurmctld -D -c -f "$SLURM_CONF" </dev/null >"$T/logs/slurmctld.out" 2>&1 &
ctld_pid=$!
setsid slurmd -D -f "$SLURM_CONF" </dev/null >"$T/logs/slurmd.out" 2>&1 &
slurmd_pid=$!

idle=0
for _ in $(seq 150); do
    if [[ "$(timeout 5 sinfo -h -o %T 2>/dev/null)" == idle ]]; then idle=1; break; fi
    sleep 0.2
done
if ((!idle)); then
    fail "node did not become idle within 30 s"
    tail -n 20 "$T/logs/slurmctld.log" "$T/logs/slurmd.log" "$T"/logs/*.out 2>/dev/null
    echo "$passed passed, $failed failed"
    exit 1
fi
say "node $node idle"

# --- helpers -------------------------------------------------------------------------------
jfield() { # jfield JOB FIELD
    timeout 5 scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}
wait_final() { # wait_final JOB SECONDS -> prints the final state (or TIMEOUT-WAITING)
    local deadline=$(($(date +%s) + $2)) s
    while (($(date +%s) < deadline)); do
        s="$(jfield "$1" JobState)"
        case "$s" in COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | BOOT_FAIL | DEADLINE)
            echo "$s"; return 0 ;;
        esac
        sleep 0.3
    done
    echo "TIMEOUT-WAITING(last ${s:-unknown})"
}
steps_logged() { # number of training-step lines in metrics.jsonl
    [[ -f "$1/metrics.jsonl" ]] || { echo 0; return; }
    grep -c '"loss"' "$1/metrics.jsonl" 2>/dev/null || true
}
json_get() { # json_get FILE KEY
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d.get(sys.argv[2]); print("" if v is None else v)' "$1" "$2" 2>/dev/null
}
show_log() {
    say "---- $1 (last 25 lines)"
    tail -n 25 "$1" 2>/dev/null | sed 's/^/    /'
}
submit() { # submit NAME LAUNCHER aetrain-args... -> prints job id
    local name="$1" launcher="$2"; shift 2
    AETRAIN_LAUNCHER="$launcher" sbatch --parsable --job-name="$name" --ntasks=2 --nodes=1 \
        --chdir="$T/work" --output="$T/logs/$name-%j.out" --time=00:10:00 \
        "$root/Launch/aetrain.sbatch" "$@" 2>"$T/logs/$name.sbatch.err"
}

common=(--dataset mnist --data-dir "$data" --model mlp3 --test-limit 1000 --batch-size 128)

# --- (a) a short job completes ---------------------------------------------------------------
short_job() { # short_job LAUNCHER
    local launcher="$1" name="short-$1" out="$T/out/short-$1" job state log
    # The mpirun job takes part of its options from a config file (AETRAIN_CONFIG), overridden
    # by a flag: its steps come from the file's max_steps, its --log-every from the command line.
    if [[ "$launcher" == mpirun ]]; then
        printf 'max_steps = 40\ntrain_limit = 4000\nlog_every = 20\n' >"$T/short.toml"
        job="$(AETRAIN_CONFIG="$T/short.toml" submit "$name" "$launcher" "${common[@]}" --log-every 10 --out "$out")"
    else
        job="$(submit "$name" "$launcher" "${common[@]}" --max-steps 40 --train-limit 4000 --log-every 10 --out "$out")"
    fi
    if [[ -z "$job" ]]; then fail "($launcher) sbatch refused the short job: $(cat "$T/logs/$name.sbatch.err")"; return; fi
    log="$T/logs/$name-$job.out"
    state="$(wait_final "$job" "$(within 10 60 90)")"
    check "($launcher) short job $job ended COMPLETED (got $state, exit $(jfield "$job" ExitCode))" [ "$state" = COMPLETED ]
    check "($launcher) the job ran under $launcher" grep -q "$launcher" "$log"
    check "($launcher) rank 0 wrote summary.json with world_size 2" \
        [ "$(json_get "$out/summary.json" world_size)" = 2 ]
    check "($launcher) metrics.jsonl has training lines" [ "$(steps_logged "$out")" -gt 0 ]
    check "($launcher) summary.json steps == 40" [ "$(json_get "$out/summary.json" steps)" = 40 ]
    check "($launcher) config.json has log_every 10 and train_limit 4000" \
        [ "$(json_get "$out/config.json" log_every)/$(json_get "$out/config.json" train_limit)" = 10/4000 ]
    [[ "$state" == COMPLETED ]] || show_log "$log"
}

# --- (b) preempt with USR1, requeue, resume ----------------------------------------------------
preempt_job() { # preempt_job LAUNCHER MAX_STEPS
    local launcher="$1" max="$2" name="preempt-$1" out="$T/out/preempt-$1"
    local job log state t_sig t_exit rc_line ck step bie restarts resumed
    job="$(submit "$name" "$launcher" "${common[@]}" --max-steps "$max" --train-limit 20000 \
        --checkpoint-every 0 --log-every 1 --out "$out")"
    if [[ -z "$job" ]]; then fail "($launcher) sbatch refused the preemption job: $(cat "$T/logs/$name.sbatch.err")"; return; fi
    log="$T/logs/$name-$job.out"
    # Wait until it is training (a few steps in metrics.jsonl).
    local deadline=$(($(date +%s) + $(within 10 40 60)))
    while (($(date +%s) < deadline)) && (($(steps_logged "$out") < 20)); do
        state="$(jfield "$job" JobState)"
        case "$state" in COMPLETED | FAILED | CANCELLED | TIMEOUT) break ;; esac
        sleep 0.1
    done
    if (($(steps_logged "$out") < 20)); then
        fail "($launcher) job $job never reached step 20 (state $(jfield "$job" JobState))"
        show_log "$log"
        return
    fi
    t_sig=$(date +%s.%N)
    scancel --batch --signal=USR1 "$job"
    say "($launcher) sent USR1 to job $job at step $(steps_logged "$out")"
    # The first run's exit: the sbatch script logs "aetrain exited with code N" with a timestamp.
    deadline=$(($(date +%s) + $(within 5 40 60)))
    rc_line=""
    while (($(date +%s) < deadline)); do
        rc_line="$(grep -m1 'aetrain exited with code' "$log" 2>/dev/null)"
        [[ -n "$rc_line" ]] && break
        sleep 0.1
    done
    if [[ -z "$rc_line" ]]; then
        fail "($launcher) first run did not exit within $(within 5 40 60) s of the signal"
        show_log "$log"
        return
    fi
    t_exit="$(sed -n 's/^aetrain.sbatch\[\([0-9.]*\)\].*/\1/p' <<<"$rc_line")"
    say "($launcher) TIME preemption signal -> first run exited: $(python3 -c "print(f'{$t_exit - $t_sig:.2f}')") s"
    check "($launcher) first run exited 75 (preempted): '$rc_line'" grep -q 'code 75$' <<<"$rc_line"
    check "($launcher) first run's log says it stopped by SIGUSR1 with a checkpoint" \
        grep -q 'stopped by SIGUSR1 at step' "$log"

    # Requeued by the script itself: pending again with RestartCnt >= 1.
    deadline=$(($(date +%s) + $(within 2 30 30)))
    local requeued=0
    while (($(date +%s) < deadline)); do
        state="$(jfield "$job" JobState)"
        restarts="$(jfield "$job" Restarts)"
        if [[ "$state" == PENDING && "${restarts:-0}" -ge 1 ]]; then requeued=1; break; fi
        case "$state" in COMPLETED | FAILED | CANCELLED | TIMEOUT) break ;; esac
        sleep 0.2
    done

    # The checkpoint written on preemption, before the resumed run can prune it.
    ck="$(ls "$out"/checkpoints/step-*.safetensors 2>/dev/null | sort | tail -n 1)"
    if [[ -n "$ck" ]] && "$bin" info "$ck" >"$T/logs/$name.info" 2>&1; then
        step="$(sed -n 's/^  step: //p' "$T/logs/$name.info")"
        bie="$(sed -n 's/^  batch_in_epoch: //p' "$T/logs/$name.info")"
        check "($launcher) preemption checkpoint $(basename "$ck") validates and is mid-epoch (step $step, batch_in_epoch $bie)" \
            [ "${bie:-0}" -gt 0 ]
    else
        fail "($launcher) no valid checkpoint after preemption (${ck:-none}): $(head -c 300 "$T/logs/$name.info" 2>/dev/null)"
        show_log "$log"
    fi

    if ((requeued)); then
        pass "($launcher) job $job requeued itself (JobState=PENDING, Restarts=$restarts)"
        # Skip the ~120 s requeue delay, but not within the second of the requeue: slurmd revokes
        # the old run's credential, and a relaunch whose credential is from that same second is
        # refused ("Job credential revoked"), which ends the job FAILED.
        sleep 2
        scontrol update jobid="$job" StartTime=now
    else
        fail "($launcher) job $job was not requeued (state $state); resubmitting"
        job="$(submit "$name-resubmit" "$launcher" "${common[@]}" --max-steps "$max" --train-limit 20000 \
            --checkpoint-every 0 --log-every 1 --out "$out")"
        log="$T/logs/$name-resubmit-$job.out"
    fi
    state="$(wait_final "$job" "$(within 20 90 120)")"
    check "($launcher) resumed job $job ended COMPLETED (got $state)" [ "$state" = COMPLETED ]
    check "($launcher) the resumed run logged 'resuming from'" grep -q 'resuming from' "$log"
    check "($launcher) summary.json steps == $max" [ "$(json_get "$out/summary.json" steps)" = "$max" ]
    resumed="$(json_get "$out/summary.json" resumed_from_step)"
    check "($launcher) summary.json has resumed_from_step (${resumed:-missing}) == the checkpoint's step (${step:-?})" \
        [ "${resumed:-missing}" = "${step:-x}" ]
    [[ "$state" == COMPLETED ]] || show_log "$log"
}

short_job srun
short_job mpirun
preempt_job srun 1000
preempt_job mpirun 600

say "total $(($(date +%s) - started)) s"
echo "$passed passed, $failed failed"
((failed == 0))
