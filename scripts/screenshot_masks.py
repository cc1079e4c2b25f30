"""The README's masks screenshot: the real app, a `segment` answer about a photo, masks decoded and drawn.

    xvfb-run -s "-screen 0 1400x900x24" python scripts/screenshot_masks.py TOY_MODEL_DIR resources/masks.png

Neither real PaliGemma weights nor Google's vae-oid.npz are available offline, so: the toy model answers the
`segment` prompt (noise), then the window receives the kind of answer a real checkpoint gives for this photo, and
the mask decoder has random weights in vae-oid.npz's layout. Its transposed convolutions get a smooth (bilinear)
kernel times a random gain per channel pair, and the last bias centres the output, so the random shapes are blobs
that cover about half of each box rather than pixel noise; they are still random, not the cat.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEventLoop, QSettings, QTimer
from PySide6.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from desktop_app.views.main_window import MainWindow  # noqa: E402
from tests.conftest import photo_dir  # noqa: E402
from tests.vae_fixture import random_vae_arrays  # noqa: E402

SEGMENT_ANSWER = ("<loc0030><loc0110><loc1000><loc0800> {s0} cat ; <loc0040><loc0180><loc0300><loc0390> {s1} ear ; "
                  "<loc0060><loc0560><loc0330><loc0760> {s2} ear")


def smooth_random_decoder(path: Path, seed: int = 7) -> Path:
    arrays = random_vae_arrays(seed)
    rng = np.random.default_rng(seed)
    taps = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
    bilinear = np.outer(taps, taps)  # stride-2 transposed conv with this kernel is bilinear upsampling
    for name in ("decoder.4.weight", "decoder.6.weight", "decoder.8.weight", "decoder.10.weight"):
        c_in, c_out = arrays[name].shape[:2]
        gains = rng.normal(0, 1.6 / np.sqrt(c_in), (c_in, c_out, 1, 1)).astype(np.float32)
        arrays[name] = gains * bilinear
    np.savez(path, **arrays)
    # centre the output (median logit 0 over random codes) so about half of each box is inside its mask
    from vlm_core.model.vqvae import load_mask_decoder

    logits = load_mask_decoder(path).decode(rng.integers(0, 128, (256, 16)))
    arrays["decoder.12.bias"] -= np.median(logits)
    np.savez(path, **arrays)
    return path


def settle(ms=300):
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_until(condition, timeout_s=60.0):
    for _ in range(int(timeout_s * 50)):
        if condition():
            return
        settle(20)
    raise TimeoutError("condition not met")


def main(model_dir: str, out: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="masks-shot-"))
    os.environ["PALIGEMMA_VAE"] = str(smooth_random_decoder(work / "vae-oid.npz"))
    app = QApplication(sys.argv[:1])
    window = MainWindow(model_dir=model_dir, settings_store=QSettings(str(work / "s.ini"),
                                                                      QSettings.Format.IniFormat))
    window.resize(1280, 780)
    window.show()
    wait_until(lambda: window.engine.ready)
    window.open_image(str(photo_dir() / "chelsea.png"))
    wait_until(lambda: window.image is not None)
    window.settings.max_new_tokens = 8
    window.send("segment", "cat ; ear")
    wait_until(lambda: not window.engine.busy)
    turn = window.session.current.turns[-1]
    rng = np.random.default_rng(3)
    codes = ["".join(f"<seg{c:03d}>" for c in rng.integers(0, 128, 16)) for _ in range(3)]
    answer = SEGMENT_ANSWER.format(s0=codes[0], s1=codes[1], s2=codes[2])
    window._requests[10_000] = (turn.id, window.image.key)  # the same slots the engine worker's signals reach
    turn.latest.text = ""
    window._on_token(10_000, answer)
    window._on_finished(10_000, turn.stats or {"generated_tokens": 64, "ttft_s": 0.4, "decode_tokens_per_s": 30.0,
                                               "stop_reason": "eos"})
    wait_until(lambda: window.objects.result is not None)
    settle()
    window.grab().save(out)
    print(out, window.objects.panel.status.text())
    window.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
