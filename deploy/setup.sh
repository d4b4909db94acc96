#!/usr/bin/env bash
# Install everything vmroc needs on a fresh Debian 12 machine. Idempotent: a second
# run only checks. Used by `make demo` and `make test` (and so by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(qemu-system-x86 busybox-static nftables iproute2 procps xz-utils
              default-jre-headless maven gcc libc6-dev chromium chromium-driver
              postgresql)
PY=${PYTHON:-python3}
# the C accelerator needs Python's headers (Debian's python3 keeps them in python3-dev)
"$PY" -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || DEB_PACKAGES+=(python3-dev)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
# java/mvn may come from elsewhere (a JDK tarball, sdkman): accept those.
if command -v java >/dev/null; then missing=("${missing[@]/default-jre-headless}"); fi
if command -v mvn >/dev/null; then missing=("${missing[@]/maven}"); fi
read -r -a missing <<<"${missing[*]:-}"
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

stamp=build/.pip-installed
# the installed `vmroc` must be this checkout (another clone may have installed itself)
installed=$(cd / && "$PY" -c 'import pathlib, vmroc
print(pathlib.Path(vmroc.__file__).resolve().parent.parent)' 2>/dev/null || true)
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
   || [ introspect/_accel/vmread.c -nt "$stamp" ] || [ "$installed" != "$(pwd -P)" ]; then
    echo "setup: installing Python packages and building the C accelerator (pip install -e .)"
    "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        -e .
    mkdir -p build && touch "$stamp"
fi
echo "setup: ok"
