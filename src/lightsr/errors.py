"""Exceptions that name the problem and the fix.

Every error a user can cause by bad input derives from :class:`LightSRError`, which is a
``ValueError`` so that generic callers still catch it.
"""

from __future__ import annotations


class LightSRError(ValueError):
    """Base class for user-facing errors."""


class UnknownModelError(LightSRError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnsupportedScaleError(LightSRError):
    """A scale factor the model does not support."""


class InputSizeError(LightSRError):
    """An input image that is too small, or of the wrong shape, for a model."""


class CheckpointError(LightSRError):
    """A file that is not a checkpoint, is corrupt, or belongs to another model or scale."""


class ImageReadError(LightSRError):
    """A file that is not a readable image."""


class ConfigError(LightSRError):
    """An unknown or ill-typed configuration key."""


class DatasetError(LightSRError):
    """A dataset folder without images, with unmatched HR/LR pairs or LR of the wrong size."""


class DivergedError(LightSRError):
    """Non-finite numbers (NaN/Inf) where a model must have finite ones: the loss or weights of
    a training run that diverged, or the output of a model (damaged weights) at inference."""


class OutputExistsError(LightSRError):
    """An output file that exists: lightsr replaces a file only when told to (``--overwrite``,
    ``overwrite=True``)."""


class OutputPathError(LightSRError):
    """An output path that would destroy an input: the input file itself, or a folder that
    holds (or is inside) the data being read."""


class FolderInUseError(LightSRError):
    """A folder locked by another running process (a training run folder)."""
