"""Running one add-on scenario (tests/blender_case.py) in real Blender, in a fresh process, and reading its facts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Blender versions to test in: this environment's bpy (5.0), and 4.5 LTS where scripts/test.sh made its venv
# (the engine always runs in this environment, whichever Blender drives it).
BLENDERS = {"5.0": Path(sys.executable)}
if (ROOT / ".venv-blender45" / "bin" / "python").is_file():
    BLENDERS["4.5"] = ROOT / ".venv-blender45" / "bin" / "python"


def build_extension(out: Path) -> Path:
    """The extension zip, built by scripts/build_extension.py into `out`."""
    completed = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_extension.py"), "--out", str(out),
                                "--staging", str(out / "staging")], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    return Path(completed.stdout.strip().splitlines()[-1])


def run_case(blender: Path, case: str, zip_path: Path, workdir: Path, *args: str,
             script: str = "blender_case.py") -> dict:
    """Run `case` of `script` (a module in tests/ with blender_case.py's command line) and return its facts."""
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(workdir / "blender-user"), TRIFACE_ENGINE_PYTHON=sys.executable)
    completed = subprocess.run([str(blender), str(ROOT / "tests" / script), case, str(zip_path),
                                str(workdir), *map(str, args)], capture_output=True, text=True, env=env,
                               timeout=600, check=False)
    facts = [line[6:] for line in completed.stdout.splitlines() if line.startswith("FACTS ")]
    assert completed.returncode == 0 and facts, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(facts[-1])
