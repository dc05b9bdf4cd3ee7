#!/usr/bin/env bash
# The main job: set up, then import a face from a photo through the TriFace Blender extension (real Blender, the
# bpy module, headless) on the bundled default model, and write face.blend, face.glb and face.obj to out/demo.
#   bash scripts/demo.sh [PHOTO] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
photo=${1:-tests/data/photos/congress_C000537.jpg}
out=${2:-out/demo}
.venv/bin/python scripts/import_photo.py "$photo" --out "$out"
