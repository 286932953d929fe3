# nrqc with the same toolchain as scripts/setup.sh installs on a developer machine:
# Python 3.11, TVM 0.27 (tvm-ffi pinned), CPU torch, the aarch64 and armhf cross compilers and
# qemu-user for the Raspberry Pi path, arm-none-eabi + newlib + qemu-system-arm for
# Cortex-M, espeak-ng and sox for the speech data synthesizer.
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Toolchain versions follow the Debian release the base image pins (bookworm).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential git \
      gcc-aarch64-linux-gnu g++-aarch64-linux-gnu gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf \
      qemu-user-static debootstrap \
      gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm \
      espeak-ng sox \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/nrqc
COPY . .
# The exact torch pin selects the CPU build; the CPU index avoids the CUDA wheels on PyPI.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -e . \
 && python -c "import nrqc, tvm, tvm_ffi; assert tvm_ffi.__version__ == '0.1.14.post1'"

WORKDIR /work
ENTRYPOINT ["nrqc"]
CMD ["--help"]
