"""Captioning (BLIP) and caption text rules."""
