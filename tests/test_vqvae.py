"""The mask decoder against Google's Flax decoder, on random weights in vae-oid.npz's exact layout.

The reference below is written from big_vision's module definitions
(big_vision/evaluators/proj/paligemma/transfers/segmentation.py: ResBlock, Decoder, _get_params,
_quantized_values_from_codebook_indices): NHWC, Flax kernels made from the PyTorch arrays by the same transpose, the
transposed convolutions with padding=2 and transpose_kernel=True. Both run in float32 on the CPU.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from vlm_core.errors import WeightsError
from vlm_core.model.vqvae import MaskDecoder, decoder_shapes, load_mask_decoder, unused_shapes
from vlm_core.weights.vae import OFFICIAL_SIZE, load_decoder, verify_official

from .vae_fixture import random_vae_arrays, write_random_vae

jax = pytest.importorskip("jax")
nn = pytest.importorskip("flax.linen")
jnp = jax.numpy


# -- the reference: big_vision's decoder ----------------------------------------------------------------------------
class ResBlock(nn.Module):  # class names are Flax scope names (ResBlock_0...): big_vision's
    features: int

    @nn.compact
    def __call__(self, x):
        original_x = x
        x = nn.Conv(features=self.features, kernel_size=(3, 3), padding=1)(x)
        x = nn.relu(x)
        x = nn.Conv(features=self.features, kernel_size=(3, 3), padding=1)(x)
        x = nn.relu(x)
        x = nn.Conv(features=self.features, kernel_size=(1, 1), padding=0)(x)
        return x + original_x


class Decoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        dim = 128
        x = nn.Conv(features=dim, kernel_size=(1, 1), padding=0)(x)
        x = nn.relu(x)
        for _ in range(2):
            x = ResBlock(features=dim)(x)
        for _ in range(4):
            x = nn.ConvTranspose(features=dim, kernel_size=(4, 4), strides=(2, 2), padding=2,
                                 transpose_kernel=True)(x)
            x = nn.relu(x)
            dim //= 2
        return nn.Conv(features=1, kernel_size=(1, 1), padding=0)(x)


def flax_params(checkpoint: dict) -> dict:
    def conv(name):
        return {"bias": checkpoint[name + ".bias"], "kernel": np.transpose(checkpoint[name + ".weight"], (2, 3, 1, 0))}

    def resblock(name):
        return {"Conv_0": conv(name + ".0"), "Conv_1": conv(name + ".2"), "Conv_2": conv(name + ".4")}

    return {"Conv_0": conv("decoder.0"), "ResBlock_0": resblock("decoder.2.net"),
            "ResBlock_1": resblock("decoder.3.net"), "ConvTranspose_0": conv("decoder.4"),
            "ConvTranspose_1": conv("decoder.6"), "ConvTranspose_2": conv("decoder.8"),
            "ConvTranspose_3": conv("decoder.10"), "Conv_1": conv("decoder.12")}


def flax_reconstruct(checkpoint: dict, codes: np.ndarray) -> np.ndarray:
    params = flax_params(checkpoint)
    b = codes.shape[0]
    x = jnp.take(checkpoint["_vq_vae._embedding"], codes.reshape(-1), axis=0).reshape(b, 4, 4, 512)
    with jax.default_device(jax.devices("cpu")[0]):
        out = Decoder().apply({"params": params}, x)
    return np.asarray(out)[..., 0]


# -- tests ------------------------------------------------------------------------------------------------------------
def test_random_file_has_the_official_layout_and_size(tmp_path):
    path = write_random_vae(tmp_path / "vae.npz")
    with zipfile.ZipFile(path) as z:
        names = sorted(n.removesuffix(".npy") for n in z.namelist())
    assert len(names) == 49
    assert names == sorted({**decoder_shapes(), **unused_shapes()})
    assert path.stat().st_size == OFFICIAL_SIZE  # the encoder shapes are right to the byte
    with pytest.raises(WeightsError, match="not Google's vae-oid.npz"):
        verify_official(path)  # same size, different bytes: the checksum decides


@pytest.mark.parametrize("seed", [0, 1])
def test_decoder_matches_big_vision_flax(tmp_path, seed):
    path = write_random_vae(tmp_path / "vae.npz", seed)
    checkpoint = dict(np.load(path))
    rng = np.random.default_rng(100 + seed)
    codes = rng.integers(0, 128, (5, 16))
    codes[0] = np.arange(16)  # distinct codes: a transposed grid (column-major) would not match
    codes[1] = 127
    ours = load_mask_decoder(path).decode(codes)
    ref = flax_reconstruct(checkpoint, codes)
    assert ours.shape == ref.shape == (5, 64, 64) and ours.dtype == np.float32
    assert (ref > 0).any() and (ref < 0).any()  # random shapes, not a constant sign
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    assert np.abs(ref).max() > 0.1  # the tolerance is small against the values compared


def test_parity_would_catch_a_transposed_grid(tmp_path):
    """The layout is row-major (code i at row i // 4, column i % 4) because the Flax parity above holds for distinct
    codes; this shows that check has teeth: the column-major layout decodes to a clearly different mask."""
    dec = load_mask_decoder(write_random_vae(tmp_path / "vae.npz"))
    row_major = np.arange(16)
    column_major = row_major.reshape(4, 4).T.reshape(-1)
    a, b = dec.decode([row_major, column_major])
    assert np.abs(a - b).max() > 1e-2


def test_empty_batch_and_code_range(tmp_path):
    dec = load_mask_decoder(write_random_vae(tmp_path / "vae.npz"))
    assert dec.decode(np.zeros((0, 16), int)).shape == (0, 64, 64)
    with pytest.raises(ValueError, match="0..127"):
        dec.decode([[128] * 16])


def _save(path, arrays):
    np.savez(path, **arrays)
    return path


def test_strict_loading_names_the_problem(tmp_path):
    good = random_vae_arrays()
    bad = dict(good)
    del bad["decoder.6.weight"]
    with pytest.raises(WeightsError, match="missing array 'decoder.6.weight'"):
        load_mask_decoder(_save(tmp_path / "missing.npz", bad))
    bad = {**good, "decoder.14.weight": np.zeros((1,), np.float32)}
    with pytest.raises(WeightsError, match="unexpected array 'decoder.14.weight'"):
        load_mask_decoder(_save(tmp_path / "extra.npz", bad))
    bad = {**good, "decoder.12.weight": np.zeros((1, 16, 3, 3), np.float32)}
    with pytest.raises(WeightsError, match=r"decoder.12.weight has shape \(1, 16, 3, 3\), expected \(1, 16, 1, 1\)"):
        load_mask_decoder(_save(tmp_path / "shape.npz", bad))
    bad = {**good, "encoder.0.weight": np.zeros((16, 1, 3, 3), np.float32)}  # unused, still checked
    with pytest.raises(WeightsError, match="encoder.0.weight has shape"):
        load_mask_decoder(_save(tmp_path / "enc.npz", bad))
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(WeightsError, match="not a readable .npz"):
        load_mask_decoder(tmp_path / "text.npz")
    with pytest.raises(WeightsError, match="does not exist"):
        load_mask_decoder(tmp_path / "nope.npz")
    with pytest.raises(WeightsError, match="not Google's"):
        load_decoder(_save(tmp_path / "ok.npz", good), official=True)  # the store's copy: checksum too


def test_decoder_only_file_loads(tmp_path):
    """A file with just the codebook and the decoder (the unused arrays stripped) is enough."""
    arrays = {k: v for k, v in random_vae_arrays().items() if k in decoder_shapes()}
    model = load_mask_decoder(_save(tmp_path / "small.npz", arrays))
    assert isinstance(model, MaskDecoder)
    assert not any(p.is_meta for p in model.parameters())


def test_product_never_imports_jax():
    import subprocess
    import sys

    code = ("import sys, vlm_core.model.vqvae, vlm_core.runtime.masks, vlm_core.weights.vae, vlm_core.cli;"
            "assert 'jax' not in sys.modules and 'flax' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
