"""The model summary printed at the start of fit, without a FLOPs column that was never measured.

Lightning counts FLOPs only while it runs the module's `example_input_array`; a module without one
(a lens, a GAN pair, a method whose input is not one tensor) gets a FLOPs column and a total of 0, which
reads as a measurement. Where there is an example input the table is Lightning's own, FLOPs included.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table


class MeasuredModelSummary(ModelSummary):
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._max_depth or not trainer.is_global_zero:
            return
        summary = self._summary(trainer, pl_module)
        columns = summary._get_summary_data()
        measured = pl_module.example_input_array is not None
        if not measured:
            columns = [column for column in columns if column[0] != "FLOPs"]
        table = _format_summary_table(summary.total_parameters, summary.trainable_parameters, summary.model_size,
                                      summary.total_training_modes, summary.total_flops, *columns)
        if not measured:
            table = table.rsplit("\n", 1)[0]  # the "Total Flops" line
        rank_zero_info("\n" + table)


def summary_callbacks(enable_model_summary: Any) -> list[L.Callback]:
    return [] if enable_model_summary is False else [MeasuredModelSummary()]
