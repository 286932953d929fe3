"""MetaSchedule tuning for nrqc: task extraction (same kernels `nrqc compile` builds), a
builder that skips the slow tensor-intrinsic import, local and RPC-tracker runners, an
XGBoost cost model, progress and resume, and a database keyed by target + CPU features."""
