"""The host back end: an LLVM shared library for this machine, checked and run in a fresh
process here (`nrqc run`), or on a board given with `--rpc`."""
from __future__ import annotations

from pathlib import Path

from nrqc.backends.library import LibraryBackend
from nrqc.check import check_in_fresh_process


class HostLibraryBackend(LibraryBackend):
    def check_without_board(self, stage: Path, m, manifest: dict, options) -> dict:
        from nrqc.targets import x86
        from nrqc.targets.kernels.select import runs_here

        target = self.target
        if not runs_here(target):
            missing = x86.missing_here(x86.required_flags(target))
            return {"ran": False, "reason": f"built for x86 CPU '{target.tvm_target.get('mcpu')}', whose "
                                            f"{', '.join(missing)} this CPU lacks: run `nrqc run` on such a machine"}
        return check_in_fresh_process(stage, m, manifest, options)
