#!/usr/bin/env bash
# Set up embodimem on a fresh Debian/Ubuntu machine (or any machine with python3 >= 3.10 and pip).
#   bash scripts/setup.sh        # system packages, CPU torch, embodimem + pretrained perception, simulators, video
#   bash scripts/setup.sh dev    # ... plus open3d and the test dependencies
# Idempotent: what is already installed is skipped. PYTHON=/path/to/python picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
MODE="${1:-run}"

# Debian packages: EGL/Mesa for headless MiniWorld rendering, libusb for open3d-cpu 0.20's import.
APT_PACKAGES=(libegl1 libgl1-mesa-dri libusb-1.0-0)
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
      echo "[setup] apt-get install ${missing[*]}"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "[setup] missing Debian packages (need root): ${missing[*]} -- continuing; 'embodimem doctor' says what they enable"
    fi
  fi
fi

# torch first, so that nothing later pulls a multi-GB CUDA build: keep whatever torch is installed,
# otherwise take the CPU build. Never torchvision / timm / torchcodec (they drag in a CUDA torch).
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] pip install torch==${EMBODIMEM_TORCH:-2.13.0}"
  "$PY" -m pip install -q "torch==${EMBODIMEM_TORCH:-2.13.0}"
fi
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"

# run: what the main job needs; dev: everything the test suite exercises (simulators, open3d, video I/O)
EXTRAS="pretrained,sims,video"
[ "$MODE" = "dev" ] && EXTRAS="pretrained,sims,video,3d,dev"
echo "[setup] pip install -e .[$EXTRAS] (torch pinned to the installed $TORCH_VERSION)"
"$PY" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]" "torch==$TORCH_VERSION" 2>&1 \
  | { grep -v -E "Running pip as the 'root' user|^$" || true; }
echo "[setup] done: $("$PY" -c 'import embodimem, torch; print("embodimem", embodimem.__version__, "torch", torch.__version__)')"
