#!/usr/bin/env bash
# Build the one-folder desktop bundle from a clean checkout: dist/paligemma-desktop/ and, on Linux, a .tar.gz of it.
. "$(dirname "$0")/_env.sh" "[build]"
rm -rf build/pyinstaller dist/paligemma-desktop
pyinstaller --noconfirm --log-level WARN --workpath build/pyinstaller --distpath dist build.spec
version="$(python -c 'import vlm_core; print(vlm_core.__version__)')"
if [ "$(uname -s)" = "Linux" ]; then
    archive="dist/paligemma-desktop-${version}-linux-$(uname -m).tar.gz"
    tar -C dist -czf "$archive" paligemma-desktop
    echo "built $archive ($(du -sh dist/paligemma-desktop | cut -f1) unpacked)"
else
    echo "built dist/ ($(du -sh dist | cut -f1))"
fi
