"""critical_distill: critical-sample selection ("Distill Gold from Massive Ores", arXiv 2305.18381) + DM/DC/DSA/MTT."""
