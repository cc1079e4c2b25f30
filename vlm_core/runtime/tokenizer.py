"""The checkpoint's SentencePiece tokenizer, and incremental detokenization for streaming.

PaliGemma's prompt layout (big_vision's, and transformers'):
    [image_token_index] * num_image_tokens + [<bos>] + encode(prompt + "\\n")
Everything up to and including that "\\n" is the bidirectional prefix; generated tokens follow.
"""

from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

from ..errors import TokenizerError

TOKENIZER_FILE = "tokenizer.model"


class Tokenizer:
    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"{path} is missing: a PaliGemma model folder needs its {TOKENIZER_FILE}")
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(path))
        except (OSError, RuntimeError):
            raise TokenizerError(f"{path} is not a SentencePiece model (damaged download?): download it again") from None
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        if self.bos_id < 0 or self.eos_id < 0:
            raise TokenizerError(f"{path} defines no <bos>/<eos> tokens: this is not a Gemma tokenizer")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: list[int]) -> str:
        # The embedding is padded past the SentencePiece vocabulary (and holds the image placeholder there); those
        # ids have no text. Real checkpoints never pick them, random ones can.
        n = self.vocab_size
        return self.sp.decode([i for i in ids if 0 <= i < n])

    def prompt_ids(self, prompt: str, image_token_index: int, num_image_tokens: int) -> list[int]:
        return [image_token_index] * num_image_tokens + [self.bos_id] + self.encode(prompt + "\n")


class StreamDecoder:
    """Turns token ids into text deltas that are always whole characters.

    Byte-fallback pieces (<0xE2><0x82><0xAC> for "€") decode to U+FFFD until the character is complete, so a delta
    is held back while the text ends in U+FFFD. Each delta is the difference between decoding a short window with and
    without the new ids; both decodes start at the same piece, so SentencePiece's handling of a leading "▁" is the
    same in both and cancels out. The concatenated deltas equal `decode(all ids)`.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self._prefix = 0  # window start
        self._read = 0  # ids before this are already emitted

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> str:
        """Emit whatever is held back (an incomplete byte sequence at the very end decodes to U+FFFD)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        if self._read == len(self.ids):
            return ""
        before = self.tok.decode(self.ids[self._prefix:self._read])
        after = self.tok.decode(self.ids[self._prefix:])
        if (after.endswith("\ufffd") and not final) or len(after) < len(before):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return after[len(before):]
