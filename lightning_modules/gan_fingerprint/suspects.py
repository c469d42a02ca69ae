"""The suspect population verification runs over: derived models (the protected G, its attacked copies)
and innocent ones (reference and held-out independent generators) [R: digest sections 5 and 12]."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lightning_modules.gan_fingerprint.attacks import OutputPerturbation, PerturbedGenerator, magnitude_pruned
from lightning_modules.gan_fingerprint.config import AttackConfig
from lightning_modules.gan_fingerprint.population import Population
from lightning_modules.gan_fingerprint.task import Task

DERIVED = ("protected", "prune", "finetune", "perturb")  # positives of the ROC
INNOCENT = ("independent",)  # negatives of the ROC, and the p0 estimate (references are reported apart)


@dataclass(frozen=True)
class Suspect:
    name: str
    group: str  # protected | prune | finetune | perturb | reference | independent
    param: float = 0.0  # pruning amount, fine-tuning seed, perturbation strength
    kind: str | None = None  # the output perturbation


def suspect_list(attack: AttackConfig, population: Population) -> list[Suspect]:
    out = [Suspect("protected", "protected")]
    out += [Suspect(f"prune_{round(a * 100)}", "prune", a) for a in attack.prune]
    out += [Suspect(f"finetune_s{s}", "finetune", s) for s in attack.finetune_seeds]
    for kind, strengths in (
        (OutputPerturbation.noise, attack.noise),
        (OutputPerturbation.blur, attack.blur),
        (OutputPerturbation.jpeg, attack.jpeg),
        (OutputPerturbation.quantise, attack.quantise),
    ):
        out += [Suspect(f"{kind.value}_{v:g}", "perturb", float(v), kind.value) for v in strengths]
    out += [Suspect(name, "reference") for name in population.references]
    out += [Suspect(name, "independent") for name in population.independents]
    return out


def build_suspect(s: Suspect, population: Population, attack: AttackConfig, task: Task) -> nn.Module:
    g = population.protected
    if s.group == "protected":
        return g
    if s.group == "prune":
        return magnitude_pruned(g, s.param)
    if s.group == "finetune":
        return task.fine_tune(g, int(s.param), attack.finetune_iterations, attack.finetune_lr)
    if s.group == "perturb":
        return PerturbedGenerator(g, OutputPerturbation(s.kind), s.param, seed=0)
    if s.group == "reference":
        return population.references[s.name]
    return population.independents[s.name]
