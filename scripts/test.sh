#!/usr/bin/env bash
# Set up, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Blender 4.5 LTS as a second bpy for the add-on tests (5.0 is in .venv); it needs nothing else.
if [ ! -x .venv-blender45/bin/python ]; then
    "${PYTHON:-$(command -v python3.11 || command -v python3)}" -m venv .venv-blender45
    .venv-blender45/bin/python -m pip install --quiet "bpy==4.5.15"
fi
.venv/bin/python -m pytest -q "$@"
