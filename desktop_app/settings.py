"""Persistent settings (QSettings), with validation kept in plain functions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from PySide6.QtCore import QSettings

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8 weights", "int4 weights")
API_PORT = 8224  # `python -m vlm_core serve`'s default (vlm_core/cli/serve.py: DEFAULT_PORT)
QUANT_PRECISIONS = {"int8 weights": "int8", "int4 weights": "int4"}


def load_precision(setting: str) -> tuple[str, str]:
    """(dtype, quant) for Engine.load from the Precision setting. auto lets the engine pick both: the dtype the
    device computes natively, and the first of unquantized, int8, int4 whose weights fit its memory."""
    if setting in QUANT_PRECISIONS:
        return "auto", QUANT_PRECISIONS[setting]
    return setting, "auto" if setting == "auto" else "none"


def precision_note(auto_cpu_dtype: str | None) -> str:
    """What int8/int4 weights do here, in words (README "Quantized weights" has the measurements)."""
    if auto_cpu_dtype == "float32":
        return ("int8/int4 weights: this CPU has no native bfloat16, so the model computes in float32. int8 and "
                "int4 weights need about 40% of the memory, decode about 1.2x faster and take 1.4-1.6x longer to "
                "the first word: a memory saving here. On a GPU or a CPU with native bfloat16 they also decode "
                "faster. auto picks the first of full, int8, int4 that fits the memory. The first load quantizes "
                "and caches (minutes).")
    return ("int8/int4 weights: half and about a third of bfloat16's memory, decoding faster (fewer bytes per "
            "token). auto picks the first of full, int8, int4 that fits the memory. The first load quantizes and "
            "caches the result in the models folder (minutes).")


@dataclass
class Settings:
    device: str = "auto"
    dtype: str = "auto"
    max_new_tokens: int = 128
    temperature: float = 0.0  # greedy: what PaliGemma's task prompts expect
    top_k: int = 0
    top_p: float = 1.0
    model_dir: str = ""  # the folder last loaded (a snapshot inside a models folder, or any local folder)
    models_dir: str = ""  # where downloads go; empty means the platform cache directory
    cuda_graphs: bool = True  # replay the decode step as a CUDA graph (CUDA only); off = eager, like --no-graphs
    # Settings › Local API server (desktop_app/jobs/api_server.py): off until the person turns it on
    api_server: bool = False
    api_port: int = API_PORT
    api_network: bool = False  # bind 0.0.0.0 (other devices); only with an api_key
    api_key: str = ""
    api_history: bool = False  # keep API requests in History (each image its own conversation)

    def validated(self) -> "Settings":
        """Clamp whatever a hand-edited or old settings file holds into the allowed ranges."""
        return Settings(
            device=self.device if self.device in DEVICES else "auto",
            dtype=self.dtype if self.dtype in DTYPES else "auto",
            max_new_tokens=min(max(int(self.max_new_tokens), 1), 4096),
            temperature=min(max(float(self.temperature), 0.0), 5.0),
            top_k=min(max(int(self.top_k), 0), 1000),
            top_p=min(max(float(self.top_p), 0.01), 1.0),
            model_dir=str(self.model_dir or ""),
            models_dir=str(self.models_dir or ""),
            cuda_graphs=bool(self.cuda_graphs),
            api_server=bool(self.api_server),
            api_port=self.api_port if 1 <= int(self.api_port) <= 65535 else API_PORT,
            api_network=bool(self.api_network and self.api_key),  # never on the network without a key
            api_key=str(self.api_key or ""),
            api_history=bool(self.api_history),
        )

    def models_folder(self) -> str:
        from vlm_core.weights.hub import default_cache_dir

        return self.models_dir or str(default_cache_dir())

    def sampling(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_k": self.top_k,
                "top_p": self.top_p}


def load_settings(store: QSettings) -> Settings:
    values = {}
    for f in fields(Settings):
        raw = store.value(f.name, None)
        if raw is None:
            continue
        convert = {"str": str, "int": int, "float": float, "bool": _as_bool}[f.type]  # annotations are strings here
        try:
            values[f.name] = convert(raw)
        except (TypeError, ValueError):
            continue  # a damaged value falls back to its default
    return Settings(**values).validated()


def _as_bool(raw) -> bool:
    """QSettings' INI files hand booleans back as the strings 'true'/'false'."""
    if isinstance(raw, str):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(raw)
        return raw.lower() in ("true", "1")
    return bool(raw)


def save_settings(store: QSettings, settings: Settings) -> None:
    for key, value in asdict(settings.validated()).items():
        store.setValue(key, value)
    store.sync()
