"""Build the installable Blender extension: `python scripts/build_extension.py` -> dist/triface-VERSION.zip.

The zip holds the add-on (addon/ at its root, with blender_manifest.toml) and, under engine/, a copy of
the engine's source (inference/ with the bundled default model, pyproject.toml, licences). The add-on loads
only the engine's wire module from there; 'Set up Engine' pip-installs engine/ into the engine's own Python,
and the engine process runs from it, so add-on and engine always speak the same protocol version.
Blender's own extension tool (bl_pkg/cli/blender_ext.py, shipped in the `bpy` wheel) validates and packs it.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def blender_ext_tool() -> Path:
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the 'bpy' package is not installed: run `pip install bpy` (it carries Blender's "
                         "extension tool), or build with Blender: blender --command extension build")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise SystemExit(f"no bl_pkg/cli/blender_ext.py inside {spec.submodule_search_locations[0]}")
    return found[-1]


def manifest_version() -> str:
    text = (ROOT / "blender_manifest.toml").read_text(encoding="utf-8")
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1)


def engine_version() -> str:
    text = (ROOT / "inference" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1)


def stage(folder: Path) -> None:
    """Lay out the extension's files in `folder` (emptied first)."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ROOT / "addon", folder, ignore=IGNORE)
    shutil.copy2(ROOT / "blender_manifest.toml", folder / "blender_manifest.toml")
    shutil.copy2(ROOT / "LICENSE", folder / "LICENSE")
    engine = folder / "engine"
    shutil.copytree(ROOT / "inference", engine / "inference", ignore=IGNORE)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, engine / name)
    # The ICT FaceKit (MIT) travels inside inference/asset/ict_facekit with its LICENSE; the default model and
    # the 3D landmarks were derived from it, so its notice also sits beside the engine's own.
    shutil.copy2(ROOT / "inference" / "asset" / "ict_facekit" / "LICENSE", engine / "ICT_FACEKIT_LICENSE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder")
    parser.add_argument("--staging", type=Path, default=ROOT / "build" / "extension")
    args = parser.parse_args(argv)
    version = manifest_version()
    if version != engine_version():
        raise SystemExit(f"blender_manifest.toml says {version} but inference/__init__.py says {engine_version()}: "
                         "bump both together (the add-on and the engine ship as one)")
    stage(args.staging)
    args.out.mkdir(parents=True, exist_ok=True)
    output = args.out / f"triface-{version}.zip"
    command = [sys.executable, str(blender_ext_tool()), "build", "--source-dir", str(args.staging),
               "--output-filepath", str(output)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.stderr.write(completed.stdout + completed.stderr)
        return completed.returncode
    print(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
