"""Faces: detection, landmarks, identity embeddings, and the alignment geometry."""
