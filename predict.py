"""Use a finished run: `python predict.py runs/<method>/<run> [inputs ...] [-o key=value ...]`.

The run's method (from its config.yaml) chooses the predictor named in the registry line
(`lightning_modules/__init__.py`); each prints one JSON line per result:
  classifiers (rdnet, asr, loraprune_vit)  image files -> top-k classes        (-o top_k=5)
  loraprune                                prompts -> generated text           (-o max_new_tokens=32)
  deeplens                                 no input -> spot/PSF report of the exported lens (-o fields=0,0.7,1)
  deeplens_edof                            image files -> restored PNGs under <run>/predictions/
  face_emotion                             video or image files -> fer-format CSVs under <run>/predictions/
A method without a predictor is refused in one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from tenfold.errors import ConfigError, TenfoldError, one_line
from tenfold.registry import load_predictor


def run_method(run_dir: Path) -> str:
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml): pass runs/<method>/<run>")
    return str(OmegaConf.load(config).method)


def parse_options(items: list[str]) -> dict[str, str]:
    bad = [item for item in items if "=" not in item]
    if bad:
        raise ConfigError(f"-o {bad[0]}: options are key=value (e.g. -o top_k=3)")
    return dict(item.split("=", 1) for item in items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="predict.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("run_dir", type=Path, help="a run directory (runs/<method>/<run>)")
    parser.add_argument("inputs", nargs="*", help="what the method predicts on (image/video files, prompts)")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a predictor option, e.g. -o top_k=3")
    args = parser.parse_args(argv)
    try:
        method = run_method(args.run_dir)
        predictor = load_predictor(method)
        for row in predictor(args.run_dir, args.inputs, parse_options(args.option)):
            print(json.dumps(row))
    except TenfoldError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
