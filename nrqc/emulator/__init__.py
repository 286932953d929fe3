"""An emulated Raspberry Pi (aarch64) for running and checking arm_cpu artifacts without a board.

- ``rootfs``: the cached arm64 Debian root file system with the official aarch64 TVM wheel;
- ``board``: TVM's RPC server inside it under qemu-aarch64-static (``EmulatedBoard``,
  ``emulated_board()``, ``board_info()``);
- ``icount``: a stable, board-free measure of a build (guest instructions executed);
- ``mca``: estimated cycles of that counted run (its translation blocks through llvm-mca).

Every guest runs under ``qemu -cpu`` the library's target core (``board.qemu_cpu_for``).
"""
from nrqc.emulator.board import (EmulatedBoard, board_info, emulated_board, remote_board_info,
                                 serve_foreground, unavailable_reason)
from nrqc.emulator.rootfs import build_rootfs, cache_dir, rootfs_dir


def emulated_instruction_count(artifact_dir, inputs=None, seed: int = 0) -> int:
    """See :func:`nrqc.emulator.icount.emulated_instruction_count`."""
    from nrqc.emulator.icount import emulated_instruction_count as _count

    return _count(artifact_dir, inputs, seed)

__all__ = ["EmulatedBoard", "board_info", "emulated_board", "remote_board_info", "serve_foreground",
           "unavailable_reason", "build_rootfs", "cache_dir", "rootfs_dir", "emulated_instruction_count"]
