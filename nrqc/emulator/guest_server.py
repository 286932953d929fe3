"""TVM RPC server run *inside* the emulated aarch64 board (by the guest's python3).

Only the standard library and the aarch64 TVM wheel are available here: this file must
not import nrqc. It is copied into the root file system at each start.

Why not ``python -m tvm.exec.rpc_server``: that starts the server in a PopenWorker, which
execs ``sys.executable``; under qemu-user without binfmt_misc the exec of an aarch64
binary fails (Exec format error). Here the listening loop runs in this process (the same
code as TVM's, ``tvm.rpc.server._listen_loop``) and each RPC session is served in a
forked child, as TVM does; fork works under qemu-user, exec does not.

On start it prints one line ``NRQC_BOARD_LISTENING <host> <port>`` on stdout once the
socket listens. SIGTERM/SIGINT stop the session children, then the server.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import signal
import socket
import sys
import time


def _set_pdeathsig():
    """Die with our parent (PR_SET_PDEATHSIG = 1, SIGKILL), so no session outlives the server."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort
        pass


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--tracker", default=None, help="HOST:PORT of a TVM RPC tracker")
    p.add_argument("--key", default="")
    p.add_argument("--custom-addr", default=None)
    args = p.parse_args()

    t0 = time.monotonic()
    _set_pdeathsig()
    import tvm  # noqa: F401  (slow under emulation: ~15 s)
    import tvm_ffi
    from tvm.rpc import server as rpc_server

    import_s = time.monotonic() - t0

    info = {
        "machine": platform.machine(),
        "emulated": True,
        "emulator": os.environ.get("NRQC_EMULATOR", "qemu-aarch64-static (user mode)"),
        "tvm": getattr(tvm, "__version__", "?"),
        "python": platform.python_version(),
        "label": "emulated board (qemu user mode): latency is not a Raspberry Pi latency",
    }

    @tvm_ffi.register_global_func("nrqc.board.info", override=True)
    def _board_info():
        return json.dumps(info)

    # Session children: die with this server (SIGKILL on parent death).
    orig_serve_loop = rpc_server._serve_loop

    def _serve_loop(sock, load_library, work_path):
        _set_pdeathsig()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        orig_serve_loop(sock, load_library, work_path)

    rpc_server._serve_loop = _serve_loop

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))  # exactly this port: never drift to the next one
    except OSError as e:
        print(f"NRQC_BOARD_ERROR cannot bind {args.host}:{args.port}: {e}", flush=True)
        return 3
    sock.listen(4)
    port = sock.getsockname()[1]

    def _stop(signum, _frame):
        import multiprocessing

        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    tracker_addr = None
    if args.tracker:
        thost, tport = args.tracker.rsplit(":", 1)
        tracker_addr = (thost, int(tport))
    print(f"NRQC_BOARD_LISTENING {args.host} {port} import_s={import_s:.1f}", flush=True)
    rpc_server._listen_loop(sock, port, args.key, tracker_addr, None, args.custom_addr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
