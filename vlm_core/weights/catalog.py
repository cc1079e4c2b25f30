"""The PaliGemma 2 family as published on the Hub, with what each checkpoint costs in disk and memory.

Sizes are computed from the architecture (every released checkpoint is bfloat16), so the picker can show them
without a network; the download itself uses the exact sizes the Hub reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.config import PRESETS, PaliGemmaConfig, VisionConfig

DEFAULT_REPO = "google/paligemma2-3b-mix-224"
_TOKENIZER_BYTES = 4_264_023  # tokenizer.model, the same file in every repository
_BF16 = 2


@dataclass(frozen=True)
class ModelSpec:
    repo_id: str
    variant: str  # "mix" (task-tuned: caption, OCR, detect...), "pt" (pretrained, for fine-tuning), "ft-docci"
    size: str  # "3b", "10b", "28b"
    resolution: int  # 224, 448 or 896 pixels

    @property
    def title(self) -> str:
        names = {"mix": "mix", "pt": "pretrained", "ft-docci": "DOCCI captions"}
        return f"PaliGemma 2 {self.size.upper()} {names[self.variant]} {self.resolution}px"

    @property
    def config(self) -> PaliGemmaConfig:
        return PaliGemmaConfig(text=PRESETS[self.size], vision=VisionConfig(image_size=self.resolution))

    @property
    def download_bytes(self) -> int:
        return PARAMETER_COUNTS[(self.size, self.resolution)] * _BF16 + _TOKENIZER_BYTES

    @property
    def memory_bytes(self) -> int:
        """bf16 weights, plus the KV cache of a full-resolution prompt and 512 new tokens, plus 10% working room."""
        t = self.config.text
        tokens = self.config.num_image_tokens + 64 + 512
        kv = 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * tokens * _BF16
        return int((PARAMETER_COUNTS[(self.size, self.resolution)] * _BF16 + kv) * 1.1)


# Parameter counts of our module tree for each size and resolution (the resolution changes only the position
# embedding). Kept as numbers so the GUI can show sizes without importing torch; a test rebuilds them on the meta
# device and checks they still match.
PARAMETER_COUNTS = {
    ("3b", 224): 3032242416,
    ("3b", 448): 3033127152,
    ("3b", 896): 3036666096,
    ("10b", 224): 9662638832,
    ("10b", 448): 9663523568,
    ("10b", 896): 9667062512,
    ("28b", 224): 27650487024,
    ("28b", 448): 27651371760,
    ("28b", 896): 27654910704,
}


CATALOG: tuple[ModelSpec, ...] = (
    *(ModelSpec(f"google/paligemma2-{s}-mix-{r}", "mix", s, r) for s in ("3b", "10b", "28b") for r in (224, 448)),
    *(ModelSpec(f"google/paligemma2-{s}-pt-{r}", "pt", s, r) for s in ("3b", "10b", "28b") for r in (224, 448, 896)),
    *(ModelSpec(f"google/paligemma2-{s}-ft-docci-448", "ft-docci", s, 448) for s in ("3b", "10b")),
)


def find_spec(repo_id: str) -> ModelSpec | None:
    return next((m for m in CATALOG if m.repo_id == repo_id), None)
