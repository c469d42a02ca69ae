"""A procedural captioned world for the CPU demo: coloured shapes described by attribute captions.

Training pairs are (32x32 image, caption) where the caption names only attributes (shape, colour, fill
pattern, size, background) in many paraphrases. The zero-shot test classes are *concepts* ("tennis ball",
"stop sign") defined by an attribute triple; their names never occur in any training caption, so a
classifier built from the class name alone ("a photo of a tennis ball.") has nothing to go on, while
descriptions that spell out the attributes do. `KNOWLEDGE` is what the loopback stub LLM "knows".

Everything is a pure function of (seed, index): the same dataset on every rank and every run.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGE_SIZE = 32
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
COLOURS = {
    "red": (220, 30, 30), "green": (40, 190, 60), "blue": (40, 70, 230), "yellow": (235, 220, 40),
    "white": (245, 245, 245), "purple": (150, 50, 200), "orange": (250, 140, 20), "cyan": (40, 220, 230),
}
PATTERNS = ("solid", "striped", "dotted")
SIZES = ("small", "large")
BACKGROUNDS = {"black": (10, 10, 10), "grey": (110, 110, 110)}

# Several words per attribute value, so captions are paraphrases rather than one fixed sentence.
PATTERN_WORDS = {"solid": ("solid", "plain", "filled"), "striped": ("striped", "with stripes", "stripy"),
                 "dotted": ("dotted", "with dots", "spotted")}
SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")}
SHAPE_WORDS = {"circle": ("circle", "disc", "round shape"), "square": ("square", "box shape", "square shape"),
               "triangle": ("triangle", "triangular shape", "triangle"), "cross": ("cross", "plus shape", "cross"),
               "ring": ("ring", "hollow circle", "ring"), "diamond": ("diamond", "rhombus", "diamond shape")}
CAPTION_TEMPLATES = (
    "a {size} {colour} {shape} on a {bg} background",
    "a photo of a {colour} {shape}, {pattern}",
    "{size} {pattern} {colour} {shape}",
    "a {shape} that is {colour} and {pattern}",
    "there is a {size} {colour} {shape} on {bg}",
    "a picture of a {pattern} {shape} coloured {colour}",
    "{colour} {shape} on a {bg} background, {size}",
    "an image of a {size} {shape}; it is {colour}",
)

# The zero-shot classes: name -> (shape, colour, pattern). No word of a name occurs in any caption.
KNOWLEDGE = {
    "tennis ball": ("circle", "yellow", "solid"),
    "stop sign": ("diamond", "red", "solid"),
    "zebra flag": ("square", "white", "striped"),
    "blueberry": ("circle", "blue", "dotted"),
    "lime slice": ("ring", "green", "solid"),
    "pumpkin": ("circle", "orange", "striped"),
    "ice cube": ("square", "cyan", "solid"),
    "plum": ("diamond", "purple", "dotted"),
    "warning sign": ("triangle", "yellow", "solid"),
    "first aid kit": ("cross", "red", "solid"),
}
CLASS_NAMES = list(KNOWLEDGE)


def caption_vocabulary() -> set[str]:
    """Every word a training caption can contain."""
    words: set[str] = set()
    for template in CAPTION_TEMPLATES:
        words |= set(template.replace("{", " ").replace("}", " ").replace(",", " ").replace(";", " ").split())
    for table in (PATTERN_WORDS, SIZE_WORDS, SHAPE_WORDS):
        for options in table.values():
            for option in options:
                words |= set(option.split())
    return words | set(COLOURS) | set(BACKGROUNDS)


def draw(shape: str, colour: str, pattern: str, size: str, background: str, rng: np.random.Generator) -> np.ndarray:
    """One (32, 32, 3) uint8 image; position and exact radius jitter with `rng`."""
    n = IMAGE_SIZE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    radius = (rng.uniform(5.0, 7.0) if size == "small" else rng.uniform(10.0, 13.0))
    margin = radius + 1
    cy, cx = rng.uniform(margin, n - margin, size=2)
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        mask = dy**2 + dx**2 <= radius**2
    elif shape == "square":
        mask = (np.abs(dy) <= radius * 0.85) & (np.abs(dx) <= radius * 0.85)
    elif shape == "triangle":
        mask = (dy <= radius * 0.8) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)
    elif shape == "cross":
        arm = radius * 0.35
        mask = ((np.abs(dy) <= arm) & (np.abs(dx) <= radius)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= radius))
    elif shape == "ring":
        mask = (dy**2 + dx**2 <= radius**2) & (dy**2 + dx**2 >= (radius * 0.55) ** 2)
    elif shape == "diamond":
        mask = np.abs(dy) + np.abs(dx) <= radius
    else:
        raise ValueError(f"unknown shape {shape!r}")
    if pattern == "striped":
        mask &= (np.floor(xx / 2).astype(int) % 2) == 0
    elif pattern == "dotted":
        mask &= ((xx.astype(int) % 4) < 2) & ((yy.astype(int) % 4) < 2)
    image = np.empty((n, n, 3), np.float32)
    image[:] = BACKGROUNDS[background]
    image += rng.normal(0.0, 8.0, size=image.shape)  # sensor noise
    image[mask] = np.asarray(COLOURS[colour], np.float32) + rng.normal(0.0, 10.0, size=(int(mask.sum()), 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, {"train": 0, "val": 1, "test": 2}[split], index])


def captioned_pair(seed: int, split: str, index: int) -> tuple[np.ndarray, str]:
    """A random attribute combination, its image and one paraphrased caption."""
    rng = _rng(seed, split, index)
    shape, colour = SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))]
    pattern, size = PATTERNS[rng.integers(len(PATTERNS))], SIZES[rng.integers(len(SIZES))]
    bg = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    image = draw(shape, colour, pattern, size, bg, rng)
    template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]

    def pick(options: tuple[str, ...]) -> str:
        return options[rng.integers(len(options))]

    caption = template.format(size=pick(SIZE_WORDS[size]), colour=colour, shape=pick(SHAPE_WORDS[shape]),
                              pattern=pick(PATTERN_WORDS[pattern]), bg=bg)
    return image, caption


def labelled_image(seed: int, index: int) -> tuple[np.ndarray, int]:
    """Test image `index` of the zero-shot task: classes in turn, size/background/position random."""
    rng = _rng(seed, "test", index)
    label = index % len(CLASS_NAMES)
    shape, colour, pattern = KNOWLEDGE[CLASS_NAMES[label]]
    size, bg = SIZES[rng.integers(len(SIZES))], list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    return draw(shape, colour, pattern, size, bg, rng), label


def to_tensor(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(H, W, 3) uint8 -> normalised (3, H, W) float, as CLIP preprocessing does."""
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
