"""Tuning constants of nrqc's hand schedules (values measured, not derived; one place so a
benchmark can flip them, e.g. ``knobs.PARALLEL = True`` before a compile)."""
from __future__ import annotations

# Output rows in parallel measured 2x slower at one thread (the parallel body is outlined
# and its per-pixel scratch becomes a workspace allocation); the benchmark and the
# MCU/edge use case are batch-1 single-thread, so kernels are serial.
PARALLEL = False

# Unrolling the kernel-width taps of the VNNI loop nest as well as its pixel and channel
# blocks: off since the register-blocked VNNI schedule (commit 0b3879a) was measured.
VNNI_UNROLL_TAPS = False

# A pixel's reduction loops are all unrolled when their total trip count is at most this
# (measured 4x on the first conv: LLVM then keeps the accumulators in registers); above
# it the innermost loop stays a loop, so the code does not grow without bound.
UNROLL_MAX = 64
