"""Errors a person can act on.

Every failure the engine expects (a bad file, a bad setting, no memory) is one of these, with a message that names
the file, key or field and says what to do. The CLI prints the message alone; the desktop app shows it in the window.
Anything else that escapes is a bug and keeps its traceback.
"""


class VlmError(Exception):
    """Base class: `str(err)` is a complete sentence for the user."""


class ConfigError(VlmError):
    """config.json is missing, malformed, or describes a model we do not implement."""


class WeightsError(VlmError):
    """A weight file is missing, truncated, or has missing, unexpected or misshaped tensors."""


class TokenizerError(VlmError):
    """tokenizer.model is missing or unreadable."""


class ImageError(VlmError):
    """The input is not an image we can read."""


class DeviceError(VlmError):
    """The requested device or dtype is unavailable, or the device ran out of memory."""


class ContextError(VlmError):
    """A request does not fit the model's context (image tokens + prompt + new tokens past its positions)."""
