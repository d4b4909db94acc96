#!/usr/bin/env bash
# Install everything vmroc needs on a fresh Debian 12 machine. Idempotent: a second
# run only checks. Used by `make demo` and `make test` (and so by .ci/run).
#
# Python packages go to a virtual environment, `.venv` (VMROC_VENV), made with
# VMROC_PYTHON (default python3): never into the system's Python (PEP 668). The
# Makefile runs everything with `.venv/bin/python`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${VMROC_PYTHON:-python3}
VENV=${VMROC_VENV:-.venv}
# what `make test` needs: tests/real compares every backend (libvmi, volatility3), the
# PostgreSQL store and the dashboard in a browser (pyproject.toml's extras)
EXTRAS=${VMROC_EXTRAS:-all}

DEB_PACKAGES=(qemu-system-x86 busybox-static nftables iproute2 procps xz-utils
              default-jre-headless maven gcc libc6-dev chromium chromium-driver
              postgresql)
# the C accelerator needs Python's headers (Debian's python3 keeps them in python3-dev)
"$PY" -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || DEB_PACKAGES+=(python3-dev)
# Debian's python3 makes virtual environments only with python3-venv (ensurepip)
"$PY" -c 'import ensurepip, venv' 2>/dev/null || DEB_PACKAGES+=(python3-venv)
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

# The venv must be whole and made from $PY (a removed or other base Python: made again)
# with a working pip (`python3 -m venv` without python3-venv leaves one without).
vpy="$VENV/bin/python"
want=$("$PY" -c 'import os, sys; print(os.path.realpath(sys.argv[1]), sys.base_prefix)' "$VENV")
have=$("$vpy" -c 'import os, sys; print(os.path.realpath(sys.prefix), sys.base_prefix)' \
       2>/dev/null || true)
if [ "$have" != "$want" ] || ! "$vpy" -m pip --version >/dev/null 2>&1; then
    echo "setup: creating the virtual environment $VENV ($("$PY" --version 2>&1))"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi

stamp=build/.pip-installed
# the installed `vmroc` must be this checkout (another clone may have installed itself)
vpy_abs="$(cd "$VENV" && pwd -P)/bin/python"
installed=$(cd / && "$vpy_abs" -c 'import pathlib, vmroc
print(pathlib.Path(vmroc.__file__).resolve().parent.parent)' 2>/dev/null || true)
if [ "$(cat "$stamp" 2>/dev/null)" != "$EXTRAS" ] || [ pyproject.toml -nt "$stamp" ] \
   || [ setup.py -nt "$stamp" ] || [ deploy/setup.sh -nt "$stamp" ] \
   || [ introspect/_accel/vmread.c -nt "$stamp" ] \
   || [ "$installed" != "$(pwd -P)" ]; then
    echo "setup: installing vmroc[$EXTRAS] into $VENV and building the C accelerator" \
         "(pip install -e '.[$EXTRAS]')"
    "$vpy" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
    "$vpy" -c 'from vmroc.introspect._accel import available; available() or print(
"setup: warning: the C accelerator did not build; sampling falls back to --backend mmap")'
    mkdir -p build && echo "$EXTRAS" >"$stamp"
fi
echo "setup: ok ($vpy)"
