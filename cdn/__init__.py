"""cdn: a companion to "Classification-Denoising Networks" (Thiry & Guth, 2024).

One network ``f(y) -> logits`` models ``log p(y, c)``: its forward pass classifies, the gradient
of its log-sum-exp denoises (Tweedie-Miyasawa). See ``cdn.joint`` first.
"""
from .joint import JointModel
from .profiles import Config, get_config

__version__ = "0.1.0"
__all__ = ["JointModel", "Config", "get_config", "__version__"]
