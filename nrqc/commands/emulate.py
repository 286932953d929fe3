"""`nrqc emulate`: an emulated board running TVM's RPC server (qemu user mode)."""
from __future__ import annotations

import click


@click.command("emulate")
@click.argument("target")
@click.option("--port", default=9090, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--tracker", default=None, metavar="HOST:PORT", help="Register the board to this TVM RPC tracker.")
@click.option("--key", default="", help="Device key on the tracker (needed with --tracker).")
@click.option("--rebuild", is_flag=True, help="Rebuild the cached root file system first.")
@click.option("--mirror", default=None, metavar="URL",
              help="Debian mirror for building the root file system (default: $NRQC_DEBIAN_MIRROR, else the "
                   "host's Debian mirror from /etc/apt/sources.list, sources.list.d/*.list and *.sources).")
def command(target, port, tracker, key, rebuild, mirror):
    """Start an emulated TARGET board (arm_cpu, arm_cpu_a76: aarch64 Debian + the official
    TVM wheel under qemu-aarch64-static -cpu cortex-a72 / cortex-a76) and serve TVM RPC on 127.0.0.1 until stopped (Ctrl-C).

    The first start builds the root file system (cached in $NRQC_CACHE, default
    ~/.cache/nrqc) from the Debian mirror the host's apt uses (or --mirror); later
    starts reuse it.
    """
    from nrqc.errors import NrqcError
    from nrqc.targets import get_target

    desc = get_target(target)
    if getattr(desc.backend, "emulator", None) is None or desc.caps.isa != "aarch64":
        raise NrqcError(f"nrqc emulate {target}: only the 64-bit Raspberry Pi targets have an emulated board "
                        f"(armv7: no official 32-bit ARM TVM wheel; Cortex-M runs under `nrqc run`)")
    if tracker and not key:
        raise NrqcError("--tracker needs --key (the device key the board registers under)")
    from nrqc.emulator import rootfs
    from nrqc.emulator.board import qemu_cpu_for, serve_foreground

    rootfs.use_mirror(mirror)
    if rebuild:
        rootfs.build_rootfs(force=True)
    raise SystemExit(serve_foreground(port=port, tracker=tracker, key=key, cpu=qemu_cpu_for(desc.tvm_target)))
