"""MPVR's typed configs; the defaults are the paper's / official code's settings (digest §2, notes §1.2).

Names avoid the words the platform redacts from checkpoints (`token`, `key`, `secret`): the API's
`max_tokens` is `completion_length`, and the key's variable name is `llm.key_env`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from tenfold.config import (
    CheckpointConfig,
    ExperimentConfig,
    ExportConfig,
    JobConfig,
    LoggerKind,
    OptimConfig,
    TrainerConfig,
)


class LLMBackend(enum.Enum):
    openai_completions = "openai_completions"  # /v1/completions (gpt-3.5-turbo-instruct, as the paper)
    openai_chat = "openai_chat"  # /v1/chat/completions (chat models, most local servers)
    transformers = "transformers"  # a local causal LM directory (llm.local_path)


class CleanMode(enum.Enum):
    official = "official"  # text.replace("\n\n", "") + "." (the released banks)
    sentences = "sentences"  # strip, join lines, cut to the last full sentence, drop empty answers


class BankKind(enum.Enum):
    file = "file"  # a JSON bank ({class: [texts]} or {class: {query: [texts]}})
    templates = "templates"  # S-TEMP / DS-TEMP: templates filled with the class names
    generate = "generate"  # MPVR: stage 1 + stage 2 through the LLM (cached)


class TemplateSet(enum.Enum):
    s_temp = "s_temp"  # "a photo of a {}."
    imagenet80 = "imagenet80"  # CLIP's 80 ImageNet templates (official DS-TEMP for ImageNet and CIFAR-10)
    eurosat = "eurosat"
    dtd = "dtd"
    world = "world"  # the demo world's style templates


class DataSource(enum.Enum):
    world = "world"  # the procedural captioned world (CPU demo)
    coop = "coop"  # CoOp layout: <root>/split_zhou_<Dataset>.json + image_dir
    imagefolder = "imagefolder"  # an HF `imagefolder` directory (<root>/<split>/<class>/<image>)


class WeightsSource(enum.Enum):
    """Who trained `model.pretrained`: decides the activation (QuickGELU for OpenAI and MetaCLIP)."""

    openai = "openai"
    metaclip = "metaclip"
    laion = "laion"  # LAION / DataComp open_clip weights: nn.GELU
    none = "none"  # random init (trained in-project by the demo's fit stage)


@dataclass
class LLMConfig:
    backend: LLMBackend = LLMBackend.openai_completions
    model: str = "gpt-3.5-turbo-instruct"
    base_url: str | None = None  # any OpenAI-compatible endpoint, e.g. http://localhost:8000/v1
    key_env: str = "OPENAI_API_KEY"  # the *name* of the environment variable holding the key
    timeout_s: float = 60.0
    max_retries: int = 5  # the openai client's retries (exponential backoff + jitter on 408/409/429/5xx)
    concurrency: int = 8  # requests in flight at once
    requests_per_minute: float | None = None
    tpm_limit: float | None = None  # tokens per minute (prompt estimate + completion length x n)
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    n_fallback: bool = True  # a server that ignores n gets n single calls
    local_path: str | None = None  # llm.backend=transformers: a local model directory
    cache_dir: str | None = None  # None: $XDG_CACHE_HOME/tenfold/mpvr_llm (~/.cache/...)
    cache_only: bool = False  # any cache miss is an error (reproduce a run without the endpoint)
    serve_stub: bool = False  # start the loopback stub LLM (demo and tests only) and use it as base_url


@dataclass
class QueriesConfig:
    """Stage 1: the meta-prompt asks for `num_queries` query templates with a <class name> slot."""

    dataset_name: str = "EuroSAT"
    description: str = ("EuroSAT is a dataset of Sentinel-2 satellite images covering 13 spectral bands and "
                        "10 land use and land cover classes.")
    num_queries: int = 30
    temperature: float = 0.99  # not stated in the paper; stage 2's value
    completion_length: int = 1500
    min_queries: int = 1  # fewer parsed queries than this is an error


@dataclass
class DescriptionsConfig:
    """Stage 2: each query filled with each class name; n completions per (class, query)."""

    n: int = 10
    temperature: float = 0.99
    completion_length: int | None = None  # None: 50, or 40 for EuroSAT and Food101 (official scripts)
    clean: CleanMode = CleanMode.official


@dataclass
class GenerateConfig:
    queries: QueriesConfig = field(default_factory=QueriesConfig)
    descriptions: DescriptionsConfig = field(default_factory=DescriptionsConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)


@dataclass
class BankConfig:
    name: str = "mpvr"
    kind: BankKind = BankKind.generate
    path: str | None = None  # kind=file
    templates: TemplateSet | None = None  # kind=templates
    class_name_map: dict[str, str] = field(default_factory=dict)  # dataset class name -> bank class name


# CoOp's EuroSAT folder names -> the names the released banks (and CoOp's split file) use (`NEW_CNAMES`).
EUROSAT_FOLDER_NAMES = {
    "AnnualCrop": "Annual Crop Land", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "SeaLake": "Sea or Lake",
}


def paper_banks() -> list[BankConfig]:
    """EuroSAT: S-TEMP, DS-TEMP, the released GPT and Mixtral banks (bundled), and a fresh MPVR bank."""
    names = dict(EUROSAT_FOLDER_NAMES)
    return [
        BankConfig(name="s_temp", kind=BankKind.templates, templates=TemplateSet.s_temp),
        BankConfig(name="ds_temp", kind=BankKind.templates, templates=TemplateSet.eurosat),
        BankConfig(name="gpt_released", kind=BankKind.file, path="gpt/EuroSAT.json", class_name_map=dict(names)),
        BankConfig(name="mixtral_released", kind=BankKind.file, path="mixtral/EuroSAT.json",
                   class_name_map=dict(names)),
        BankConfig(name="mpvr", kind=BankKind.generate, class_name_map=dict(names)),
    ]


@dataclass
class EnsembleConfig:
    """Several banks' class vectors averaged and renormalised (the paper's best variant: GPT + Mixtral)."""

    name: str = "gpt_mixtral"
    members: list[str] = field(default_factory=lambda: ["gpt_released", "mixtral_released"])


@dataclass
class ClipConfig:
    arch: str = "ViT-B-32"  # open_clip architecture, or "custom" (built from `custom`)
    pretrained: str | None = None  # a local checkpoint file or an open_clip tag (needs it cached offline)
    weights: WeightsSource = WeightsSource.openai
    custom: dict[str, Any] = field(default_factory=dict)  # open_clip.CLIP kwargs when arch=custom
    logit_scale: float = 100.0  # test logits = scale * cos (the argmax does not depend on it)
    text_chunk: int = 256  # prompts per text-tower pass (1024 was slower on CPU: benchmarks/mpvr_classifier.py)


@dataclass
class MPVRDataConfig:
    source: DataSource = DataSource.coop
    root: str | None = None  # CoOp dataset folder or HF imagefolder directory
    dataset: str = "EuroSAT"  # CoOp dataset name: split_zhou_<dataset>.json
    image_dir: str = "2750"  # CoOp: images relative to root (EuroSAT: 2750, DTD: images)
    split: str = "test"
    image_size: int = 224
    batch_size_per_device: int = 128  # training pairs (world only)
    eval_batch_size_per_device: int | None = 256
    num_workers: int = 0
    # the demo world
    world_seed: int = 0
    train_size: int = 40000
    val_size: int = 512
    test_size: int = 270


@dataclass
class MPVRConfig(ExperimentConfig):
    """Zero-shot evaluation (the test stage) of CLIP with S-TEMP / DS-TEMP / MPVR banks.

    The fit stage is not MPVR: it is optional contrastive CLIP training on captioned pairs, used by the
    demo to make its tiny CLIP; with pretrained weights (the paper) it is skipped (0 train batches).
    """

    method: str = "mpvr"
    model: ClipConfig = field(default_factory=ClipConfig)
    data: MPVRDataConfig = field(default_factory=MPVRDataConfig)
    banks: list[BankConfig] = field(default_factory=paper_banks)
    ensembles: list[EnsembleConfig] = field(default_factory=lambda: [EnsembleConfig()])
    primary: str = "mpvr"  # the bank (or ensemble) forward() and export use; logged as test/top1
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)  # val/loss: contrastive, held out
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adamw", lr=1e-3, weight_decay=0.1,
                                                                   scheduler="cosine"))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        max_epochs=0, limit_train_batches=0, limit_val_batches=0, num_sanity_val_steps=0))
    export: ExportConfig = field(default_factory=lambda: ExportConfig(onnx=False))


# --------------------------------------------------------------------------------------------------
# The two stages as jobs


@dataclass
class QueriesJobConfig(JobConfig):
    """`method: mpvr_queries`: stage 1 -> <run dir>/queries.json (and `output` if set)."""

    method: str = "mpvr_queries"
    logger: LoggerKind = LoggerKind.csv
    queries: QueriesConfig = field(default_factory=QueriesConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    output: str | None = None


@dataclass
class DescriptionsJobConfig(JobConfig):
    """`method: mpvr_descriptions`: stage 2 over a queries file and class names -> a bank (both formats)."""

    method: str = "mpvr_descriptions"
    logger: LoggerKind = LoggerKind.csv
    queries_file: str | None = None  # a stage-1 queries.json; None: run stage 1 first (queries.*)
    class_names: list[str] = field(default_factory=list)
    class_names_file: str | None = None  # a text file, one class name per line
    queries: QueriesConfig = field(default_factory=QueriesConfig)
    descriptions: DescriptionsConfig = field(default_factory=DescriptionsConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    output: str | None = None  # also write the flat bank here
