"""Running a compiled artifact: here, or on a board through TVM RPC."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nrqc.artifact import LIBRARY, read_manifest
from nrqc.errors import NrqcError


def parse_rpc(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise NrqcError(f"malformed --rpc '{addr}': expected HOST:PORT (for example 192.168.1.20:9090)")
    return host, int(port)


def connect_rpc(addr: str):
    from tvm import rpc

    host, port = parse_rpc(addr)
    try:
        return rpc.connect(host, port, session_timeout=0)
    except Exception as e:
        raise NrqcError(f"--rpc {addr}: cannot connect to a TVM RPC server ({str(e).splitlines()[0][:120]})") from None


class ArtifactSession:
    """A loaded Relax VM for an artifact, local or remote; inputs in manifest order."""

    def __init__(self, out: str | Path, manifest: dict | None = None, rpc: str | None = None):
        import tvm
        from tvm import relax

        self.out = Path(out)
        self.manifest = manifest or read_manifest(out)
        lib_path = self.out / self.manifest.get("library", LIBRARY)
        if not lib_path.exists():
            raise NrqcError(f"{self.out}: missing {lib_path.name}")
        kind = self.manifest.get("target_kind")
        self.remote = None
        if rpc:
            self.remote = connect_rpc(rpc)
            self.remote.upload(str(lib_path))
            lib = self.remote.load_module(lib_path.name)
            self.dev = self.remote.cpu()
        else:
            if kind != "host":
                raise NrqcError(f"{self.out}: built for {self.manifest['target']}, which does not run on this host: "
                                f"use --rpc HOST:PORT (a board or `nrqc emulate {self.manifest['target']}`)")
            if self.manifest.get("target") == "x86":  # code for an ISA this CPU lacks dies of SIGILL
                from nrqc.targets.x86 import check_runs_here

                cpu = self.manifest.get("cpu") or {}
                check_runs_here(cpu.get("isa_flags"), str(self.out), cpu.get("mcpu"))
            lib = tvm.runtime.load_module(str(lib_path))
            self.dev = tvm.cpu()
        self.vm = relax.VirtualMachine(lib, self.dev)

    def to_device(self, inputs: dict[str, np.ndarray]) -> list:
        import tvm

        args = []
        for spec in self.manifest["inputs"]:
            name = spec["name"]
            if name not in inputs:
                raise NrqcError(f"missing input '{name}' (the model's inputs: "
                                f"{', '.join(s['name'] for s in self.manifest['inputs'])})")
            # (not np.ascontiguousarray, which turns a 0-d array into shape [1])
            arr = np.asarray(inputs[name], order="C")
            if list(arr.shape) != list(spec["shape"]):
                raise NrqcError(f"input '{name}' has shape {list(arr.shape)}; the artifact was compiled for "
                                f"{spec['shape']}")
            args.append(tvm.runtime.tensor(arr.astype(spec["dtype"], copy=False), self.dev))
        return args

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.vm["main"](*self.to_device(inputs))
        return flatten_outputs(out)


def flatten_outputs(out) -> list[np.ndarray]:
    if hasattr(out, "numpy"):
        return [out.numpy()]
    result = []
    for o in out:
        result.extend(flatten_outputs(o))
    return result


def load_inputs(options: tuple[str, ...], manifest: dict) -> dict[str, np.ndarray]:
    """`--input NAME=FILE.npy` (repeatable); a single-input model accepts `--input FILE.npy`."""
    names = [s["name"] for s in manifest["inputs"]]
    out = {}
    for opt in options:
        name, sep, path = opt.partition("=")
        if not sep:
            if len(names) != 1:
                raise NrqcError(f"--input {opt}: the model has several inputs ({', '.join(names)}); use NAME=FILE.npy")
            name, path = names[0], opt
        if name not in names:
            raise NrqcError(f"--input {opt}: the model has no input '{name}' (inputs: {', '.join(names)})")
        p = Path(path)
        if not p.exists():
            raise NrqcError(f"--input {opt}: {p}: no such file")
        try:
            out[name] = np.load(p, allow_pickle=False)
        except Exception as e:
            raise NrqcError(f"--input {opt}: {p}: not a .npy file ({type(e).__name__})") from None
    return out
