#!/usr/bin/env bash
# Runs every test: installs what the tests need, builds the release binary, finds MNIST, runs the
# XCTest suites (unit tests, gradient checks, mpirun equivalence, checkpoints, interop with numpy,
# safetensors and Chromium), then every script in Tests/Cluster/ (fault injection, Slurm).
#
# A skipped test is a failure: the run fails when any XCTest was skipped or a cluster script printed
# a SKIP line, unless AETRAIN_ALLOW_SKIP=1 (each skip's reason is printed either way).
# MNIST: $AETRAIN_MNIST_DIR, else ./data/mnist, else `aetrain fetch mnist` into ./data/mnist.
# Temporary files go under $TMPDIR (default /tmp). Ends with "N passed, M failed" over the suites
# and exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
started=$SECONDS
say() { printf 'test.sh: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
export TMPDIR="${TMPDIR:-/tmp}"

# System packages: the build's, plus what the tests use: Chromium (the report rendered headless),
# python3 with numpy and venv (the safetensors package is not in Debian 12: pip installs it below).
"$here/install-deps.sh" python3 python3-numpy python3-venv chromium
if [[ "$(id -u)" -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

swift build -c release   # the tests run the release binary (as users do) and the cluster scripts use it

# MNIST, the real files (tests never use a synthetic stand-in).
mnist_ok() {
    local f
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        [[ -f "$1/$f.gz" ]] || return 1
    done
}
if [[ -n "${AETRAIN_MNIST_DIR:-}" ]]; then
    mnist_ok "$AETRAIN_MNIST_DIR" \
        || die "AETRAIN_MNIST_DIR=$AETRAIN_MNIST_DIR does not hold the four MNIST files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)"
elif mnist_ok "$root/data/mnist"; then
    AETRAIN_MNIST_DIR="$root/data/mnist"
else
    say "MNIST not in \$AETRAIN_MNIST_DIR or ./data/mnist: trying aetrain fetch mnist"
    if timeout 300 .build/release/aetrain fetch mnist --data-dir "$root/data/mnist" >&2 && mnist_ok "$root/data/mnist"; then
        AETRAIN_MNIST_DIR="$root/data/mnist"
    else
        die "MNIST not found: set AETRAIN_MNIST_DIR to a folder with the four MNIST .gz files, put them in ./data/mnist, or run where \`aetrain fetch mnist\` can download them"
    fi
fi
AETRAIN_MNIST_DIR="$(cd "$AETRAIN_MNIST_DIR" && pwd)"
export AETRAIN_MNIST_DIR
say "MNIST: $AETRAIN_MNIST_DIR"

# Python for the interop tests: numpy and the reference safetensors package. When python3 lacks
# them, a venv under .build/ (seeing the system's packages) gets them from PyPI with pip.
python_ok() { python3 -c 'import numpy, safetensors.numpy' >/dev/null 2>&1; }
if ! python_ok; then
    venv="$root/.build/test-python"
    if [[ ! -x "$venv/bin/python3" ]]; then
        python3 -m venv --system-site-packages "$venv" >&2 \
            || die "cannot create a Python venv at $venv for the interop tests (Debian: apt-get install python3-venv)"
    fi
    export PATH="$venv/bin:$PATH"
    if ! python_ok; then
        say "installing numpy and safetensors into $venv (pip, from PyPI)"
        timeout 600 python3 -m pip install --quiet --disable-pip-version-check numpy safetensors >&2 \
            || die "pip could not install numpy and safetensors into $venv (the interop tests need them)"
    fi
    python_ok || die "python3 ($(command -v python3)) cannot import numpy and safetensors, which the interop tests need"
fi
say "python3: $(command -v python3) (numpy $(python3 -c 'import numpy; print(numpy.__version__)'), safetensors $(python3 -c 'import safetensors; print(safetensors.__version__)'))"

logs="$(mktemp -d "$TMPDIR/aetrain-test.XXXXXX")"
passed=0; failed=0; failures=()
suite() {  # suite NAME LOG command...: runs it, its output on the console and in LOG
    local name="$1" log="$2"; shift 2
    echo "=== $name"
    local t0=$SECONDS rc
    set +e
    "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc == 0)); then passed=$((passed + 1)); echo "=== $name: ok ($((SECONDS - t0)) s)"
    else failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED, exit $rc ($((SECONDS - t0)) s)"; fi
}

suite "swift test" "$logs/swift-test.log" swift test
for script in Tests/Cluster/*.sh; do
    suite "$script" "$logs/$(basename "$script").log" bash "$script"
done

# Skips: XCTest prints "Test Case '...' skipped" (its reason on a "Test skipped - ..." line); the
# cluster scripts print "SKIP: reason".
skips=()
while IFS= read -r line; do skips+=("swift test: $line"); done < <(grep -hE ': Test skipped( - |$)' "$logs/swift-test.log" | sed -E 's/^.*: ([A-Za-z0-9_.]+) : Test skipped( - )?/\1: /' || true)
xct_skipped="$(grep -cE "^Test Case '.*' skipped" "$logs/swift-test.log" || true)"
if ((xct_skipped > ${#skips[@]})); then skips+=("swift test: $((xct_skipped - ${#skips[@]})) more skipped XCTest(s) without a reason line"); fi
for script in Tests/Cluster/*.sh; do
    while IFS= read -r line; do skips+=("$script: $line"); done < <(grep -hoE 'SKIP: .*' "$logs/$(basename "$script").log" || true)
done
if ((${#skips[@]})); then
    echo "${#skips[@]} skipped:"
    printf '  %s\n' "${skips[@]}"
    if [[ "${AETRAIN_ALLOW_SKIP:-0}" == 1 ]]; then
        echo "skips allowed by AETRAIN_ALLOW_SKIP=1"
    else
        failed=$((failed + 1)); failures+=("skipped tests (a skip is a failure; set AETRAIN_ALLOW_SKIP=1 to accept them for the reasons above)")
    fi
fi

rm -rf "$logs"
((failed == 0)) || echo "failed: ${failures[*]}"
echo "$passed passed, $failed failed ($((SECONDS - started)) s)"
((failed == 0))
