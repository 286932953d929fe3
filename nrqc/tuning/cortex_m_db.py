"""The Cortex-M knob database: what `nrqc tune --target cortex-m4 --db DIR` writes and
`nrqc compile --target cortex-m4 --db DIR` applies.

Cortex-M kernels are not MetaSchedule-tuned TIR: nrqc's hand-written C kernels take
parameters (nrqc.cortex_m.knobs: table placement, output-channel blocking...), keyed per
kernel shape. Their chosen values live next to the MetaSchedule records, under the same
per-target key (`nrqc.tuning.database.target_dir`), in one file:

    DIR/<target name>-<key>/key.json
    DIR/<target name>-<key>/cortex_m_knobs.json   {"config": {kernel key: {knob: value}},
                                                   "measure", "instructions", "trials"}
This module only reads and writes that file (no import of the back end).
"""
from __future__ import annotations

import json
from pathlib import Path

from nrqc.errors import NrqcError
from nrqc.tuning.database import KEY_FILE, key_material, target_dir

KNOBS_FILE = "cortex_m_knobs.json"


def read_knobs(db_dir: str | Path | None, target) -> tuple[dict | None, str | None]:
    """(kernel key -> {knob: value}, note for the report); (None, None) without --db."""
    if not db_dir:
        return None, None
    sub = target_dir(db_dir, target)
    path = sub / KNOBS_FILE
    if not path.is_file():
        return None, f"tuning database {db_dir} ignored: no Cortex-M knob choices for {target.name} ({sub.name})"
    try:
        stored = json.loads((sub / KEY_FILE).read_text())
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise NrqcError(f"{path}: unreadable Cortex-M knob database ({e})") from None
    if stored != key_material(target):
        return None, f"tuning database {db_dir} ignored: {sub / KEY_FILE} does not match {target.name}"
    config = data.get("config") or {}
    return config, (f"tuning database {db_dir}: Cortex-M knobs for {len(config)} kernel(s) "
                    f"(measured by {data.get('measure', '?')})")


def write_knobs(db_dir: str | Path, target, config: dict, summary: dict) -> Path:
    sub = target_dir(db_dir, target)
    sub.mkdir(parents=True, exist_ok=True)
    key_path = sub / KEY_FILE
    if not key_path.is_file():
        key_path.write_text(json.dumps(key_material(target), indent=2, sort_keys=True) + "\n")
    path = sub / KNOBS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": config, **summary}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
