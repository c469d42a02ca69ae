"""Read back what a run left in its offline W&B run, as the dashboard will show it after `wandb sync`.

wandb 0.31 no longer ships a Python reader for `run-<id>.wandb`: the file is a LevelDB-style log
(32 KiB blocks of CRC-checked chunks) of `wandb_internal_pb2.Record` protobufs, so this module walks
the log and decodes each record with wandb's own protobuf definitions.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

_BLOCK = 32768
_FILE_HEADER = 7  # b":W&B", magic 0xBEE1, version
_CHUNK_HEADER = struct.Struct("<IHB")  # crc32c-masked, length, kind
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def offline_run(run_dir: Path) -> Path:
    (run,) = (run_dir / "wandb").glob("offline-run-*")
    return run


def _records(log: Path) -> Iterator[bytes]:
    data = log.read_bytes()
    assert data[:4] == b":W&B", f"{log} is not a W&B transaction log"
    pos, pending = _FILE_HEADER, b""
    while pos + _CHUNK_HEADER.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER.size:  # a block's tail too short for a header is padding
            pos += left_in_block
            continue
        _, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        if kind == 0:  # zero padding up to the end of the block
            pos += left_in_block
            continue
        chunk = data[pos + _CHUNK_HEADER.size: pos + _CHUNK_HEADER.size + length]
        pos += _CHUNK_HEADER.size + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk


def history(run_dir: Path) -> list[dict[str, object]]:
    """Every `wandb.log` row of the run, nested keys joined by '/' as the dashboard names panels."""
    from wandb.proto import wandb_internal_pb2

    (log,) = offline_run(run_dir).glob("run-*.wandb")
    rows = []
    for raw in _records(log):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item})
    return rows


def custom_charts(run_dir: Path) -> dict[str, str]:
    """The run's custom charts (`wandb.plot.*`): chart panel name -> the key of the table it draws.

    A chart is not a history value: `wandb.log({k: wandb.plot.line(...)})` logs the table as
    '<k>_table' and registers the panel '<k>' in the run config under `_wandb.visualize`.
    """
    from wandb.proto import wandb_internal_pb2

    (log,) = offline_run(run_dir).glob("run-*.wandb")
    charts = {}
    for raw in _records(log):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "config":
            continue
        for item in record.config.update:
            if list(item.nested_key[:2]) == ["_wandb", "visualize"] and len(item.nested_key) == 3:
                (query,) = json.loads(item.value_json)["panel_config"]["userQuery"]["queryFields"]
                table_key = next(arg["value"] for field in query["fields"] if field["name"] == "summaryTable"
                                 for arg in field["args"] if arg["name"] == "tableKey")
                charts[item.nested_key[2]] = table_key
    return charts


def panels(run_dir: Path) -> set[str]:
    """The panel names of the run: scalar keys, media (images, tables) by their logged key, custom charts."""
    keys = {key for row in history(run_dir) for key in row}
    # A media value is flattened into '<panel>/_type', '<panel>/path', ...: it is one panel.
    media = {key.removesuffix("/_type") for key in keys if key.endswith("/_type")}
    scalars = {key for key in keys if not key.startswith("_") and not any(key.startswith(m + "/") for m in media)}
    # A chart shows on the dashboard only if the table it draws was logged.
    charts = {name for name, table in custom_charts(run_dir).items() if table in media}
    return media | scalars | charts


def logged_images(run_dir: Path) -> list[Path]:
    return sorted((offline_run(run_dir) / "files" / "media" / "images").rglob("*.png"))


def image_pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def readme_dashboards(readme: Path) -> dict[str, list[str]]:
    """The README's "Dashboards" table: method -> the panel keys it promises (backticked; `prefix*` allowed)."""
    text = readme.read_text()
    section = text[text.index("\n### Dashboards\n"):]
    section = section[: section.find("\n#", 1)]
    table = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            table[cells[0].split("`")[1]] = cells[1].split("`")[1::2]
    return table


def missing_panels(promised: list[str], logged: set[str]) -> list[str]:
    """Promised panels absent from the run; a trailing `*` asks for at least one key with that prefix."""
    return [key for key in promised
            if not (any(name.startswith(key[:-1]) for name in logged) if key.endswith("*") else key in logged)]
