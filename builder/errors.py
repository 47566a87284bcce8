"""Errors meant for the user: the CLI prints their message without a traceback."""

from __future__ import annotations


class BuilderError(Exception):
    """A failure the user can act on; the message names the file and the reason."""


class ConfigError(BuilderError):
    """The configuration (TOML file or command-line override) is invalid."""


class MissingWeightError(BuilderError):
    """A model file is not in the cache and could not be fetched."""


class CheckpointError(BuilderError):
    """A checkpoint file does not match the architecture it is loaded into."""


class ImageError(BuilderError):
    """An image file cannot be used; the message names the file and why."""
