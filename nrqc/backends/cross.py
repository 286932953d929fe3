"""The cross back end: a Linux shared library linked with the target's cross compiler, run
on a board over TVM RPC (`--rpc`) or, with no board, on the emulated board when the
target has one (the numerical check and the instruction count)."""
from __future__ import annotations

from pathlib import Path

from nrqc.backends.library import LibraryBackend
from nrqc.board_check import check_without_board
from nrqc.deploy_bundle import write_deploy_md
from nrqc.errors import NrqcError


class CrossLibraryBackend(LibraryBackend):
    def fcompile(self):
        import tvm

        return tvm.support.cc.cross_compiler(self.spec.cross_compiler)

    def write_extras(self, stage: Path, manifest: dict) -> None:
        write_deploy_md(stage, manifest)  # how to install and run it on the board

    def open_session(self, out, manifest, rpc):
        if rpc is None and self.spec.emulator is not None:  # no board: the emulated one, whole streams at once
            from nrqc.emulator.stream_run import EmulatedStreamSession

            return EmulatedStreamSession(Path(out), manifest)
        return super().open_session(out, manifest, rpc)

    def check_without_board(self, stage: Path, m, manifest: dict, options) -> dict:
        return check_without_board(stage, m, manifest, options, self.target)

    def measure(self, out, *, repeat, threads, rpc, instructions, log) -> dict:
        if rpc is not None:
            return super().measure(out, repeat=repeat, threads=threads, rpc=rpc, instructions=instructions, log=log)
        # No board: the emulator's instruction count is the measure (no latency).
        from nrqc.profiler import profile_without_board

        name = self.target.name
        if instructions is False:
            raise NrqcError(f"{out}: built for {name}, which does not run on this host: use "
                            f"--rpc HOST:PORT (a board, or `nrqc emulate {name}`) for latency, or "
                            f"--instructions for the emulated instruction count (no board needed)")
        if threads != 1:
            log(f"--threads {threads}: the emulated instruction count is single-threaded")
        if self.spec.emulator is None:
            raise NrqcError(f"{out}: built for {name} ({self.target.tvm_target.get('mtriple', '')}), which has no "
                            f"emulated board here (the instruction count is aarch64 only): use --rpc HOST:PORT to "
                            f"profile it on a board")
        return profile_without_board(out, log=log)
