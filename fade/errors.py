"""Errors fade raises for bad input. Each message names the offending value and the fix."""


class FadeError(Exception):
    """Base class: a problem with the user's input or environment, not a bug in fade."""


class ConfigError(FadeError, ValueError):
    """A configuration value that fade cannot use."""


class DataError(FadeError, ValueError):
    """A dataset, manifest or audio file that cannot be read or is empty."""


class ModelSourceError(FadeError, ValueError):
    """A model name or source that cannot be resolved or loaded."""


class QuantizationError(FadeError, ValueError):
    """A quantization setting that does not fit a layer (bits, group size, patterns)."""
