"""Face of Populism (arXiv 2304.09914): statistics over per-frame `fer` emotion scores of political leaders."""
