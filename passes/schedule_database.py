"""Pipeline step: apply tuning records (from `nrqc compile --db DIR`, else the default
database shipped in `nrqc/tuning/default_db`) to the fused TIR kernels.

Records live in a per-target sub-directory whose name is a hash of the target JSON
(kind, mtriple, mcpu, mattr) and of the CPU feature flags (`nrqc.tuning.keys`), so a record
tuned for one target / CPU feature set is never looked up for another. A `--db` without a
sub-directory for this target is ignored with a note (and the artifact is not marked tuned).
NRQC_NO_DEFAULT_DB=1 skips the shipped default database (shipped rules only).
"""
from __future__ import annotations

from nrqc.passes.base import CompileContext, Step


def apply_database(mod, ctx: CompileContext):
    from nrqc.passes.schedule_shipped import fuse_for_schedules
    from nrqc.tuning.database import (apply_records, default_database_dir, open_for_target, open_selected,
                                      read_progress, target_dir)

    mod = fuse_for_schedules(mod, ctx)
    user_db = ctx.options.get("db")
    applied_user = 0
    if user_db:
        db, why = open_for_target(user_db, ctx.target)
        if db is None:
            ctx.notes.append(f"tuning database {user_db} ignored: {why}")
            _unused(ctx, user_db)
        else:
            sub = target_dir(user_db, ctx.target)
            mod, applied_user, total, verified = apply_records(mod, db, ctx.target, open_selected(sub))
            kept = sum(1 for t in read_progress(sub).get("tasks", {}).values()
                       if (t.get("verified") or {}).get("choice") == "shipped")
            ctx.notes.append(f"tuning database {user_db} ({why}): {applied_user} of {total} kernels "
                             f"from tuning records, {verified} of them verified by re-measurement "
                             f"(the database keeps the shipped schedule for {kept} kernels); "
                             f"{applied_user - verified} unverified (best record of an unfinished task)")
            if applied_user == 0:
                _unused(ctx, user_db)
            else:
                ctx.schedule.database = str(user_db)
    import os

    if os.environ.get("NRQC_NO_DEFAULT_DB", "") not in ("", "0"):
        ctx.notes.append("shipped default database disabled (NRQC_NO_DEFAULT_DB)")
        return mod
    db, why = open_for_target(default_database_dir(), ctx.target)
    if db is not None:
        mod, applied, _total, _verified = apply_records(mod, db, ctx.target)
        if applied:
            ctx.notes.append(f"shipped default database ({why}): {applied} more kernels")
    return mod


def _unused(ctx: CompileContext, user_db) -> None:
    ctx.schedule.database, ctx.schedule.database_unused = None, str(user_db)


def step() -> Step:
    return Step("nrqc.ApplyTuningDatabase", "schedule", apply_database)
