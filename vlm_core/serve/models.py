"""Which models the server answers for, by the names clients use.

A model is named by its Hub repo id (`google/paligemma2-3b-mix-224`), its short name (`paligemma2-3b-mix-224`) or
its folder's name; Ollama's `:latest` tag is ignored. The loaded model and every catalogue model installed in the
caches are listed; an installed model that is not loaded is loaded on request (the scheduler frees the other one
first). A name that is not installed gets a 404 that says how to download it: the server never downloads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..weights.catalog import CATALOG
from ..weights.hub import find_installed
from .errors import ApiError

_SNAPSHOT = re.compile(r"models--(?P<org>[^/\\]+?)--(?P<name>[^/\\]+)[/\\]snapshots[/\\][^/\\]+$")


@dataclass(frozen=True)
class ServedModel:
    key: str  # the folder, as the scheduler's model key
    name: str  # what lists show: the repo id when known, else the folder's name
    path: Path
    aliases: frozenset[str] = field(default_factory=frozenset)


def describe(path: Path, repo_id: str | None = None) -> ServedModel:
    path = Path(path).resolve()
    if repo_id is None and (m := _SNAPSHOT.search(str(path))):
        repo_id = f"{m['org']}/{m['name']}"
    names = {path.name} if repo_id is None else {repo_id, repo_id.split("/", 1)[1]}
    if repo_id is None or not _SNAPSHOT.search(str(path)):
        names.add(path.name)  # a plain folder is also known by its own name (a snapshot's is a commit hash)
    return ServedModel(str(path), repo_id or path.name, path, frozenset(names))


class Models:
    def __init__(self, loaded: ServedModel, cache_dir: Path | None = None):
        self.loaded, self.cache_dir = loaded, cache_dir

    def installed(self) -> list[ServedModel]:
        """The loaded model first, then every catalogue model found in the caches (no network)."""
        out, seen = [self.loaded], {self.loaded.key}
        for spec in CATALOG:
            path = find_installed(spec.repo_id, self.cache_dir)
            if path is not None and str(path.resolve()) not in seen:
                model = describe(path, spec.repo_id)
                out.append(model)
                seen.add(model.key)
        return out

    def find(self, name: str | None, param: str = "model") -> ServedModel:
        if name is not None and not isinstance(name, str):
            raise ApiError(400, "model must be a string", param)
        name = (name or "").strip().removesuffix(":latest")
        if not name or name in self.loaded.aliases:
            return self.loaded
        for model in self.installed():
            if name in model.aliases:
                return model
        known = ", ".join(sorted(m.name for m in self.installed()))
        hint = (f"download it first: `python -m vlm_core download {name}` (or the app's model picker); "
                if "/" in name else "")
        raise ApiError(404, f"model {name!r} is not installed; {hint}the server never downloads. "
                            f"Installed: {known}", param, "model_not_found")
