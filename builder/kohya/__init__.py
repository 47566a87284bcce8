"""Everything kohya sd-scripts reads: the folder layout, the dataset and training TOMLs."""
