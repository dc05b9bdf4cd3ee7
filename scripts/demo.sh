#!/usr/bin/env bash
# The main job: set up, then sample a head from the bundled default model and write renders, depth maps and a
# coloured mesh (PLY in EG3D units, GLB in metres) to out/demo (or the folder given as the first argument).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-out/demo}
.venv/bin/python -m inference generate --out "$out" --seed 1
echo "wrote $out"
