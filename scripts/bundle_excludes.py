"""What build.spec leaves out, whatever venv the build runs in: every module that only pyproject's extras (test,
scale) bring into this venv. The product runs in a venv holding its `dependencies` alone, so nothing it needs can
be among them; yet PyInstaller's import analysis follows optional imports (in torch, huggingface_hub, ...) into
whatever is installed, and so once carried jaxlib, pyarrow, tensorstore and pandas (600 MiB).
Used by build.spec and tests/test_bundle.py; needs only the standard library and `packaging`."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

# Installed for building, never imported by the product, and PyInstaller's own runtime needs them.
BUILD_ROOTS = ["pyinstaller"]


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def closure(requirements: list[str]) -> set[str]:
    """The installed distributions these requirements bring, followed through their own (requested extras too)."""
    seen, todo = set(), [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        dist = _normal(req.name)
        if dist in seen:
            continue
        try:
            needs = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(dist)
        for r in map(Requirement, needs):
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                todo.append(r)
    return seen


def _project(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(dependencies, {extra: requirements}) from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the installed project's metadata holds the same lists
        reqs = [Requirement(r) for r in metadata.requires("paligemma-desktop") or []]
        plain = [str(r) for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]
        extras = {}
        for r in (r for r in reqs if str(r) not in plain):
            for extra in ("test", "scale", "build"):
                if r.marker.evaluate({"extra": extra}):
                    named = f"{r.name}[{','.join(r.extras)}]" if r.extras else r.name
                    extras.setdefault(extra, []).append(named)
        return plain, extras
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["dependencies"], project.get("optional-dependencies", {})


def extras_only_modules(root: Path, extras: tuple[str, ...] = ("test", "scale")) -> set[str]:
    """Top-level modules of the distributions that these extras install here and the product does not need."""
    dependencies, optional = _project(root)
    needed = closure(dependencies + BUILD_ROOTS)
    only = closure([r for key in extras for r in optional.get(key, [])]) - needed
    return {module for module, dists in metadata.packages_distributions().items()
            if "/" not in module and {_normal(d) for d in dists} <= only}
