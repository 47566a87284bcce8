"""Network architectures (written here, parameter names matching the official checkpoints) and their loaders."""
