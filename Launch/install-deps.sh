#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages aetrain needs (only the missing ones). Used by run.sh and test.sh.
# Extra package names may be passed as arguments. AETRAIN_SKIP_INSTALL=1 skips it.
set -euo pipefail
say() { printf 'install-deps: %s\n' "$*" >&2; }
[[ "${AETRAIN_SKIP_INSTALL:-0}" == 1 ]] && exit 0
packages=(libopenmpi-dev openmpi-bin libdnnl-dev libopenblas-dev zlib1g-dev libssl-dev pkg-config dataset-fashion-mnist "$@")
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    say "this system has no apt-get; install the equivalents of these Debian packages yourself:"
    say "  Open MPI (libopenmpi-dev openmpi-bin), oneDNN 2.x (libdnnl-dev), OpenBLAS (libopenblas-dev), zlib (zlib1g-dev),"
    say "  OpenSSL libcrypto (libssl-dev), pkg-config, and Fashion-MNIST (dataset-fashion-mnist, or: aetrain fetch fashion-mnist)"
    say "then run again with AETRAIN_SKIP_INSTALL=1"
    exit 1
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
((${#missing[@]})) || exit 0
if [[ "$(id -u)" -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    say "missing packages: ${missing[*]}; not root and no sudo: ask an administrator to run: apt-get install -y ${missing[*]}"
    exit 1
fi
say "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing[@]}" >&2; then
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 update >&2
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing[@]}" >&2
fi
