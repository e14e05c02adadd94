#!/usr/bin/env bash
# Install what the web app's browser test needs from Debian: headless Chromium and its WebDriver,
# and Mesa's EGL (trame-slicer renders the views off-screen with it). Idempotent.
#
#   scripts/install_browser.sh                 # needs root (or sudo) and apt-get
#   MEDSEG_SKIP_APT=1 scripts/install_browser.sh   # skip: the browser test then skips, saying why
#
# Without apt-get or root it says what to install and exits 0: the test skips with that reason.
set -euo pipefail

APT_PACKAGES=(chromium chromium-driver libegl1 libegl-mesa0 libgl1-mesa-dri)

missing=()
for package in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "browser packages: ${APT_PACKAGES[*]} already installed"
    exit 0
fi
if [[ -n "${MEDSEG_SKIP_APT:-}" ]]; then
    echo "install_browser.sh: skipped (MEDSEG_SKIP_APT); missing: ${missing[*]}" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_browser.sh: apt-get not found; install ${missing[*]} with your package manager" >&2
    exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo"; else
        echo "install_browser.sh: need root to install ${missing[*]}; the browser test will skip" >&2
        exit 0
    fi
fi
echo "installing Debian packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
for binary in /usr/bin/chromium /usr/bin/chromedriver; do
    [[ -x "$binary" ]] || { echo "install_browser.sh: expected $binary after installing the packages" >&2; exit 1; }
done
