"""The import contracts in pyproject.toml (import-linter): the tree keeps them, and each kind of violation
breaks them, in a copy of the sources with one import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    # The copy comes first on the path, so its packages are the ones analysed (not the installed checkout).
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def _python_only(folder: str, names: list[str]) -> list[str]:
    """What `copytree` leaves out: every file but Python sources (weights, photos), and byte-code folders."""
    return [name for name in names
            if name == "__pycache__" or not (name.endswith(".py") or Path(folder, name).is_dir())]


def _source_copy(tmp_path: Path) -> Path:
    for package in ("inference", "addon"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=_python_only)
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract(tmp_path):
    result = _lint_imports(_source_copy(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "broken", "reported"), [
    # a core module reaching up to the engine
    ("inference/core/mesh.py", "from ..engine import session", "The engine's layers point down only",
     "inference.core.mesh -> inference.engine.session"),
    # production code using the evaluation harness (the import the layers were made to end)
    ("inference/multiview/joint.py", "from ..evaluation.metrics import ssim",
     "Production code never imports evaluation or benchmarks", "inference.multiview.joint -> inference.evaluation"),
    # the add-on loading torch
    ("addon/names.py", "import torch", "The add-on imports no engine code and no torch", "addon.names -> torch"),
    # the batch orchestrator loading the engine's core
    ("inference/batch/views.py", "from ..core import mesh", "The batch orchestrator needs no torch",
     "inference.batch.views -> inference.core.mesh"),
    # two modules of one package importing each other
    ("inference/ground/fileio.py", "from . import errors", "No package's modules import each other in a circle",
     ".fileio -> .errors"),
])
def test_a_violation_breaks_its_contract(tmp_path, module, line, broken, reported):
    root = _source_copy(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}\n")
    if module == "inference/ground/fileio.py":   # the other half of the circle
        errors = root / "inference/ground/errors.py"
        errors.write_text(errors.read_text() + "\nfrom . import fileio\n")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert broken in result.stdout and "BROKEN" in result.stdout.split(broken, 1)[1].splitlines()[0]
    assert reported in result.stdout, result.stdout
