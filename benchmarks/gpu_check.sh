#!/usr/bin/env bash
# The GPU proof of issue #13, in one go on a machine with an NVIDIA GPU (a few minutes):
#   bash benchmarks/gpu_check.sh            (from the repository root, after `make setup data`)
# 1. the CUDA-only test (out-of-memory fallback to the CPU moves the network),
# 2. benchmarks/gpu_check.py: predict fp32 and bf16 (Dice, agreement), a real forced
#    out-of-memory fallback, one sparse fine-tuning round -> benchmarks/results/gpu_check_cuda.json,
# 3. `medseg predict --device cuda` from process start to written file, fp32 and bf16,
# 4. the speed benchmark on CUDA -> benchmarks/results/inference_speed_cuda.json.
# Any failure stops the script with a non-zero exit and says which step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # benchmarks.sparse is imported as a package from the root
step() { echo; echo "== gpu_check: $*"; }
trap 'echo "gpu_check FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

step "environment"
[ -x "$PY" ] || { echo "gpu_check FAILED: $PY not found (run make setup)" >&2; exit 1; }
command -v nvidia-smi >/dev/null || { echo "gpu_check FAILED: nvidia-smi not found: no NVIDIA driver" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
"$PY" -c 'import sys, torch; ok = torch.cuda.is_available(); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", ok); sys.exit(0 if ok else 1)' \
  || { echo "gpu_check FAILED: this torch cannot use the GPU" >&2; exit 1; }
"$PY" -c 'from MedSegExtension.datasets.colin27 import load_colin27_t1; load_colin27_t1()' \
  || { echo "gpu_check FAILED: Colin27 is missing (run make data)" >&2; exit 1; }

step "CUDA-only tests"
OMP_NUM_THREADS=4 "$PY" -m pytest -q -x Testing/test_inference.py -k out_of_memory -rs
skipped=$("$PY" -m pytest -q Testing/test_inference.py -k out_of_memory_on_gpu -rs 2>&1 | grep -c SKIPPED || true)
[ "$skipped" = "0" ] || { echo "gpu_check FAILED: the CUDA test was skipped" >&2; exit 1; }

step "fp32/bf16, forced out-of-memory, one sparse round"
"$PY" -m benchmarks.gpu_check

step "medseg predict --device cuda from process start to file"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ch2=$("$PY" -c 'from MedSegExtension.datasets.colin27 import colin27_t1_path; print(colin27_t1_path())')
for precision in fp32 bf16; do
  flag=""; [ "$precision" = fp32 ] && flag="--no-amp"
  start=$(date +%s%N)
  "$PY" -m MedSegExtension predict "$ch2" -o "$work/$precision.nii.gz" --device cuda $flag --progress none
  end=$(date +%s%N)
  [ -s "$work/$precision.nii.gz" ] || { echo "gpu_check FAILED: no $precision output" >&2; exit 1; }
  echo "medseg predict $precision: $(( (end - start) / 1000000 )) ms"
done

step "speed benchmark on CUDA"
"$PY" benchmarks/inference_speed.py --device cuda --cohort 4

step "done: benchmarks/results/gpu_check_cuda.json and inference_speed_cuda.json written"
ls -l benchmarks/results/*_cuda.json
