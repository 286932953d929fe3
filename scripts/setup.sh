#!/usr/bin/env bash
# Installs everything nrqc needs on a fresh Debian/Ubuntu machine: the cross and
# bare-metal toolchains, emulators and speech tools from Debian packages, then the Python
# package (editable) with its pinned dependencies. Safe to re-run: it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf
              qemu-user-static
              gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
              debootstrap espeak-ng sox)
# One binary per package, to skip apt when everything is already installed.
NEEDED_BINARIES=(aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ arm-linux-gnueabihf-gcc arm-linux-gnueabihf-g++
                 qemu-aarch64-static
                 arm-none-eabi-gcc qemu-system-arm debootstrap espeak-ng sox)

missing=0
for b in "${NEEDED_BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || missing=1; done
[ -e /usr/lib/arm-none-eabi/newlib/rdimon.specs ] || [ -e /usr/lib/arm-none-eabi/lib/rdimon.specs ] || missing=1
if [ "$missing" = 1 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing Debian packages: ${APT_PACKAGES[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
echo "setup: installing the nrqc Python package and its dependencies" >&2
# torch==2.13.0 is pinned exactly in pyproject.toml: that resolves to the CPU build.
"$PY" -m pip install -q --disable-pip-version-check -e . 2>&1 | grep -v -E "^WARNING: Running pip as the 'root' user" || true
"$PY" -c "import nrqc, tvm, tvm_ffi; assert tvm_ffi.__version__ == '0.1.14.post1', tvm_ffi.__version__" \
  || { echo "setup: the Python install failed" >&2; exit 1; }
echo "setup: done" >&2
