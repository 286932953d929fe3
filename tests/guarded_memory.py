"""Arrays placed against a PROT_NONE guard page, to catch kernels that read outside their inputs.

An over-read of a few bytes past an input (or before it) is harmless wherever the next page
happens to be mapped, which is why it can pass a test and crash a user: it faults only when
the buffer ends (or starts) at a page boundary next to an unmapped page. These helpers put
the buffer there on purpose:

    with guarded_array(x, where="after") as g:   # g.tensor's data ends where the guard page begins
        lib["main"](g.tensor, ...)

`where="after"` catches reads past the end (exactly when the byte size is a multiple of
ALIGN, see `slack`), `where="before"` reads before the start. The
tensor shares memory with the mapping (DLPack, no copy). A read into the guard page kills the
process with SIGSEGV, so run such calls in a child process (`run_isolated`) to turn the crash
into a test failure with a message instead of losing the test session.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import mmap
import multiprocessing
import traceback

import numpy as np

PAGE = mmap.PAGESIZE
# TVM's DLPack import and the kernels' buffer binding expect this alignment of the data pointer.
ALIGN = 64

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.mprotect.restype = ctypes.c_int


class GuardedArray:
    """A numpy array and a TVM tensor on the same bytes, next to a guard page (see module doc)."""

    def __init__(self, src: np.ndarray, where: str):
        if where not in ("after", "before"):
            raise ValueError(f"where must be 'after' or 'before', not {where!r}")
        src = np.ascontiguousarray(src)
        nbytes = max(src.nbytes, 1)
        # The kernels use aligned vector moves (they fault on an unaligned pointer, as TVM never
        # passes one), so the data must start aligned: "after" a size that is not a multiple of
        # ALIGN leaves `slack` bytes (< ALIGN) between its end and the guard page, where an
        # over-read goes unnoticed. Tests assert slack == 0 for the inputs that matter.
        self.slack = (-nbytes) % ALIGN if where == "after" else 0
        data_pages = -(-(nbytes + self.slack) // PAGE)
        self._map = mmap.mmap(-1, (data_pages + 1) * PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        if where == "after":
            guard, offset = base + data_pages * PAGE, data_pages * PAGE - nbytes - self.slack
        else:
            guard, offset = base, PAGE
        if _libc.mprotect(guard, PAGE, 0) != 0:  # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect of the guard page failed")
        self.where = where
        self.array = np.frombuffer(self._map, dtype=src.dtype, count=src.size, offset=offset).reshape(src.shape)
        self.array[...] = src
        self.address = base + offset
        assert self.address % ALIGN == 0
        import tvm

        self.tensor = tvm.runtime.from_dlpack(self.array)

    def close(self) -> None:
        self.tensor = None
        self.array = None
        # the guard page is PROT_NONE; munmap of the whole mapping does not touch it
        with contextlib.suppress(BufferError):
            self._map.close()


@contextlib.contextmanager
def guarded_array(src: np.ndarray, where: str = "after"):
    g = GuardedArray(src, where)
    try:
        yield g
    finally:
        g.close()


def _child(conn, fn, args):
    try:
        conn.send(("ok", fn(*args)))
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_isolated(fn, *args, timeout: float = 600):
    """fn(*args) in a fresh process (spawned, so nothing of this one's heap layout carries
    over); returns its result. A crash (SIGSEGV of an over-read into a guard page) raises
    AssertionError naming the signal; an exception in fn is re-raised with its traceback."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args))
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            proc.kill()
            proc.join()
            if proc.exitcode is not None and proc.exitcode < 0:
                raise AssertionError(f"{getattr(fn, '__name__', fn)} died of signal {-proc.exitcode} "
                                     f"(SIGSEGV = 11: a read into a guard page)")
            raise AssertionError(f"{getattr(fn, '__name__', fn)} did not finish in {timeout} s")
        try:
            status, value = parent.recv()
        except EOFError:
            proc.join()
            raise AssertionError(f"{getattr(fn, '__name__', fn)} died of signal {-proc.exitcode} "
                                 f"(SIGSEGV = 11: a read into a guard page)") from None
    finally:
        proc.join(timeout=30)
        parent.close()
    if status == "error":
        raise AssertionError(f"{getattr(fn, '__name__', fn)} failed in the child process:\n{value}")
    return value
