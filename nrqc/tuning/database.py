"""Tuning databases keyed by target and CPU features.

Layout of a database directory DIR (what `nrqc tune --db DIR` writes and
`nrqc compile --db DIR` reads):

    DIR/<target name>-<key>/key.json                      what the key was made from
    DIR/<target name>-<key>/database_workload.json        MetaSchedule JSONDatabase
    DIR/<target name>-<key>/database_tuning_record.json
    DIR/<target name>-<key>/progress.json                 per-task trials done, best latency
    DIR/<target name>-<key>/selected_*.json               the verified winner per kernel

`key` hashes the target JSON (kind, mtriple, mcpu, mattr), the CPU features LLVM enables
for it and, for the host target, the CPU flags of /proc/cpuinfo. A compile for another
target, CPU model or feature set computes another key, finds no sub-directory, and
ignores the database (with a note): records are never applied across targets.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nrqc.errors import NrqcError

KEY_FILE = "key.json"
PROGRESS_FILE = "progress.json"
SELECTED_WORKLOADS = "selected_workload.json"
SELECTED_RECORDS = "selected_tuning_record.json"


def default_database_dir() -> Path:
    """The database shipped with nrqc (model zoo / DNSMOS model_v8 records)."""
    return Path(__file__).resolve().parent / "default_db"


def key_material(target) -> dict:
    """What a record's key is made of, for an nrqc TargetDescription."""
    import tvm

    t = dict(target.tvm_target)
    core = {k: t[k] for k in ("kind", "mtriple", "mcpu", "mattr") if k in t}
    if "mattr" in core:
        core["mattr"] = sorted(core["mattr"])
    llvm_features: list[str] = []
    if core.get("kind") == "llvm":
        try:
            llvm_features = sorted(str(f) for f in tvm.target.codegen.llvm_get_cpu_features(target.tvm()))
        except Exception:  # noqa: BLE001 - LLVM without this backend: the JSON alone keys it
            llvm_features = []
    host_flags: list[str] = []
    if target.backend.runs_on_host:
        from nrqc.targets.x86 import host_cpu_flags

        host_flags = sorted(host_cpu_flags())
    return {
        "target_name": target.name,
        "target": core,
        "llvm_features_sha256": hashlib.sha256(" ".join(llvm_features).encode()).hexdigest()[:16],
        "host_cpu_flags_sha256": hashlib.sha256(" ".join(host_flags).encode()).hexdigest()[:16] if host_flags else None,
    }


def target_key(target) -> str:
    m = key_material(target)
    return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()[:16]


def target_dir(db_dir: str | Path, target) -> Path:
    return Path(db_dir) / f"{target.name}-{target_key(target)}"


def open_for_target(db_dir: str | Path, target, create: bool = False):
    """(JSONDatabase, description) for this target's records in db_dir; (None, why) if absent."""
    from tvm.s_tir import meta_schedule as ms

    db_dir = Path(db_dir)
    if db_dir.exists() and not db_dir.is_dir():
        raise NrqcError(f"--db {db_dir}: is a file, not a tuning database directory")
    sub = target_dir(db_dir, target)
    material = key_material(target)
    if sub.exists() and not sub.is_dir():
        raise NrqcError(f"--db {db_dir}: {sub} is a file where this target's records directory belongs")
    if not sub.is_dir():
        if not create:
            if not db_dir.is_dir():
                return None, f"{db_dir} does not exist"
            others = sorted(p.name for p in db_dir.iterdir() if (p / KEY_FILE).is_file())
            return None, (f"no records for target {target.name} with key {sub.name.rsplit('-', 1)[-1]} "
                          f"(this target/CPU feature set); the database holds "
                          f"{', '.join(others) if others else 'no keyed records'}")
        sub.mkdir(parents=True)
    key_path = sub / KEY_FILE
    if key_path.is_file():
        stored = _read_json(key_path)
        if stored != material:  # a hash collision or a hand-edited directory
            return None, f"{sub} key.json does not match this target ({stored} != {material})"
    else:
        if not create:
            return None, f"{sub} has no {KEY_FILE}"
        key_path.write_text(json.dumps(material, indent=2, sort_keys=True) + "\n")
    db = _json_database(ms, sub / "database_workload.json", sub / "database_tuning_record.json")
    return db, f"records {sub.name}"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NrqcError(f"{path}: corrupt tuning database file ({e})") from None
    except OSError as e:
        raise NrqcError(f"{path}: cannot read the tuning database file ({e.strerror or e})") from None


def _check_record_lines(path: Path) -> None:
    """MetaSchedule's JSON files hold one JSON array per line; TVM fails on a bad line with
    an error that names neither the file nor the line, so find it first."""
    if not path.exists():
        return
    if not path.is_file():
        raise NrqcError(f"{path}: expected a tuning database file, found a directory")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise NrqcError(f"{path}: cannot read the tuning database file ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise NrqcError(f"{path}:{n}: corrupt tuning record ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, list):
            raise NrqcError(f"{path}:{n}: corrupt tuning record (a JSON array expected, found {type(rec).__name__})")


def _json_database(ms, workloads: Path, records: Path):
    for path in (workloads, records):
        _check_record_lines(path)
    try:
        return ms.database.JSONDatabase(path_workload=str(workloads), path_tuning_record=str(records),
                                        allow_missing=True, module_equality="structural")
    except Exception as e:  # well-formed JSON that TVM cannot turn into workloads/records
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise NrqcError(f"{records.parent}: unreadable tuning database ({lines[-1][:160] if lines else type(e).__name__})"
                        ) from None


def open_selected(sub: Path, create: bool = False):
    """The verified choice per kernel (`nrqc tune` re-measures the shipped schedule against
    the best records and keeps the winner here): a JSONDatabase, or None if absent."""
    from tvm.s_tir import meta_schedule as ms

    sub = Path(sub)
    paths = sub / SELECTED_WORKLOADS, sub / SELECTED_RECORDS
    if not create and not paths[1].is_file():
        return None
    return _json_database(ms, *paths)


def workload_mod(func):
    """The IRModule a kernel is tuned and looked up as (same form in tune and compile)."""
    import tvm

    func = func.without_attr("global_symbol") if func.attrs is not None and "global_symbol" in func.attrs else func
    return tvm.IRModule({"main": func})


def apply_records(mod, db, target, selected=None):
    """Replace each unscheduled PrimFunc of mod that has a record by its schedule: the
    verified choice in `selected` first, else the best record of `db`. nrqc's own
    hand-scheduled kernels are tuned in their unscheduled form (`kernel_workload`) and take
    only a verified choice (a tuned schedule that beat theirs when re-measured).

    Returns (mod, kernels applied, kernels considered, of them from `selected`)."""
    import tvm
    from tvm import tirx

    from nrqc.targets.kernels.binary_ops import as_kernel, kernel_workload, with_workload

    tvm_target = target.tvm()
    updates = {}
    total = verified = 0
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        workload = kernel_workload(func)
        if workload is None and func.attrs is not None and "tirx.is_scheduled" in func.attrs:
            continue
        total += 1
        wl = workload_mod(func if workload is None else workload)
        sch = None
        if selected is not None and selected.has_workload(wl):
            sch = selected.query_schedule(wl, tvm_target, "main")
            verified += sch is not None
        if sch is None and workload is None and db.has_workload(wl):
            sch = db.query_schedule(wl, tvm_target, "main")
        if sch is None:
            continue
        new = sch.mod["main"]
        if workload is not None:
            updates[gv] = with_workload(as_kernel(new, func.attrs["global_symbol"], target), workload)
            continue
        if func.attrs is not None and "global_symbol" in func.attrs:
            new = new.with_attr("global_symbol", func.attrs["global_symbol"])
        updates[gv] = new.with_attr("tirx.is_scheduled", True)
    if updates:
        mod = tvm.IRModule({gv: updates.get(gv, f) for gv, f in mod.functions.items()}, attrs=mod.attrs)
    return mod, len(updates), total, verified


def read_progress(sub: Path) -> dict:
    p = Path(sub) / PROGRESS_FILE
    return _read_json(p) if p.is_file() else {"tasks": {}}


def write_progress(sub: Path, progress: dict) -> None:
    p = Path(sub) / PROGRESS_FILE
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(progress, indent=2, sort_keys=True) + "\n")
    tmp.replace(p)


def export_best(src_dir: str | Path, target, dest_dir: str | Path | None = None, margin: float = 0.95) -> list[str]:
    """Copy the verified choice of each task of src_dir (this target's key) into dest_dir
    (the shipped default database by default), only where a tuned schedule beat the
    shipped one by `margin` in the verification (else the shipped rule gives the same code
    and the record is dead weight). Returns the task names exported."""
    from tvm.s_tir import meta_schedule as ms

    sub = target_dir(src_dir, target)
    selected = open_selected(sub)
    if selected is None:
        raise FileNotFoundError(f"{sub} has no verified choices (run `nrqc tune` to the end)")
    by_ms = {}
    for name, rec in read_progress(sub).get("tasks", {}).items():
        v = rec.get("verified") or {}
        if v.get("choice") not in (None, "shipped") and v.get("shipped_ms") and v["ms"] < margin * v["shipped_ms"]:
            by_ms[round(v["ms"], 6)] = name
    dest_dir = Path(dest_dir) if dest_dir is not None else default_database_dir()
    dest, why = open_for_target(dest_dir, target, create=True)
    if dest is None:
        raise FileExistsError(why)
    exported = []
    for record in selected.get_all_tuning_records():
        name = by_ms.get(round(float(record.run_secs[0]) * 1e3, 6)) if record.run_secs else None
        if name is None:
            continue
        wl = dest.commit_workload(record.workload.mod)
        dest.commit_tuning_record(ms.database.TuningRecord(record.trace, wl, record.run_secs, record.target,
                                                           record.args_info))
        exported.append(name)
    return exported
