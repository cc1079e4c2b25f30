"""The PaliGemma family as published on the Hub, with what each checkpoint costs in disk and memory.

Sizes are computed from the architecture (model/params.py, torch-free), so the picker can show them without a
network; the download itself uses the exact sizes the Hub reports. PaliGemma 2 ships bfloat16 files; PaliGemma 1's
main revision is float32 (twice the download for the same memory once loaded in bfloat16).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.config import PALIGEMMA1_3B, PRESETS, PaliGemmaConfig, VisionConfig
from ..model.params import parameter_count, scheme_bytes

DEFAULT_REPO = "google/paligemma2-3b-mix-224"
_TOKENIZER_BYTES = 4_264_023  # tokenizer.model, the same file in every repository
_BF16 = 2
_FILE_BYTES = {"paligemma2": 2, "paligemma": 4}  # bytes per parameter of the files each release ships


@dataclass(frozen=True)
class ModelSpec:
    repo_id: str
    variant: str  # "mix" (task-tuned: caption, OCR, detect...), "pt" (pretrained, for fine-tuning), "ft-docci"
    size: str  # "3b", "10b", "28b"
    resolution: int  # 224, 448 or 896 pixels
    family: str = "paligemma2"  # or "paligemma" (PaliGemma 1: Gemma 1 decoder, 3B only)

    @property
    def title(self) -> str:
        names = {"mix": "mix", "pt": "pretrained", "ft-docci": "DOCCI captions"}
        release = "PaliGemma 2" if self.family == "paligemma2" else "PaliGemma (1)"
        return f"{release} {self.size.upper()} {names[self.variant]} {self.resolution}px"

    @property
    def config(self) -> PaliGemmaConfig:
        text = PRESETS[self.size] if self.family == "paligemma2" else PALIGEMMA1_3B
        return PaliGemmaConfig(text=text, vision=VisionConfig(image_size=self.resolution))

    @property
    def parameters(self) -> int:
        return parameter_count(self.config)

    @property
    def download_bytes(self) -> int:
        return self.parameters * _FILE_BYTES[self.family] + _TOKENIZER_BYTES

    @property
    def memory_bytes(self) -> int:
        """bf16 weights, plus the KV cache of a full-resolution prompt and 512 new tokens, plus 10% working room."""
        t = self.config.text
        tokens = self.config.num_image_tokens + 64 + 512
        kv = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * tokens * _BF16
        return int((self.parameters * _BF16 + kv) * 1.1)

    def scheme_memory_bytes(self, scheme: str, float_bytes: int = _BF16) -> int:
        """memory_bytes with the decoder's weights in `scheme` (none, int8, int4; model/quant.py) and the float
        parts at `float_bytes` each (4 where the CPU computes in float32)."""
        t = self.config.text
        tokens = self.config.num_image_tokens + 64 + 512
        kv = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * tokens * float_bytes
        return int((scheme_bytes(self.config, float_bytes)[scheme] + kv) * 1.1)


CATALOG: tuple[ModelSpec, ...] = (
    *(ModelSpec(f"google/paligemma2-{s}-mix-{r}", "mix", s, r) for s in ("3b", "10b", "28b") for r in (224, 448)),
    *(ModelSpec(f"google/paligemma2-{s}-pt-{r}", "pt", s, r) for s in ("3b", "10b", "28b") for r in (224, 448, 896)),
    *(ModelSpec(f"google/paligemma2-{s}-ft-docci-448", "ft-docci", s, 448) for s in ("3b", "10b")),
    *(ModelSpec(f"google/paligemma-3b-mix-{r}", "mix", "3b", r, "paligemma") for r in (224, 448, 896)),
)


def find_spec(repo_id: str) -> ModelSpec | None:
    return next((m for m in CATALOG if m.repo_id == repo_id), None)
