"""The model math: configs, the SigLIP vision tower, the Gemma decoders (one module per family) and PaliGemma.

Pure `nn.Module`s: no file I/O, no sampling loop, no device policy.
"""
