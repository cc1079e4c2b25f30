#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite, headless. Arguments go to pytest.
. "$(dirname "$0")/_env.sh" "[test]"
export QT_QPA_PLATFORM=offscreen
exec python -m pytest "$@"
