#!/usr/bin/env bash
# Runs every test: installs what is missing, builds, runs the XCTest suites (unit tests, gradient
# checks, mpirun equivalence and checkpoint tests), then the fault-injection and Slurm scripts.
# Ends with a line "N passed, M failed" over the script suites and exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
"$here/install-deps.sh"
if [[ "$(id -u)" -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

# The real MNIST files (tests never use a synthetic stand-in): $AETRAIN_MNIST_DIR, else
# ../shared/data/mnist beside the repository, else /work/shared/data/mnist.
for d in "${AETRAIN_MNIST_DIR:-}" "$root/../shared/data/mnist" /work/shared/data/mnist; do
    if [[ -n "$d" && -f "$d/train-images-idx3-ubyte.gz" ]]; then export AETRAIN_MNIST_DIR="$(cd "$d" && pwd)"; break; fi
done
if [[ -n "${AETRAIN_MNIST_DIR:-}" && -f "$AETRAIN_MNIST_DIR/train-images-idx3-ubyte.gz" ]]; then
    echo "MNIST: $AETRAIN_MNIST_DIR"
else
    echo "warning: MNIST not found (set AETRAIN_MNIST_DIR); the tests that train on it will be skipped" >&2
fi

passed=0; failed=0; failures=()
suite() {  # name, command...
    local name="$1"; shift
    echo "=== $name"
    local t0=$SECONDS
    if "$@"; then passed=$((passed + 1)); echo "=== $name: ok ($((SECONDS - t0)) s)"
    else failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED ($((SECONDS - t0)) s)"; fi
}

swift build -c release   # the allocation test and the cluster scripts run the release binary
suite "swift test" swift test
for script in Tests/Cluster/faults.sh Tests/Cluster/slurm-e2e.sh; do
    [[ -f "$script" ]] && suite "$script" bash "$script"
done
((failed == 0)) || echo "failed suites: ${failures[*]}"
echo "$passed passed, $failed failed"
((failed == 0))
