#!/usr/bin/env bash
# Set up (first run only) and start PaliGemma Desktop. Arguments go to the app: [IMAGE] [--model DIR] [--device D]
# [--dtype T], plus Qt's own (-style, -platform).
. "$(dirname "$0")/_env.sh" ""
# Qt's xcb plugin needs system libraries that a stock desktop may lack; name the packages before Qt fails with a
# message that names only one of them.
if ! python -m desktop_app.platform_check "$@"; then
    exit 1
fi
export PGD_PLATFORM_CHECKED=1  # the app skips its own copy of the check
exec paligemma-desktop "$@"
