"""vlm_core: a from-scratch PyTorch PaliGemma 2 that loads the Hub's checkpoints unchanged.

It knows nothing of Qt. The public surface is `Engine` (load, ask, stream), the config, and the errors.
"""

from .errors import ConfigError, DeviceError, ImageError, TokenizerError, VlmError, WeightsError

__all__ = ["ConfigError", "DeviceError", "ImageError", "TokenizerError", "VlmError", "WeightsError"]
__version__ = "0.1.0"
