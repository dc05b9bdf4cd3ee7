"""Learn an edit slider from two folders of photos and write it into a model folder's directions file.

    python scripts/learn_direction.py --positive smiling/ --negative neutral/ --name smile --model FOLDER
        [--label "Smile"] [--orthogonal-to glasses,age] [--layers all|0-5] [--steps preview|fast|best]
        [--range -1,1] [--device auto] [--dry-run] [--json report.json]

Each photo is inverted (the encoder budget, "preview", by default: encoder and landmark fit), a linear
boundary between the two groups' latents is fitted in w (InterFaceGAN's linear SVM) and scored on held-out
folds, and its normal becomes the slider: value 1 moves a face by the difference between the two groups.
--orthogonal-to removes the named sliders' directions from it ("age without glasses"). The engine, and so
the add-on's sidebar, offers the slider for every face of that model from then on. Photos without a usable face
are listed and left out. --model default is the bundled model (its folder inside the package).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inference.engine.session import Session
from inference.ground.errors import TriFaceError
from inference.ground.fileio import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positive", type=Path, required=True, help="photos that show the attribute")
    parser.add_argument("--negative", type=Path, required=True, help="photos that do not")
    parser.add_argument("--name", required=True, help="the slider's id: lower-case letters, digits and _")
    parser.add_argument("--model", required=True, help="model folder (or 'default', the bundled model)")
    parser.add_argument("--label", default="", help="what the sidebar shows (default: from the name)")
    parser.add_argument("--orthogonal-to", default="", help="comma-separated sliders to keep unchanged")
    parser.add_argument("--layers", default="all", help="w_plus layers it moves: all, 0-5, 0,1,2")
    parser.add_argument("--steps", default="preview", help="inversion budget per photo (preview, fast, best)")
    parser.add_argument("--range", default="-1,1", help="the slider's safe range, min,max")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dry-run", action="store_true", help="report the accuracy, write nothing")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    try:
        minimum, maximum = (float(v) for v in args.range.split(","))
    except ValueError:
        parser.error(f"--range {args.range!r}: use min,max, e.g. -1,1")
    session = Session(model=args.model, device=args.device)

    def progress(fraction: float, message: str) -> None:
        print(f"[{100 * fraction:5.1f}%] {message}", file=sys.stderr, flush=True)

    params = {"positive": str(args.positive.resolve()), "negative": str(args.negative.resolve()), "name": args.name,
              "label": args.label, "orthogonal_to": [n for n in args.orthogonal_to.split(",") if n],
              "layers": args.layers, "steps": args.steps, "min": minimum, "max": maximum, "write": not args.dry_run}
    try:
        report = session.learn_direction(params, progress)
    except TriFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        session.close()
    for failure in report["failures"]:
        print(f"left out {failure['photo']}: {failure['error']}", file=sys.stderr)
    print(f"{args.name}: held-out accuracy {report['held_out_accuracy']:.3f} ({report['folds']}-fold, "
          f"{report['positives']} positive and {report['negatives']} negative photos)")
    print(f"written to {report['file']}" if report["file"] else "dry run: nothing written")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
