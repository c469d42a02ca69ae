"""The dataloaders every split-based DataModule shares: train/val/test sets, one batch knob per device."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

from torch.utils.data import DataLoader, Dataset

from tenfold.method import MethodDataModule


class SplitDataModule(MethodDataModule):
    """Serves `self.train_set`, `self.val_set` and `self.test_set` (built by the subclass's `setup`).

    `self.cfg` needs `batch_size_per_device`, `eval_batch_size_per_device` (None: the training batch) and
    `num_workers`. Under DDP, Lightning adds the DistributedSampler to these loaders.
    """

    train_set: Dataset
    val_set: Dataset
    test_set: Dataset

    def export_sample(self, n: int) -> Any:
        """The inputs of the first `n` validation items (the first element of each item), as one batch."""
        self.setup("validate")
        batch = next(iter(DataLoader(self.val_set, batch_size=n)))
        return batch[0]

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.cfg.batch_size_per_device, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self._eval_batch(), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self._eval_batch(), train=False)

    def _eval_batch(self) -> int:
        return self.cfg.eval_batch_size_per_device or self.cfg.batch_size_per_device

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        workers = self.cfg.num_workers
        # drop_last only when a full batch exists: a tiny split must still give one (smaller) batch.
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train and len(dataset) >= batch_size,
                          num_workers=workers, persistent_workers=workers > 0)


class ClassifiedSplitDataModule(SplitDataModule):
    """A split datamodule whose items are labelled with named classes; the module is built with the names.

    The subclass reads them in `_read_class_names` (cheap: a directory listing or the dataset features).
    """

    _read_class_names: Callable[[], list[str]]

    @cached_property
    def class_names(self) -> list[str]:
        return self._read_class_names()

    def module_kwargs(self) -> dict:
        """What the LightningModule is built with besides the config."""
        return {"class_names": self.class_names}
