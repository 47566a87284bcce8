"""Shaping the training set from the kept results: close-ups, loss masks, pose balance, the validation
split, regularisation images (README, dataset)."""
