"""Write the procedural image-to-image task folder: 4x4 -> 8x8 digit super-resolution with its generators.

    python -m lightning_modules.gan_fingerprint.i2i_task OUT [--iterations 200]

OUT/input/{train,test}/<digit>/*.png (4x4 average-pooled digits), OUT/target/{train,val,test}/<digit>/*.png
(the 8x8 digits, the platform's 1257/270/270 split of scikit-learn's bundled digits, BSD-3-Clause), and
OUT/generators/*.pt2: `torch.export` programs (dynamic batch) of super-resolvers trained from distinct seeds,
the protected one (seed 0), references (1-3, 8-12), held-out independents (4-6, and seed 7 at half the width).
It prints the train.py command that fingerprints the protected generator with `configs/gan_fingerprint.yaml`.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from datamodules.gan_fingerprint import digit_tensors
from lightning_modules.gan_fingerprint.i2i import low_resolution, train_super_resolver
from tenfold.checkpoint_io import atomic_write

WIDTH = 16
# Eight references: with three, C* learned the trigger of any super-resolver (held-out r up to 0.44; README)
ROLES = {"protected": [0], "reference": [1, 2, 3, 8, 9, 10, 11, 12], "independent": [4, 5, 6]}
OTHER_WIDTH_SEED = 7  # one more held-out independent, of width WIDTH // 2

LICENSE = """Images derived from scikit-learn's bundled 8x8 handwritten digits (sklearn.datasets.load_digits,
a copy of the UCI ML hand-written digits test set), distributed with scikit-learn under the BSD-3-Clause
licence. Written by lightning_modules/gan_fingerprint/i2i_task.py; the generators are trained on them.
"""


@dataclass
class TaskFiles:
    root: Path
    protected: str
    references: list[str]
    independents: list[str]

    def overrides(self) -> list[str]:
        """The train.py overrides that point configs/gan_fingerprint.yaml at this task."""
        return [
            f"data.root={self.root}",
            f"data.protected_generator={self.protected}",
            f"data.reference_generators=[{','.join(self.references)}]",
            f"data.independent_generators=[{','.join(self.independents)}]",
        ]


def _save_png(image: Tensor, path: Path) -> None:
    pixels = ((image[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(path)


def _write_split(images: Tensor, labels: Tensor, folder: Path) -> None:
    for i, (image, label) in enumerate(zip(images, labels)):
        target = folder / str(int(label))
        target.mkdir(parents=True, exist_ok=True)
        _save_png(image, target / f"{i:05d}.png")


def _save_program(generator: nn.Module, example: Tensor, path: Path) -> str:
    batch = torch.export.Dim("batch")
    program = torch.export.export(generator.eval(), (example,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()  # torch.export.save wants a .pt2 name; the atomic temporary file has another
    torch.export.save(program, buffer)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    return str(path)


def write_task(out: Path, iterations: int = 200) -> TaskFiles:
    out = Path(out).resolve()
    data = digit_tensors(0)
    for split in ("train", "val", "test"):
        images, labels = data[split]
        _write_split(images, labels, out / "target" / split)
        if split != "val":
            _write_split(low_resolution(images), labels, out / "input" / split)
    (out / "LICENSE.txt").write_text(LICENSE)
    train = data["train"][0]
    example = low_resolution(train[:2])
    folder = out / "generators"
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list[str]] = {role: [] for role in ROLES}
    for role, seeds in ROLES.items():
        for seed in seeds:
            g = train_super_resolver(train, seed, WIDTH, iterations)
            name = "protected" if role == "protected" else f"{role}_s{seed}"
            paths[role].append(_save_program(g, example, folder / f"{name}.pt2"))
    g = train_super_resolver(train, OTHER_WIDTH_SEED, WIDTH // 2, iterations)
    name = f"independent_w{WIDTH // 2}_s{OTHER_WIDTH_SEED}"
    paths["independent"].append(_save_program(g, example, folder / f"{name}.pt2"))
    return TaskFiles(out, paths["protected"][0], paths["reference"], paths["independent"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the task folder to write")
    parser.add_argument("--iterations", type=int, default=200, help="L1 training iterations per generator")
    args = parser.parse_args()
    files = write_task(args.out, args.iterations)
    print(f"wrote {files.root}; fingerprint its protected generator with:")
    print("TENFOLD_FINGERPRINT_KEY=<your secret> python train.py --config configs/gan_fingerprint.yaml \\\n    "
          + " \\\n    ".join(f"'{o}'" for o in files.overrides()))


if __name__ == "__main__":
    main()
