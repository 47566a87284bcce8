"""How the kept results become the training set: pose balance, the validation split, regularisation images."""
