"""What every back end does for the driver and the commands.

A back end turns the imported model and the pipeline context into an artifact directory,
checks it against onnxruntime, runs and profiles written artifacts, and says what it
cannot do (a bare-metal firmware has no TVM RPC server). `nrqc.backends.backend_for`
picks the implementation from the type of the target's `BackendSpec`.
"""
from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from nrqc.targets import BackendSpec, TargetDescription


class Backend(abc.ABC):
    """One way of producing, checking, running and measuring builds (see the subclasses)."""

    def __init__(self, target: TargetDescription):
        self.target = target

    @property
    def spec(self) -> BackendSpec:
        return self.target.backend

    # -- refusals of options this back end cannot honour (before anything is built)
    def check_compile_rpc(self, rpc: str) -> None:
        """`nrqc compile --rpc`: the check can run on a TVM RPC board."""

    def check_deploy(self, out: Path) -> None:
        """`nrqc deploy`: the artifact can be uploaded to a TVM RPC board."""

    # -- compile
    @abc.abstractmethod
    def build(self, m, ctx, out: Path, options, log=print) -> Path:
        """Build `m` (nrqc.onnx_model.LoadedModel) through the pipeline context `ctx` into
        the artifact directory `out`, with its manifest, report and numerical check."""

    # -- written artifacts
    @abc.abstractmethod
    def run(self, out: Path, manifest: dict, feeds: dict[str, np.ndarray], rpc: str | None) -> list[np.ndarray]:
        """The artifact's outputs on `feeds` (in the manifest's output order)."""

    def open_session(self, out: Path, manifest: dict, rpc: str | None):
        """A session for many calls (`nrqc run --stream`): `step(feeds) -> handles` (feeds may
        hold handles of earlier outputs) and `numpy(handle)`. By default each step is one
        `run`; a back end that can keep the model loaded (and its outputs on the device)
        returns its own."""
        return _RunPerStep(self, out, manifest, rpc)

    @abc.abstractmethod
    def profile(self, out: Path, manifest: dict, *, repeat: int, threads: int, rpc: str | None,
                instructions: bool | None, against: Path | None, log) -> dict:
        """`nrqc profile OUT`: the measurements this back end can make, as one JSON-able dict."""

    @abc.abstractmethod
    def format_profile(self, result: dict) -> str:
        """The profile as the text `nrqc profile` prints."""


class _RunPerStep:
    """`Backend.open_session` for a back end that runs one call at a time (numpy in and out)."""

    def __init__(self, backend: Backend, out: Path, manifest: dict, rpc: str | None):
        self.backend, self.out, self.manifest, self.rpc = backend, out, manifest, rpc

    def step(self, feeds: dict) -> list:
        return self.backend.run(self.out, self.manifest, feeds, self.rpc)

    def numpy(self, handle) -> np.ndarray:
        return np.asarray(handle)
