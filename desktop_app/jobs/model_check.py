"""Is a folder a loadable PaliGemma 2 model? Checked on the thread pool before the current model is released, so a
wrong folder never costs the working model.

What is read: config.json (the strict parser: an unknown field is an error), tokenizer.model (SentencePiece loads
it; its vocabulary must fit the config's), and the weight index with every shard it lists. Torch-free and cheap (a
few milliseconds; the shards are only stat'ed); the weights' tensors are checked by the strict loader as it reads.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal


def check_model_folder(folder: str | Path) -> None:
    """Raises a VlmError that says what is wrong and what to do; returns when the folder looks loadable."""
    from vlm_core.errors import ConfigError
    from vlm_core.model.config import PaliGemmaConfig
    from vlm_core.runtime.tokenizer import TOKENIZER_FILE, Tokenizer
    from vlm_core.weights.layout import checkpoint_files

    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder} has no config.json: it is not a model folder. Choose the folder that holds "
                          "config.json, tokenizer.model and the *.safetensors files")
    cfg = PaliGemmaConfig.from_json_file(folder / "config.json")
    tokenizer = Tokenizer(folder / TOKENIZER_FILE)
    if tokenizer.vocab_size > cfg.text.vocab_size:
        raise ConfigError(f"{folder}: tokenizer.model has {tokenizer.vocab_size} tokens but config.json's "
                          f"vocabulary has {cfg.text.vocab_size}: they belong to different models")
    checkpoint_files(folder)


class _Signals(QObject):
    done = Signal(int, str, str)  # sequence number, folder, "" or the problem


class ModelCheck(QObject):
    """check(folder) -> passed(folder) or failed(folder, message); only the latest check reports."""

    passed = Signal(str)
    failed = Signal(str, str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._seq = 0
        self._signals = _Signals(self)
        self._signals.done.connect(self._on_done)

    def check(self, folder: str) -> None:
        self._seq += 1
        seq, signals = self._seq, self._signals

        class Job(QRunnable):
            def run(self):
                from vlm_core.errors import VlmError

                try:
                    check_model_folder(folder)
                except VlmError as e:
                    signals.done.emit(seq, folder, str(e))
                except Exception as e:  # noqa: BLE001 - a reader bug must not kill the pool thread silently
                    signals.done.emit(seq, folder, f"{folder} could not be read ({type(e).__name__}: {e})")
                else:
                    signals.done.emit(seq, folder, "")

        QThreadPool.globalInstance().start(Job())

    def _on_done(self, seq: int, folder: str, problem: str) -> None:
        if seq != self._seq:
            return
        if problem:
            self.failed.emit(folder, problem)
        else:
            self.passed.emit(folder)
