# shellcheck shell=bash
# Sourced by the scripts here: make .venv (once) and install the project into it.
# torch is pinned: on the project's build machines that version is a local CPU wheel; elsewhere PyPI serves the
# CUDA build for Linux and Windows and the Metal-capable build for macOS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
EXTRAS="${1:-}"
STAMP=".venv/.installed${EXTRAS}"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet "torch==2.13.0"
    python -m pip install --quiet -e ".${EXTRAS}"
    touch "$STAMP"
fi
