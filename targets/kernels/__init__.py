"""nrqc's integer kernels for binary-activation layers (TE compute + per-target schedules).

Packed activation layout everywhere: uint32 ``[N, H, W, ceil(C/32)]`` (channels packed
along the last axis, bit ``c % 32`` of word ``c // 32``; unused high bits are 0; the word
size and every weight layout live in ``packing``). A {0,1} map stores the value itself; a
{-1,+1} (Sign) map stores 1 for +1 and 0 for -1.

Rooms: ``binary_ops`` (TE compute), ``lut`` / ``amx`` / ``winograd`` (kernels written in
TIR), ``strategies`` (one module per conv strategy, a registry), ``pixelwise`` (schedule
pieces shared by the TE kernels), ``knobs`` (measured tuning constants), ``build``
(scheduled PrimFuncs), ``select`` (measure or estimate, choose, cache).
"""
