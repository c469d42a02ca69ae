"""RDNet: DenseNets Reloaded (arXiv 2403.19588)."""
