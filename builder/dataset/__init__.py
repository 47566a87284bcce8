"""Shaping the training set from the kept results: close-ups and loss masks (README, dataset)."""
