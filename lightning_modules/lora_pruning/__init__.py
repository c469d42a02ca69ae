"""The LoRAPrune algorithm (arXiv 2305.18403), shared by loraprune (LMs) and loraprune_vit: LoRA-guided importance,
dependency-aware groups, masks, the cubic schedule and the pruning callback."""
