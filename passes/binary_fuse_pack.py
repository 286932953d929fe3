"""Pass 4: fuse an OR-pool into the kernel that produces its packed input.

One job: placeholder until implemented (returns the module unchanged)."""
from __future__ import annotations


def fuse_pack(mod, ctx):
    return mod
