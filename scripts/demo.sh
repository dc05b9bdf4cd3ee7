#!/usr/bin/env bash
# The main job: set up, then sample a head from a model and write renders, depth maps and a mesh (PLY + GLB).
# Until the bundled default model ships, the model is a freshly initialised default-small network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-out/demo}
model=out/untrained-default-small
[ -f "$model/config.json" ] || .venv/bin/python -m inference init-model "$model" --preset default-small --seed 0
.venv/bin/python -m inference generate --model "$model" --out "$out" --seed 1 --level 0
echo "wrote $out"
