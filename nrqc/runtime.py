"""Running a compiled artifact: here, or on a board through TVM RPC."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from nrqc.artifact import LIBRARY, read_manifest
from nrqc.errors import NrqcError
from nrqc.manifest import target_of


def parse_rpc(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise NrqcError(f"malformed --rpc '{addr}': expected HOST:PORT (for example 192.168.1.20:9090)")
    return host, int(port)


RPC_TIMEOUT = 60.0  # seconds; `--rpc-timeout` of compile, run, profile and deploy


class _RpcTimeoutSettings:
    seconds: float = RPC_TIMEOUT


def set_rpc_timeout(seconds: float) -> None:
    """The deadline (s) of each RPC operation in this process: connecting (TCP and the TVM
    handshake), uploading and loading the library, one run. 0 waits for ever."""
    if seconds < 0:
        raise NrqcError(f"--rpc-timeout {seconds:g}: must be >= 0 seconds (0: no limit)")
    _RpcTimeoutSettings.seconds = float(seconds)


class _DeadlinePassed(BaseException):
    """Raised by SIGALRM inside a blocked RPC call. A BaseException, so the broad `except
    Exception` around remote calls (optional board functions) cannot swallow it."""


@contextlib.contextmanager
def rpc_deadline(addr: str, what: str, runs: int = 1):
    """Give up on the board at `addr` if `what` has not finished within the RPC timeout.

    TVM's RPC client has no client-side timeout (rpc.connect's session_timeout only asks the
    server to end the session later) and blocks in C++ recv() on a silent server. That recv
    loop runs Python's signal handlers, so a SIGALRM handler that raises unblocks it. Only the
    main thread receives signals; elsewhere (and with timeout 0) this waits as before.
    """
    import signal
    import threading

    seconds = _RpcTimeoutSettings.seconds * max(1, runs)  # `runs` operations in one call (timed runs)
    if (not seconds or threading.current_thread() is not threading.main_thread()
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):  # an outer deadline already runs
        yield
        return

    def on_alarm(signum, frame):
        raise _DeadlinePassed()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _DeadlinePassed:
        _shut_down_connections_to(addr)
        raise NrqcError(f"--rpc {addr}: no answer within {seconds:g} s while {what} (is a TVM RPC server "
                        f"running there, and is the board alive? raise --rpc-timeout if it is just slow)") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _shut_down_connections_to(addr: str) -> None:
    """Shut down this process's TCP connections to the board at `addr`. The abandoned RPC
    session's destructor sends a shutdown message and waits for the reply (in C++, outside
    any deadline); on a silent board that wait never ends. On a shut-down socket it returns
    at once. TVM does not expose the session's socket, so it is found among our descriptors."""
    import os
    import socket

    host, port = parse_rpc(addr)
    try:
        peers = {(info[4][0], port) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except OSError:
        return
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:  # not Linux: nothing to find the socket by
        return
    for name in fds:
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except (OSError, ValueError):
            continue  # not a socket (or already closed)
        try:
            if sock.type == socket.SOCK_STREAM and tuple(sock.getpeername()[:2]) in peers:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()  # the duplicate only; the shutdown applies to the shared connection


def connect_rpc(addr: str):
    from tvm import rpc

    host, port = parse_rpc(addr)
    try:
        with rpc_deadline(addr, "connecting"):
            return rpc.connect(host, port, session_timeout=0)
    except NrqcError:
        raise
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
        self.remote = None
        self.rpc = rpc
        if rpc:
            self.remote = connect_rpc(rpc)
            with rpc_deadline(rpc, f"uploading and loading {lib_path.name}"):
                self.remote.upload(str(lib_path))
                lib = self.remote.load_module(lib_path.name)
                self.dev = self.remote.cpu()
        else:
            if not target_of(self.manifest).backend.runs_on_host:
                raise NrqcError(f"{self.out}: built for {self.manifest['target']}, which does not run on this host: "
                                f"use --rpc HOST:PORT (a board or `nrqc emulate {self.manifest['target']}`)")
            if self.manifest.get("target") == "x86":  # code for an ISA this CPU lacks dies of SIGILL
                from nrqc.targets.x86 import check_runs_here

                cpu = self.manifest.get("cpu") or {}
                check_runs_here(cpu.get("isa_flags"), str(self.out), cpu.get("mcpu"))
            lib = tvm.runtime.load_module(str(lib_path))
            self.dev = tvm.cpu()
        with rpc_deadline(rpc, "creating the VM") if rpc else contextlib.nullcontext():
            self.vm = relax.VirtualMachine(lib, self.dev)

    def entry_for(self, inputs: dict[str, np.ndarray]) -> str:
        """The VM function to call: `main_int8` when the artifact has it (a model that
        quantizes its input) and that input is given already quantized (its int8/uint8
        dtype), else `main`."""
        quant = self.manifest.get("int8_input")
        if quant and quant.get("entry_point") == "main_int8":
            arr = inputs.get(quant["input"])
            if arr is not None and str(np.asarray(arr).dtype) == quant["dtype"]:
                return "main_int8"
        return "main"

    def to_device(self, inputs: dict[str, np.ndarray]) -> list:
        import tvm

        quant = self.manifest.get("int8_input") if self.entry_for(inputs) == "main_int8" else None
        args = []
        for spec in self.manifest["inputs"]:
            name = spec["name"]
            if name not in inputs:
                raise NrqcError(f"missing input '{name}' (the model's inputs: "
                                f"{', '.join(s['name'] for s in self.manifest['inputs'])})")
            if isinstance(inputs[name], tvm.runtime.Tensor):  # a handle from step(): already on the device
                args.append(inputs[name])
                continue
            # (not np.ascontiguousarray, which turns a 0-d array into shape [1])
            arr = np.asarray(inputs[name], order="C")
            if list(arr.shape) != list(spec["shape"]):
                raise NrqcError(f"input '{name}' has shape {list(arr.shape)}; the artifact was compiled for "
                                f"{spec['shape']}")
            dtype = quant["dtype"] if quant and quant["input"] == name else spec["dtype"]
            if str(arr.dtype) in ("int8", "uint8") and dtype.startswith("float"):
                # quantized features fed to a float input would be read as floats: refuse
                q = self.manifest.get("int8_input")
                raise NrqcError(f"input '{name}' is {arr.dtype}, but the artifact takes {spec['dtype']} there" + (
                    f" or {q['dtype']} already quantized (scale {q['scale']:g}, zero point {q['zero_point']})"
                    if q and q["input"] == name else " (its model does not quantize that input, so there is no "
                    "int8 entry point)"))
            args.append(tvm.runtime.tensor(arr.astype(dtype, copy=False), self.dev))
        return args

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.numpy(h) for h in self.step(inputs)]

    def step(self, inputs: dict) -> list:
        """One call; the outputs stay on the device (handles a later `step` takes as inputs,
        as a stream carries its state), in the manifest's output order."""
        entry = self.entry_for(inputs)
        if self.remote is None:
            return flatten_outputs(self.vm[entry](*self.to_device(inputs)), keep=True)
        with rpc_deadline(self.rpc, "running the model"):
            # over RPC a tuple result is a remote object that cannot be iterated here: the
            # stateful calls return each field as a remote tensor (still on the board)
            self.vm.set_input(entry, *self.to_device(inputs))
            self.vm.invoke_stateful(entry)
            return flatten_outputs(self.vm.get_outputs(entry), keep=True)

    def numpy(self, handle) -> np.ndarray:
        if not hasattr(handle, "numpy"):
            return np.asarray(handle)
        with rpc_deadline(self.rpc, "reading an output") if self.rpc else contextlib.nullcontext():
            return handle.numpy()


def flatten_outputs(out, keep: bool = False) -> list:
    """The VM's (nested) result as a flat list: numpy arrays, or with `keep` the device
    tensors themselves (a static Shape output is always an array)."""
    import tvm_ffi

    if hasattr(out, "numpy"):
        return [out if keep else out.numpy()]
    if isinstance(out, tvm_ffi.Shape):  # a static ONNX Shape output: the VM returns the shape itself
        return [np.asarray(tuple(out), dtype=np.int64)]
    result = []
    for o in out:
        result.extend(flatten_outputs(o, keep))
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
