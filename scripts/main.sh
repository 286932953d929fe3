#!/usr/bin/env bash
# The main job on a fresh machine: set up, then train -> export -> compile -> profile the
# default model (the binary-activation VAD model of the zoo) on the embedded synthetic
# speech data, for this host (x86), a Raspberry Pi (arm_cpu) and a Cortex-M4.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

RUN="${NRQC_RUN_DIR:-runs/main}"
mkdir -p "$RUN"
step() { printf '\n== %s\n' "$*" >&2; }

step "train: VAD model with binary activation maps and int8 weights (QAT), on synthesized espeak-ng/sox data"
nrqc train vad --variant bam --out "$RUN/vad"
step "export: pruned, folded ONNX (BAM contract)"
nrqc export "$RUN/vad/checkpoint.pt" -o "$RUN/vad.onnx"
step "train + export the float twin (same architecture and data) to compare against"
nrqc train vad --variant float --data "$RUN/vad/data" --out "$RUN/vad-float"
nrqc export "$RUN/vad-float/checkpoint.pt" -o "$RUN/vad-float.onnx"
step "compile: x86 (this host), with the numerical check against onnxruntime"
nrqc compile "$RUN/vad.onnx" --target x86 -o "$RUN/vad-x86"
step "compile: Raspberry Pi 4 (aarch64 cross-compiled deploy bundle)"
nrqc compile "$RUN/vad.onnx" --target arm_cpu -o "$RUN/vad-arm_cpu"
step "compile: Cortex-M4 (bare-metal C + firmware, checked in QEMU), BAM and float twin"
nrqc compile "$RUN/vad.onnx" --target cortex-m4 -o "$RUN/vad-cortex-m4"
nrqc compile "$RUN/vad-float.onnx" --target cortex-m4 -o "$RUN/vad-float-cortex-m4"
step "profile: x86 latency vs onnxruntime, per-operator time, memory beside the float twin"
nrqc profile "$RUN/vad-x86" --against "$RUN/vad-float.onnx"
step "profile: Cortex-M4 flash, RAM and instructions per inference, beside the float twin"
nrqc profile "$RUN/vad-cortex-m4" --against "$RUN/vad-float-cortex-m4"
printf '\nartifacts in %s\n' "$RUN" >&2
