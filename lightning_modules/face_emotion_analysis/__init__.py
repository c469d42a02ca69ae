"""Face of Populism (arXiv 2304.09914): the paper's statistics over per-frame emotion scores."""
