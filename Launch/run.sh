#!/usr/bin/env bash
# aetrain on this machine: install what is missing, build, then mpirun -np ${NP:-4}.
#
# Arithmetic (defaults): --batch-size is the GLOBAL batch, split across the ranks:
#   4 ranks × 32 samples per rank = 128 global batch (the --batch-size default)
#   steps per epoch = ceil(60000 / 128) = 469  (MNIST / Fashion-MNIST training set)
# Same global batch at any NP, so NP=1, 2 or 4 take the same steps (up to float summation order).
#
# Usage (from any directory):
#   Launch/run.sh --dataset mnist --data-dir /path/to/mnist --epochs 1 --out /tmp/run
#   NP=2 Launch/run.sh ...        # ranks (default 4); --oversubscribe is added when NP > nproc
#   Launch/run.sh --config runs/mnist.toml --epochs 3     # options from a file (JSON or TOML, keys =
#   AETRAIN_CONFIG=runs/a/config.json Launch/run.sh --out runs/a-again   # flags in snake_case); flags win
# Environment: NP (ranks), AETRAIN_CONFIG (a --config file), AETRAIN_SKIP_INSTALL=1 (do not touch packages),
#   OPENBLAS_NUM_THREADS / OMP_NUM_THREADS (default 1 per rank).
# Exit code: aetrain's (0 ok, 2 usage, 3 bad input, 4 I/O, 5 non-finite, 6 distributed, 75 preempted).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

say() { printf 'run.sh: %s\n' "$*" >&2; }

NP="${NP:-4}"
if ! [[ "$NP" =~ ^[1-9][0-9]*$ ]]; then
    say "NP=$NP: expected a positive number of ranks"
    exit 2
fi

# --- 1. system packages (only the missing ones; AETRAIN_SKIP_INSTALL=1 skips) -----------------
"$here/install-deps.sh"

# --- 2. toolchain and build ----------------------------------------------------------------
if ! command -v swift >/dev/null 2>&1; then
    say "swift is not on PATH: install Swift 6.x for your distribution from https://www.swift.org/install/"
    say "(the Linux tarball or swiftly), then add its usr/bin to PATH and run this again"
    exit 1
fi
if ! command -v mpirun >/dev/null 2>&1; then
    say "mpirun is not on PATH (Debian: apt-get install openmpi-bin)"
    exit 1
fi

swift build -c release >&2
bin="$(swift build -c release --show-bin-path)/aetrain"
[[ -x "$bin" ]] || { say "build produced no $bin"; exit 1; }

# --- 3. launch -----------------------------------------------------------------------------
mpiargs=(-np "$NP")
cores="$(nproc 2>/dev/null || echo 1)"
if ((cores < NP)); then
    mpiargs+=(--oversubscribe)
fi
if [[ "$(id -u)" -eq 0 ]]; then
    # Open MPI refuses root unless both are set; only here, never for normal users.
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Ranks share the cores: one BLAS/OpenMP thread each unless the user chose otherwise.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

config=()
if [[ -n "${AETRAIN_CONFIG:-}" ]]; then config=(--config "$AETRAIN_CONFIG"); fi
say "mpirun ${mpiargs[*]} $bin ${config[*]} $*"
# exec: signals sent to this script (TERM, USR1) reach mpirun, and the exit code is aetrain's.
exec mpirun "${mpiargs[@]}" "$bin" "${config[@]}" "$@"
