"""A procedurally generated English-like corpus: the bundled text for the LoRAPrune LM demo.

No text can be downloaded here, so the demo language model learns a small probabilistic grammar with
structure a transformer must use attention and FFN capacity for: a fixed random lexicon of facts
("the red fox lives in the north forest" is always the same animal and place), subject-verb agreement
over an intervening clause, counting, and copy-back questions. Generation is seeded, so every process and
every run sees the same text.
"""

from __future__ import annotations

import random
from functools import lru_cache

COLOURS = ["red", "blue", "green", "grey", "white", "black", "brown", "yellow"]
ANIMALS = ["fox", "owl", "bear", "wolf", "hare", "crow", "deer", "frog", "lynx", "mole", "seal", "swan"]
PLACES = ["north forest", "old river", "high hills", "dark cave", "south lake", "green valley", "stone bridge"]
FOODS = ["berries", "fish", "seeds", "roots", "honey", "beetles", "apples"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VERBS = {"sings": "sing", "runs": "run", "sleeps": "sleep", "hides": "hide", "waits": "wait"}
ADVERBS = ["at night", "in the morning", "all day", "in winter", "after the rain"]
CORPUS_VERSION = 1  # part of the token cache key: bump when the grammar changes
SPLIT_SEEDS = {"train": 1, "validation": 2, "test": 3}


def _lexicon() -> dict[str, tuple[str, str, str]]:
    """Each animal's fixed colour, home and food (the 'facts' of the world)."""
    rng = random.Random(0)
    return {a: (rng.choice(COLOURS), rng.choice(PLACES), rng.choice(FOODS)) for a in ANIMALS}


def _sentence(rng: random.Random, facts: dict[str, tuple[str, str, str]]) -> str:
    animal = rng.choice(ANIMALS)
    colour, place, food = facts[animal]
    kind = rng.randrange(6)
    if kind == 0:
        return f"the {colour} {animal} lives in the {place}."
    if kind == 1:
        return f"the {animal} eats {food} {rng.choice(ADVERBS)}."
    if kind == 2:  # agreement across a relative clause
        verb = rng.choice(list(VERBS))
        other = rng.choice(ANIMALS)
        if rng.random() < 0.5:
            return f"the {animal} that sees the {other}s {verb} {rng.choice(ADVERBS)}."
        return f"the {animal}s that see the {other} {VERBS[verb]} {rng.choice(ADVERBS)}."
    if kind == 3:  # counting
        a, b = rng.randrange(5), rng.randrange(5)
        return f"{NUMBERS[a]} {animal}s and {NUMBERS[b]} {animal}s make {NUMBERS[a + b]} {animal}s."
    if kind == 4:  # question answered from the lexicon
        return f"where does the {animal} live? in the {place}."
    return f"what colour is the {animal}? the {animal} is {colour}."


@lru_cache(maxsize=4)
def grammar_text(split: str, n_sentences: int) -> str:
    """`n_sentences` sentences of the split, grouped into paragraphs of 4-8 sentences."""
    rng, facts = random.Random(SPLIT_SEEDS[split]), _lexicon()
    paragraphs, left = [], n_sentences
    while left > 0:
        size = min(left, rng.randint(4, 8))
        paragraphs.append(" ".join(_sentence(rng, facts) for _ in range(size)))
        left -= size
    return "\n\n".join(paragraphs)
