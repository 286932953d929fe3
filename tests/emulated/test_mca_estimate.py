"""The board-free cycle estimate (nrqc.emulator.mca) and the qemu log parser that feeds it.

Fast: no emulator run. The references are independent of the code under test: block
cycles come from llvm-mca run directly on hand-written assembly (one process per block,
no regions, no re-disassembly), and the parsed log is a captured qemu-aarch64 7.2 log
(``-d in_asm,exec,nochain``) whose counts are read off by eye.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from nrqc.emulator.icount import _LogCounter
from nrqc.errors import NrqcError

needs_llvm = pytest.mark.skipif(shutil.which("llvm-mca") is None or shutil.which("llvm-mc") is None,
                                reason="llvm-mca / llvm-mc not installed (Debian package llvm)")

# Captured from `qemu-aarch64-static -cpu cortex-a72 -d in_asm,exec,nochain` running /bin/true
# of the emulated board's root file system; the second block (a 3-instruction loop) is
# executed three times.
QEMU_LOG = b"""----------------
IN: 
0x550283ce40:  d503201f  nop      
0x550283ce44:  d280001d  movz     x29, #0
0x550283ce48:  d280001e  movz     x30, #0
0x550283ce4c:  910003e0  mov      x0, sp
0x550283ce50:  97ffee80  bl       #0x5502838850

Trace 0: 0x7f4010000100 [0000000000001001/000000550283ce40/00000001/00000200] 
----------------
IN: 
0x55028388e8:  f8207841  str      x1, [x2, x0, lsl #3]
0x55028388ec:  f8410c20  ldr      x0, [x1, #0x10]!
0x55028388f0:  b5ffff00  cbnz     x0, #0x55028388d0

Trace 0: 0x7f40100007c0 [0000000000001001/00000055028388e8/00000001/00000200] 
Trace 0: 0x7f40100007c0 [0000000000001001/00000055028388e8/00000001/00000200] 
Trace 0: 0x7f40100007c0 [0000000000001001/00000055028388e8/00000001/00000200] 
"""


@pytest.mark.parametrize("chunk", [len(QEMU_LOG), 7, 64])
def test_log_parser_reads_blocks_words_and_executions(chunk):
    c = _LogCounter()
    for i in range(0, len(QEMU_LOG), chunk):  # the FIFO delivers arbitrary pieces
        c.feed(QEMU_LOG[i:i + chunk])
    c.feed(b"", final=True)
    assert c.executed_blocks() == [  # in address order
        ((0xf8207841, 0xf8410c20, 0xb5ffff00), 3),
        ((0xd503201f, 0xd280001d, 0xd280001e, 0x910003e0, 0x97ffee80), 1),
    ]
    assert c.total() == (5 + 3 * 3, 4, 0)


def test_log_parser_counts_executions_without_a_translation_record():
    c = _LogCounter()
    c.feed(QEMU_LOG + b"Trace 0: 0x7f4010000900 [0000000000001001/0000005502800000/00000001/00000200] \n",
           final=True)
    assert c.total() == (5 + 3 * 3, 4, 1)
    assert [n for _w, n in c.executed_blocks()] == [3, 1]


# Hand-written blocks: (assembly for the reference llvm-mca run, the same instructions'
# encodings as qemu logs them, executions).
BLOCKS = [
    (["fmla v0.4s, v1.4s, v2.4s", "fmla v0.4s, v3.4s, v4.4s", "ldr q1, [x0], #16", "subs x5, x5, #1",
      "b.ne #-16"], (0x4e22cc20, 0x4e24cc60, 0x3cc10401, 0xf10004a5, 0x54ffff81), 1000),
    (["add x1, x2, x3", "mul x4, x1, x1", "ret"], (0x8b030041, 0x9b017c24, 0xd65f03c0), 7),
    (["ldr x0, [x1, #16]!", "str x1, [x2, x0, lsl #3]"], (0xf8410c20, 0xf8207841), 250),
]


def _mca_total_cycles(asm: list[str], mcpu: str, iterations: int = 100) -> int:
    out = subprocess.run(["llvm-mca", "-mtriple=aarch64", f"-mcpu={mcpu}", f"-iterations={iterations}", "-"],
                         input="\n".join(asm) + "\n", capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Total Cycles:\s+(\d+)", out, re.M).group(1))


@needs_llvm
@pytest.mark.parametrize("mcpu", ["cortex-a72", "cortex-a76"])
def test_estimate_equals_llvm_mca_run_directly_per_block(tmp_path, monkeypatch, mcpu):
    from nrqc.emulator.mca import ITERATIONS, estimate_cycles

    monkeypatch.setenv("NRQC_CACHE", str(tmp_path))
    ref = sum(_mca_total_cycles(asm, mcpu) / 100 * n for asm, _w, n in BLOCKS)
    executed = [(words, n) for _asm, words, n in BLOCKS]
    got = estimate_cycles(executed, mcpu)
    assert ITERATIONS == 100 and got["mcpu"] == mcpu and got["distinct_blocks"] == 3
    assert got["cycles"] == round(ref)
    # cached (same numbers, no llvm-mca run) and without the cache: identical
    assert any((tmp_path / "mca").iterdir())
    assert estimate_cycles(list(reversed(executed)), mcpu)["cycles"] == got["cycles"]
    assert estimate_cycles(executed, mcpu, use_cache=False)["cycles"] == got["cycles"]


@needs_llvm
def test_a_block_repeated_in_the_list_counts_each_entry(tmp_path, monkeypatch):
    from nrqc.emulator.mca import estimate_cycles

    monkeypatch.setenv("NRQC_CACHE", str(tmp_path))
    words = BLOCKS[1][1]
    one = estimate_cycles([(words, 10)], "cortex-a72")["cycles"]
    assert estimate_cycles([(words, 4), (words, 6)], "cortex-a72")["cycles"] == one
    assert one == round(_mca_total_cycles(BLOCKS[1][0], "cortex-a72") / 100 * 10)


@needs_llvm
def test_undecodable_executed_word_is_an_error_not_a_low_estimate(tmp_path, monkeypatch):
    from nrqc.emulator.mca import estimate_cycles

    monkeypatch.setenv("NRQC_CACHE", str(tmp_path))
    with pytest.raises(NrqcError, match=r"cannot decode 1 .*0xffffffff"):
        estimate_cycles([((0xd503201f, 0xffffffff), 1)], "cortex-a72")


def test_qemu_cpu_comes_from_the_target_and_is_never_max():
    from nrqc.emulator.board import qemu_cpu_for
    from nrqc.targets import get_target

    assert qemu_cpu_for(get_target("arm_cpu").tvm_target) == "cortex-a72"
    assert qemu_cpu_for(get_target("pi5").tvm_target) == "cortex-a76"
    assert qemu_cpu_for(None) == "cortex-a72"  # a library without a manifest: the Pi 4 default
    for cpu in ("max", "cortex-a53"):
        with pytest.raises(NrqcError, match="no emulated board for -mcpu"):
            qemu_cpu_for({"mcpu": cpu})


def test_guest_command_line_passes_the_cpu(tmp_path):
    from nrqc.emulator.board import guest_python
    from nrqc.emulator.rootfs import qemu_binary

    if qemu_binary() is None:
        pytest.skip("qemu-aarch64-static not installed")
    argv, env, _ = guest_python(tmp_path, cpu="cortex-a76")
    assert argv[argv.index("-cpu") + 1] == "cortex-a76" and "max" not in argv
    assert env["NRQC_EMULATOR"].endswith("-cpu cortex-a76")


# A captured qemu-system-arm 7.2 log (mps2-an386, Cortex-M4 firmware, -d in_asm,exec,nochain):
# Thumb instructions as halfwords; the second block, executed twice, is where the counted
# phase starts (a marker at its address).
THUMB_LOG = b"""----------------
IN: Reset_Handler
0x0000004c:  480d       ldr      r0, [pc, #0x34]
0x0000004e:  4a0e       ldr      r2, [pc, #0x38]
0x00000050:  4290       cmp      r0, r2
0x00000052:  b508       push     {r3, lr}
0x00000054:  d207       bhs      #0x66

Trace 0: 0x7f14a0000100 [00800408/0000004c/00000110/ff020200] Reset_Handler
----------------
IN: Reset_Handler
0x00000056:  3a01       subs     r2, #1
0x00000058:  1a12       subs     r2, r2, r0
0x0000005a:  f022 0203  bic      r2, r2, #3
0x0000005e:  3204       adds     r2, #4

Trace 0: 0x7f14a0000400 [00800408/00000056/00000110/ff020200] Reset_Handler
Trace 0: 0x7f14a0000100 [00800408/0000004c/00000110/ff020200] Reset_Handler
Trace 0: 0x7f14a0000400 [00800408/00000056/00000110/ff020200] Reset_Handler
"""


def test_thumb_log_words_and_a_counted_marker_phase():
    c = _LogCounter(0x56, count_marker=True, pc_digits=8)
    for i in range(0, len(THUMB_LOG), 50):
        c.feed(THUMB_LOG[i:i + 50])
    c.feed(b"", final=True)
    assert c.tb_words[(0x56).to_bytes(8, "big")] == (0x3a01, 0x1a12, 0xf0220203, 0x3204)
    assert len(c.phases) == 3  # before the marker, from its first run, from its second
    assert c.total(0) == (5, 1, 0) and c.total(1) == (4 + 5, 2, 0) and c.total(2) == (4, 1, 0)
    assert c.total() == (5 + 4 + 5 + 4, 4, 0)
    dropped = _LogCounter(0x56, pc_digits=8)  # a marker that is not counted (the onnxruntime harness)
    dropped.feed(THUMB_LOG, final=True)
    assert dropped.total() == (5 + 5, 2, 0)


@needs_llvm
def test_thumb_estimate_equals_llvm_mca_run_directly(tmp_path, monkeypatch):
    from nrqc.emulator.mca import estimate_cycles

    monkeypatch.setenv("NRQC_CACHE", str(tmp_path))
    asm = ["subs r2, #1", "subs r2, r2, r0", "bic r2, r2, #3", "adds r2, #4"]
    out = subprocess.run(["llvm-mca", "-mtriple=thumbv7em-none-eabi", "-mcpu=cortex-m4", "-iterations=100", "-"],
                         input="\n".join(asm) + "\n", capture_output=True, text=True, check=True).stdout
    ref = int(re.search(r"^Total Cycles:\s+(\d+)", out, re.M).group(1)) / 100 * 7
    got = estimate_cycles([((0x3a01, 0x1a12, 0xf0220203, 0x3204), 7)], "cortex-m4")
    assert got["cycles"] == round(ref) and got["cycles"] > 0


@needs_llvm
def test_an_lse_atomic_is_modelled_as_the_plain_load(tmp_path, monkeypatch):
    """LLVM 14's A57 model (used for the A72/A76) has no ldadd; onnxruntime runs it on the A76."""
    from nrqc.emulator.mca import estimate_cycles

    monkeypatch.setenv("NRQC_CACHE", str(tmp_path))
    add = 0x8b030041  # add x1, x2, x3
    atomic = estimate_cycles([((0xb8200020, add), 10)], "cortex-a76")["cycles"]  # ldadd w0, w0, [x1]
    plain = estimate_cycles([((0xb9400020, add), 10)], "cortex-a76", use_cache=False)["cycles"]  # ldr w0, [x1]
    assert atomic == plain > 0
