"""fade: post-training quantization of encoder-decoder speech recognition models.

Layer-wise PTQ (RTN, GPTQ) with quantization error propagation (QEP) and FADE's per-layer
compensation coefficients, for Whisper, Moonshine and Qwen3-ASR.
"""

__version__ = "0.1.0"
