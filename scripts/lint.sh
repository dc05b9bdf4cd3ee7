#!/usr/bin/env bash
# Static checks CI runs before the tests: ruff (style and bugs, rules in pyproject.toml) and import-linter (the
# engine's layers and the add-on's and the batch's boundaries, contracts in pyproject.toml). Needs .venv
# (bash scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
