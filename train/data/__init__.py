"""From feature stores to batches: sources, aligned views, standardization statistics, the windows of each level, torch datasets, synthetic stores. Knows nothing of runs, heads or loops."""
