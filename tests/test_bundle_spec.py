"""build.spec, read without building: what it leaves out of the bundle, and what it must keep (fast; the slow
tests/test_bundle.py builds the bundle and looks inside)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Test-only and scale-only packages that once made the bundle 1383 MiB (jaxlib alone 336 MiB, pyarrow 162 MiB).
NEVER_SHIPPED = {"jax", "jaxlib", "flax", "optax", "orbax", "tensorstore", "ray", "pyarrow", "pandas", "uvloop",
                 "transformers", "tokenizers", "openai", "ollama", "skimage", "scipy", "pytest", "vlm_core.scale"}
# The API server's runtime is the product's.
SHIPPED = {"starlette", "uvicorn", "h11", "anyio", "httpx", "huggingface_hub", "sentencepiece", "safetensors", "torch"}


def spec_lists() -> dict[str, list[str]]:
    """The name lists build.spec assigns at top level: TEST_ONLY, SCALE_ONLY."""
    tree = ast.parse((ROOT / "build.spec").read_text())
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.endswith("_ONLY")}


def test_spec_excludes_test_and_scale_only_packages_and_keeps_the_servers_runtime():
    lists = spec_lists()
    excluded = set(lists["TEST_ONLY"]) | set(lists["SCALE_ONLY"])
    assert NEVER_SHIPPED <= excluded, NEVER_SHIPPED - excluded
    assert not excluded & SHIPPED, excluded & SHIPPED
    assert "excludes=UNUSED_QT + EXCLUDED" in (ROOT / "build.spec").read_text()
