"""LoRAPrune on a timm ViT (fused qkv heads, MLP channels)."""
