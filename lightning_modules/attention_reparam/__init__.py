"""Attention modules and their structural re-parameterization (ASR, arXiv 2304.06345), shared by asr and rdnet."""
