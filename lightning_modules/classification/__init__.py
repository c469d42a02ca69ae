"""Shared by the image classifiers (rdnet, asr, loraprune_vit): objective, metrics, prediction grids, top-k predict."""
