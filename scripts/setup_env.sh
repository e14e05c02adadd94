#!/usr/bin/env bash
# Creates .venv with MedSeg and everything its tests need, from the package registries only.
# torch is installed first and pinned to 2.13.0 (the CPU wheel); pyproject.toml accepts a range
# so Slicer users can bring their own torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
STAMP="$VENV/.medseg-installed"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt scripts/setup_env.sh ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[test,data,web]"
touch "$STAMP"
echo "MedSeg environment ready in $VENV"
