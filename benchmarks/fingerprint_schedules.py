"""gan_fingerprint: clean accuracy vs fingerprint strength of embedding schedules (an accuracy study, not a timing).

Replays the `gan_fingerprint` fit loop in-process on the demo population (trained into the cache if absent,
as the demo does) for named variants of the embedding schedule, and prints per variant the final C* accuracy
on the validation and test digits (C0: 98.9 / 99.3 %), r on the protected G, on its 30 % / 70 % pruned copies and
the largest r of the held-out independents, then the per-epoch history (epoch, val acc, test acc, r).
The LR schedule is torch's per-step cosine (the platform's timm cosine steps per epoch), so the numbers are
close to, not equal to, a train.py run.

Usage: python benchmarks/fingerprint_schedules.py base v1 finecopy ... [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.gan_fingerprint import PopulationConfig, default_cache_dir, digit_tensors  # noqa: E402
from lightning_modules.gan_fingerprint import attacks, fingerprints  # noqa: E402
from lightning_modules.gan_fingerprint.classifier import (  # noqa: E402
    DigitClassifier,
    accuracy,
    init_fine_head,
    random_shift,
)
from lightning_modules.gan_fingerprint.population import build_population  # noqa: E402

SURROGATES = ("p20", "p35", "p50", "n05", "ft")
VARIANTS = {  # overrides of run()'s defaults = the demo config (lr 3e-4, 25 epochs, l_fp = l_sur = 0.5, others 1)
    "base": {},
    "v1": {"v2": False},
    "lr1e-3_ep10": {"lr": 1e-3, "epochs": 10},
    "finecopy": {"finecopy": True},
    "finecopy_wu2": {"finecopy": True, "warmup": 2},
    "clean2": {"clean_w": 2.0},
    "nop50": {"sur": ("p20", "p35", "n05", "ft")},
    "light": {"sur": ("p20", "p35", "n05", "ft"), "lfine": 0.5, "ltri": 0.5},
    # "light" + distillation from C0 on the clean batch (learning without forgetting, T = 2)
    "light_kd1": {"sur": ("p20", "p35", "n05", "ft"), "lfine": 0.5, "ltri": 0.5, "distill": 1.0},
    "light_kd3": {"sur": ("p20", "p35", "n05", "ft"), "lfine": 0.5, "ltri": 0.5, "distill": 3.0},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--cache", default=str(default_cache_dir()))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = digit_tensors(0)
    pop = build_population(PopulationConfig(width=32, iterations=1500, other_width=16), data["train"], Path(args.cache))
    g, c0 = pop.protected, pop.classifier.eval()
    x, y = fingerprints.ibd_fingerprints(g, c0, "demo-key-not-secret", 100, 32, 10)
    tx, ty = data["train"]
    with torch.no_grad():
        fp = g(x)
        natural, _ = fingerprints.natural_labels(c0, fp)
        refs = torch.cat([r(x) for r in pop.references.values()])
        ref_labels, _ = fingerprints.natural_labels(c0, refs)
        copies = {
            "p20": attacks.magnitude_pruned(g, 0.2),
            "p35": attacks.magnitude_pruned(g, 0.35),
            "p50": attacks.magnitude_pruned(g, 0.5),
            "n05": attacks.weight_noise(g, 0.05, 0),
            "ft": attacks.fine_tuned(g, tx, 901, 100, 1e-4),
        }
        surrogate = {k: c(x) for k, c in copies.items()}
        probes = {"p30": attacks.magnitude_pruned(g, 0.3)(x), "p70": attacks.magnitude_pruned(g, 0.7)(x)}
        independents = [ind(x) for ind in pop.independents.values()]
    print(f"C0: val {accuracy(c0, *data['val']):.4f} test {accuracy(c0, *data['test']):.4f}")

    def rate(c: DigitClassifier, images: torch.Tensor) -> float:
        with torch.no_grad():
            return float((c(images).argmax(1) == y).float().mean())

    def run(
        lr=3e-4,
        epochs=25,
        bs=64,
        lfp=0.5,
        lsur=0.5,
        lneg=1.0,
        ltri=1.0,
        lfine=1.0,
        sur=SURROGATES,
        v2=True,
        clean_w=1.0,
        finecopy=False,
        warmup=0,
        distill=0.0,
    ) -> dict:
        torch.manual_seed(0)
        c = DigitClassifier(10, 64, 256, fine_classes=20 if v2 else 0)
        c.load_state_dict(c0.state_dict(), strict=False)
        if finecopy and v2:
            init_fine_head(c)
        fixed = fingerprints.EmbeddingBatch(
            fp, y, natural, refs, ref_labels, torch.cat([surrogate[k] for k in sur]) if v2 else None
        )
        opt = torch.optim.Adam(c.parameters(), lr)
        steps = len(tx) // bs
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, (epochs - warmup) * steps)
        sched = (
            cosine
            if not warmup
            else torch.optim.lr_scheduler.SequentialLR(
                opt, [torch.optim.lr_scheduler.LinearLR(opt, 0.01, 1.0, warmup * steps), cosine], [warmup * steps]
            )
        )
        rng = torch.Generator().manual_seed(0)
        weights = fingerprints.LossWeights(lfp, lneg, lsur, ltri, lfine, 1.0, distill)
        history, start = [], time.time()
        for epoch in range(epochs):
            c.train()
            order = torch.randperm(len(tx), generator=rng)
            for s in range(steps):
                i = order[s * bs : (s + 1) * bs]
                terms = fingerprints.embedding_loss(
                    c, random_shift(tx[i], rng), ty[i], fixed, weights, fingerprints.AugmentSettings(), rng, v2, c0
                )
                terms["clean"] = clean_w * terms["clean"]
                opt.zero_grad()
                sum(terms.values()).backward()
                opt.step()
                sched.step()
            c.eval()
            history.append(
                (
                    epoch,
                    round(accuracy(c, *data["val"]), 3),
                    round(accuracy(c, *data["test"]), 3),
                    round(rate(c, fp), 2),
                )
            )
        return {
            "val": history[-1][1],
            "test": history[-1][2],
            "r": rate(c, fp),
            **{k: rate(c, v) for k, v in probes.items()},
            "max_r_independent": max(rate(c, v) for v in independents),
            "seconds": round(time.time() - start),
            "history": history,
        }

    for name in args.variants:
        result = run(**VARIANTS[name])
        history = result.pop("history")
        print(json.dumps({"variant": name, **result}), flush=True)
        print("  (epoch, val, test, r):", history, flush=True)


if __name__ == "__main__":
    main()
