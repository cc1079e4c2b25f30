"""A random-weight mask decoder file in vae-oid.npz's exact layout: the same 49 names, shapes and dtype.

np.savez of these arrays is 8,479,556 bytes, the official file's size to the byte; that is how the encoder's unused
shapes were pinned down (Conv 4x4 down 1->16->32->64->128; with 3x3 kernels the file would be 301,504 bytes short).
The weights are scaled like PyTorch's default init (uniform, 1/sqrt(fan_in)) with a gain, so the decoded logits
have both signs and the masks have edges to compare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlm_core.model.vqvae import decoder_shapes, unused_shapes


def random_vae_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in {**unused_shapes(), **decoder_shapes()}.items():
        if name == "_vq_vae._embedding" or name == "_vq_vae._ema_w":
            arrays[name] = rng.normal(0, 1, shape).astype(np.float32)
            continue
        if name == "_vq_vae._ema_cluster_size":
            arrays[name] = rng.uniform(0, 100, shape).astype(np.float32)
            continue
        fan_in = int(np.prod(shape[1:])) if name.endswith(".weight") else 128
        if name.endswith(".weight") and name.startswith(("decoder.4.", "decoder.6.", "decoder.8.", "decoder.10.")):
            fan_in = shape[0] * shape[2] * shape[3] // 4  # transposed conv: in_channels x taps that reach a pixel
        bound = 1.7 / np.sqrt(fan_in)
        arrays[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    # The last layer sums ReLU features (all >= 0): zero-mean weights and no bias balance the sign, so masks have
    # shapes instead of filling or missing the whole box.
    arrays["decoder.12.weight"] -= arrays["decoder.12.weight"].mean()
    arrays["decoder.12.bias"][:] = 0
    return arrays


def write_random_vae(path: Path, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **random_vae_arrays(seed))
    return path
