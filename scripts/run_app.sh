#!/usr/bin/env bash
# Set up (first run only) and start PaliGemma Desktop. Arguments go to the app: [IMAGE] [--model DIR].
. "$(dirname "$0")/_env.sh" ""
exec paligemma-desktop "$@"
