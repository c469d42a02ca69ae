"""ASR: Attention-alike Structural Re-parameterization (arXiv 2304.06345, ECCV 2024)."""
