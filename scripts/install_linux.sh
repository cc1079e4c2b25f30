#!/usr/bin/env bash
# Install a built bundle for the current user (no root): the app under ~/.local/share, a launcher in ~/.local/bin,
# a desktop entry and an icon. Usage: scripts/install_linux.sh [dist/paligemma-desktop | paligemma-desktop-*.tar.gz]
#        scripts/install_linux.sh --uninstall
set -euo pipefail
APP=paligemma-desktop
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
BIN="$HOME/.local/bin"
DEST="$DATA/$APP"
if [ "${1:-}" = "--uninstall" ]; then
    rm -rf "$DEST" "$BIN/$APP" "$DATA/applications/$APP.desktop" "$DATA/icons/hicolor/256x256/apps/$APP.png"
    command -v update-desktop-database >/dev/null && update-desktop-database "$DATA/applications" || true
    echo "uninstalled (downloaded models stay in ~/.cache/$APP; delete that folder to remove them)"
    exit 0
fi
SRC="${1:-$(dirname "$0")/../dist/$APP}"
TMP=""
if [ -f "$SRC" ]; then  # a .tar.gz
    TMP="$(mktemp -d)"
    tar -C "$TMP" -xzf "$SRC"
    SRC="$TMP/$APP"
fi
[ -x "$SRC/$APP" ] || { echo "no bundle at $SRC: build it with scripts/build_app.sh" >&2; exit 1; }
rm -rf "$DEST"
mkdir -p "$DATA" "$BIN" "$DATA/applications" "$DATA/icons/hicolor/256x256/apps"
cp -a "$SRC" "$DEST"
ln -sf "$DEST/$APP" "$BIN/$APP"
cp "$DEST/_internal/resources/icon.png" "$DATA/icons/hicolor/256x256/apps/$APP.png"
sed "s|^Exec=.*|Exec=$DEST/$APP %f|" "$DEST/_internal/resources/$APP.desktop" > "$DATA/applications/$APP.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database "$DATA/applications" || true
[ -n "$TMP" ] && rm -rf "$TMP"
echo "installed to $DEST; start it from the applications menu or with: $APP"
