"""Causal-LM text: HF `datasets` (hub names such as WikiText-2 / PTB / C4, or local text/json/parquet
files) or the bundled grammar corpus, tokenised once in `prepare_data` and cut into fixed windows.

Every split is the documents joined with blank lines, tokenised, and chopped into non-overlapping
windows: `context_length` tokens for training, `eval_context_length` for evaluation, the standard
fixed-context perplexity protocol (LLM-Pruner / LoRAPrune's `inference.py`: WikiText-2 test, PTB
validation, window 128). The token tensors are cached under `cache_dir`, keyed by everything that
changes them, so DDP ranks and later runs read them instead of tokenising again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.grammar_text import CORPUS_VERSION, grammar_text
from datamodules.split_loaders import SplitDataModule
from tenfold.errors import DataError
from tenfold.method import ExportMeta

GRAMMAR = "grammar"  # the bundled generated corpus
LOCAL_BUILDERS = ("text", "json", "parquet")


@dataclass
class CausalLMDataConfig:
    # "grammar" (bundled), a hub dataset name (wikitext, ptb_text_only, allenai/c4), or text/json/parquet
    # for local files given in data.files
    source: str | None = None
    hf_config: str | None = None  # e.g. wikitext-2-raw-v1
    files: dict[str, list[str]] = field(default_factory=dict)  # local builders: split name -> file paths
    text_column: str = "text"
    train_split: str = "train"
    val_split: str = "validation"
    test_split: str = "test"
    max_train_documents: int | None = None  # C4 is large: take the first N documents
    grammar_sentences: dict[str, int] = field(
        default_factory=lambda: {"train": 8000, "validation": 600, "test": 600}
    )
    # A local directory with the tokenizer files (the base model's); None: byte-level. Not called
    # "tokenizer": the platform redacts config keys containing "token" from checkpoints and W&B.
    vocabulary: str | None = None
    context_length: int = 256  # training window (the official cutoff_len)
    eval_context_length: int = 128  # perplexity window
    batch_size_per_device: int = 4
    eval_batch_size_per_device: int | None = None
    num_workers: int = 0
    cache_dir: str | None = None  # default: $XDG_CACHE_HOME/tenfold/causal_lm
    offline: bool = True  # never reach the HF hub unless asked (sets HF_HUB_OFFLINE)


def byte_tokenizer():
    """A byte-level tokenizer (256 bytes + <eos>, <pad>) that needs no training and no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>")


def load_tokenizer(path: str | None):
    if path is None:
        return byte_tokenizer()
    from transformers import AutoTokenizer

    if not Path(path, "tokenizer_config.json").is_file() and not Path(path, "tokenizer.json").is_file():
        raise DataError(f"data.vocabulary={path} holds no tokenizer files: point it at the base model's directory")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _blank(path: Path) -> bool:
    """An empty file, or a small one holding only whitespace (a large file is read only by the tokeniser)."""
    size = path.stat().st_size
    return size == 0 or (size < 1 << 20 and not path.read_bytes().strip())


class TokenWindows(Dataset):
    """Non-overlapping windows of a token stream; items are (input_ids, labels), labels = input_ids
    (the model shifts them)."""

    def __init__(self, tokens: Tensor, window: int) -> None:
        n = len(tokens) // window
        if n == 0:
            raise DataError(f"a split has {len(tokens)} tokens, fewer than one window of {window}")
        self.windows = tokens[: n * window].view(n, window)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.windows[index], self.windows[index]


class CausalLMDataModule(SplitDataModule):
    def __init__(self, cfg: CausalLMDataConfig) -> None:
        super().__init__(cfg)
        if cfg.offline:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        self._tokenizer = None

    # ---- what the rest of the platform asks of a datamodule

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.vocabulary)
        return self._tokenizer

    def module_kwargs(self) -> dict:
        return {"vocabulary": self.cfg.vocabulary}

    def check(self) -> None:
        """Fail at once on an absent source or files, before the (large) model is built."""
        cfg = self.cfg
        if cfg.source is None:
            raise DataError("set data.source: a hub dataset name (e.g. wikitext with data.hf_config="
                            "wikitext-2-raw-v1), text/json/parquet with data.files, or grammar (the bundled corpus)")
        if cfg.source in LOCAL_BUILDERS:
            for split in (cfg.train_split, cfg.val_split, cfg.test_split):
                paths = cfg.files.get(split)
                if not paths:
                    raise DataError(f"data.source={cfg.source} needs data.files.{split}: a list of local "
                                    f"{cfg.source} files for the '{split}' split")
                for path in paths:
                    if not Path(path).is_file():
                        raise DataError(f"data.files.{split}: file not found: {path}")
                    if _blank(Path(path)):
                        raise DataError(f"data.files.{split}: {path} is empty: a text corpus needs text")
        _ = self.tokenizer

    def export_meta(self) -> ExportMeta:
        return ExportMeta(extra={"vocabulary": self.cfg.vocabulary or "byte-level",
                                 "context_length": self.cfg.context_length})

    # ---- Lightning hooks

    def prepare_data(self) -> None:
        for split, window in self._splits().items():
            path = self._cache_path(split, window)
            if not path.is_file():
                tokens = self._tokenize(self._read_text(split))
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
                torch.save(tokens, tmp)
                os.replace(tmp, path)

    def setup(self, stage: str) -> None:
        self.prepare_data()  # a no-op when cached; makes setup usable outside a Trainer (tests, benchmarks)
        cfg = self.cfg
        load = self._load_tokens
        if stage == "fit":
            self.train_set = TokenWindows(load(cfg.train_split), cfg.context_length)
        if stage in ("fit", "validate"):
            self.val_set = TokenWindows(load(cfg.val_split), cfg.eval_context_length)
        if stage == "test":
            self.test_set = TokenWindows(load(cfg.test_split), cfg.eval_context_length)

    # ---- internals

    def _splits(self) -> dict[str, int]:
        cfg = self.cfg
        return {cfg.train_split: cfg.context_length, cfg.val_split: cfg.eval_context_length,
                cfg.test_split: cfg.eval_context_length}

    def _cache_path(self, split: str, window: int) -> Path:
        cfg = self.cfg
        key = {k: v for k, v in asdict(cfg).items() if k not in ("batch_size_per_device", "eval_batch_size_per_device",
                                                                  "num_workers", "cache_dir", "offline")}
        digest = hashlib.sha1(json.dumps([key, split, CORPUS_VERSION], sort_keys=True).encode()).hexdigest()[:12]
        root = Path(cfg.cache_dir) if cfg.cache_dir else Path(
            os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tenfold" / "causal_lm"
        return root / f"{split}-{digest}.pt"

    def _load_tokens(self, split: str) -> Tensor:
        return torch.load(self._cache_path(split, self._splits()[split]), weights_only=True)

    def _tokenize(self, text: str) -> Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def _read_text(self, split: str) -> str:
        cfg = self.cfg
        if cfg.source == GRAMMAR:
            role = {cfg.train_split: "train", cfg.val_split: "validation", cfg.test_split: "test"}[split]
            return grammar_text(role, cfg.grammar_sentences[role])
        import datasets

        try:
            if cfg.source in LOCAL_BUILDERS:
                data = datasets.load_dataset(cfg.source, data_files={split: cfg.files[split]}, split=split)
            else:
                data = datasets.load_dataset(cfg.source, cfg.hf_config, split=split)
        except (FileNotFoundError, ValueError, ConnectionError) as exc:
            raise DataError(
                f"cannot load split '{split}' of data.source={cfg.source} (data.hf_config={cfg.hf_config}): "
                f"{str(exc).splitlines()[0]}. Point data.source at a cached hub dataset (data.offline=false to "
                "download it) or use data.source=text|json|parquet with data.files"
            ) from None
        if cfg.text_column not in data.column_names:
            raise DataError(f"data.text_column={cfg.text_column} is not a column of {cfg.source}; "
                            f"columns: {data.column_names}")
        if split == cfg.train_split and cfg.max_train_documents:
            data = data.select(range(min(cfg.max_train_documents, len(data))))
        return "\n\n".join(data[cfg.text_column])
