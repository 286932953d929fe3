"""The bare-metal back end: C source from TVM's C code generator with a static arena,
compiled into a library and a test firmware run in QEMU (nrqc.cortex_m does the work)."""
from __future__ import annotations

from pathlib import Path

from nrqc import cortex_m
from nrqc.backends.base import Backend
from nrqc.errors import NrqcError


class BareMetalBackend(Backend):
    def check_compile_rpc(self, rpc: str) -> None:
        raise NrqcError(f"--rpc {rpc}: {self.target.name} is bare metal and has no TVM RPC server "
                        f"(its check runs in QEMU by itself)")

    def check_deploy(self, out: Path) -> None:
        raise NrqcError(f"{out}: built for {self.target.name} (bare metal), which has no TVM RPC server; "
                        f"use `nrqc run {out}`")

    def build(self, m, ctx, out: Path, options, log=print) -> Path:
        return cortex_m.build_artifact(m, ctx, out, options, log=log)

    def run(self, out, manifest, feeds, rpc):
        return cortex_m.run_artifact(Path(out), manifest, feeds)  # in QEMU, whatever `rpc` says

    def open_session(self, out, manifest, rpc):
        from nrqc.cortex_m.stream_firmware import FirmwareStreamSession

        return FirmwareStreamSession(self, Path(out), manifest)  # a stream: one QEMU run, state kept in the firmware

    def profile(self, out, manifest, *, repeat, threads, rpc, instructions, against, log) -> dict:
        # Sizes from the build and a QEMU instruction count: no latency, no board.
        return cortex_m.profile_artifact(Path(out), manifest, against=against)

    def format_profile(self, result: dict) -> str:
        return cortex_m.format_profile(result)
