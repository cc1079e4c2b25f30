"""PaliGemma's mask decoder: 16 `<segNNN>` codes -> a 64x64 mask logit, the VQ-VAE decoder of big_vision.

Axes: B objects, C channels, H/W height/width. PaliGemma writes a mask as 16 indices into a 128-entry codebook of
512-d vectors; big_vision (evaluators/proj/paligemma/transfers/segmentation.py) looks them up, lays them out as a
4x4 grid row-major (code i at row i // 4, column i % 4), and runs a small conv decoder up to 64x64. Its output has no
activation; it is nominally in [-1, 1] and the mask is where it is > 0 (see runtime/masks.py for placing it).

The weights are `vae-oid.npz` (Google, trained on Open Images), a PyTorch state dict saved as 49 float32 arrays:
the decoder, the codebook, and the encoder and EMA statistics that only encoding (making training targets) needs.
This module names its parameters exactly as the file does, so loading is a strict key-for-key copy; the unused
arrays are listed on purpose below and still shape-checked. It runs in float32 on the CPU: the whole decoder is 1.1 M
parameters, and a batch of objects takes milliseconds, so there is nothing to gain from an accelerator.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError

NUM_CODES = 16  # codes per object, a 4x4 grid
CODEBOOK_SIZE = 128
CODE_DIM = 512
MASK_SIZE = 64


class ResBlock(nn.Module):
    """x + net(x); no ReLU after the add (big_vision's ResBlock)."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class _Codebook(nn.Module):
    def __init__(self):
        super().__init__()
        self._embedding = nn.Parameter(torch.empty(CODEBOOK_SIZE, CODE_DIM))


def _upsample(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    # kernel 4, stride 2, padding 1 doubles H and W exactly (Flax: padding 2 with transpose_kernel=True)
    return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)


class MaskDecoder(nn.Module):
    """codes int[B, 16] in 0..127 -> float[B, 64, 64] mask logits (> 0 is inside)."""

    def __init__(self):
        super().__init__()
        self._vq_vae = _Codebook()
        # indices are the checkpoint's: decoder.N is layer N of the original nn.Sequential (ReLUs hold 1, 5, 7, ...)
        self.decoder = nn.Sequential(
            nn.Conv2d(CODE_DIM, 128, 1), nn.ReLU(),
            ResBlock(128), ResBlock(128),
            _upsample(128, 128), nn.ReLU(),  # 4 -> 8
            _upsample(128, 64), nn.ReLU(),  # 8 -> 16
            _upsample(64, 32), nn.ReLU(),  # 16 -> 32
            _upsample(32, 16), nn.ReLU(),  # 32 -> 64
            nn.Conv2d(16, 1, 1),
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        b = codes.shape[0]
        x = self._vq_vae._embedding[codes.reshape(-1)]  # [B*16, 512]
        x = x.reshape(b, 4, 4, CODE_DIM).permute(0, 3, 1, 2)  # row-major grid, NCHW
        return self.decoder(x)[:, 0]

    @torch.inference_mode()
    def decode(self, codes) -> np.ndarray:
        """codes: int[B, 16] (any array-like) -> float32[B, 64, 64] as numpy."""
        codes = torch.as_tensor(np.asarray(codes, dtype=np.int64)).reshape(-1, NUM_CODES)
        if codes.numel() and (codes.min() < 0 or codes.max() >= CODEBOOK_SIZE):
            raise ValueError(f"mask codes must be in 0..{CODEBOOK_SIZE - 1}")
        return self(codes).numpy()


def decoder_shapes() -> dict[str, tuple[int, ...]]:
    """Every array the decoder reads, by its name in the checkpoint."""
    with torch.device("meta"):
        return {name: tuple(p.shape) for name, p in MaskDecoder().state_dict().items()}


def unused_shapes() -> dict[str, tuple[int, ...]]:
    """Arrays in vae-oid.npz that decoding does not use: the encoder (Conv 4x4 stride 2 down 1->16->32->64->128,
    two ResBlocks, Conv 1x1 128->512, as big_vision's pp/proj/paligemma/segmentation.py runs it) and the VQ's
    exponential-moving-average training statistics. Checked when present, never loaded."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, c_in: int, c_out: int, k: int) -> None:
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c_out, c_in, k, k), (c_out,)

    for i, (c_in, c_out) in enumerate([(1, 16), (16, 32), (32, 64), (64, 128)]):
        conv(f"encoder.{2 * i}", c_in, c_out, 4)
    for block in ("encoder.8", "encoder.9"):
        conv(f"{block}.net.0", 128, 128, 3)
        conv(f"{block}.net.2", 128, 128, 3)
        conv(f"{block}.net.4", 128, 128, 1)
    conv("encoder.10", 128, CODE_DIM, 1)
    shapes["_vq_vae._ema_w"] = (CODEBOOK_SIZE, CODE_DIM)
    shapes["_vq_vae._ema_cluster_size"] = (CODEBOOK_SIZE,)
    return shapes


def load_mask_decoder(path: str | Path) -> MaskDecoder:
    """Read a vae-oid.npz-layout file strictly: every decoder array present with its shape, every other name a known
    unused one, nothing unknown. Only the layout is checked here, so fine-tuned or test decoders load too; the
    store's copy is also checked against the official SHA-256 by the weights layer (weights/vae.load_decoder)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"mask decoder file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise WeightsError(f"{path} is not a readable .npz file ({e}); expected the PaliGemma mask decoder (vae-oid.npz)") from None

    needed, unused = decoder_shapes(), unused_shapes()
    if unknown := sorted(set(arrays) - set(needed) - set(unused)):
        raise WeightsError(f"{path}: unexpected array {unknown[0]!r} ({len(unknown)} unknown in all); "
                           f"this is not a PaliGemma mask decoder (vae-oid.npz)")
    if missing := sorted(set(needed) - set(arrays)):
        raise WeightsError(f"{path}: missing array {missing[0]!r} ({len(missing)} missing in all); "
                           f"expected the PaliGemma mask decoder (vae-oid.npz)")
    for name, array in arrays.items():
        want = needed.get(name) or unused[name]
        if tuple(array.shape) != want:
            raise WeightsError(f"{path}: {name} has shape {tuple(array.shape)}, expected {want}")
        if not np.issubdtype(array.dtype, np.floating):
            raise WeightsError(f"{path}: {name} is {array.dtype}, expected float32")

    with torch.device("meta"):
        model = MaskDecoder()
    state = {name: torch.from_numpy(np.ascontiguousarray(arrays[name], dtype=np.float32)) for name in needed}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()
