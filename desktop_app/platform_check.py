"""Before the first window: can Qt's xcb plugin (X11) load? If not, name the system packages that are missing.

Qt's own message when the plugin fails ("could not load the Qt platform plugin xcb ... libxcb-cursor0 is needed")
names one library even when several are missing, so a person installs it and fails again. We ask the dynamic linker
instead: `ldd` on PySide6's libqxcb.so lists every library it cannot find, and the table below maps each one to its
Debian/Ubuntu and Fedora package. Plain Python, no Qt import: it runs where Qt cannot.

    python -m desktop_app.platform_check [APP ARGS]   exit 0 when the window can open (or xcb is not used), 1 when not

Started from a desktop menu there is no terminal to read stderr, so a failure is also written to the log file
(`log_path()`: ~/.local/state/paligemma-desktop/paligemma-desktop.log) and shown with the first of notify-send,
zenity, kdialog or xmessage that the system has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

APP_DIR_NAME = "paligemma-desktop"

# soname -> (Debian/Ubuntu package, Fedora package). What Qt 6's xcb plugin and libQt6XcbQpa link against.
XCB_PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libICE.so.6": ("libice6", "libICE"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
}


def missing_libraries(ldd_output: str) -> list[str]:
    """The sonames ldd reports as "not found", each once, in the order ldd found them."""
    missing: list[str] = []
    for line in ldd_output.splitlines():
        name, sep, where = line.strip().partition("=>")
        if sep and where.strip() == "not found" and name.strip() not in missing:
            missing.append(name.strip())
    return missing


def install_advice(missing: list[str]) -> str:
    """What to tell a person: the libraries, then one install command per distribution family."""
    debian = sorted({XCB_PACKAGES[m][0] for m in missing if m in XCB_PACKAGES})
    fedora = sorted({XCB_PACKAGES[m][1] for m in missing if m in XCB_PACKAGES})
    unknown = [m for m in missing if m not in XCB_PACKAGES]
    lines = ["PaliGemma Desktop cannot open its window: Qt's X11 (xcb) plugin needs system libraries that are "
             f"missing: {', '.join(missing)}.", "Install them, then start the app again:"]
    if debian:
        lines.append(f"  Debian/Ubuntu:  sudo apt install {' '.join(debian)}")
        lines.append(f"  Fedora:         sudo dnf install {' '.join(fedora)}")
    if unknown:
        lines.append(f"  and the package that provides {', '.join(unknown)} on your system")
    return "\n".join(lines)


def xcb_plugin() -> Path | None:
    """PySide6's libqxcb.so, found without importing Qt (PySide6's package folder holds its Qt)."""
    import importlib.util

    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugin = Path(spec.submodule_search_locations[0]) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def uses_xcb(environ=os.environ, argv: list[str] = ()) -> bool:
    """Qt picks xcb on Linux unless told otherwise (-platform NAME, QT_QPA_PLATFORM) or a Wayland session offers
    its own plugin."""
    if not sys.platform.startswith("linux"):
        return False
    argv = list(argv)
    named = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-platform", "--platform")]
    platform = named[-1] if named else environ.get("QT_QPA_PLATFORM", "")
    if platform:
        return platform.split(";")[0].split(":")[0] == "xcb"
    return not environ.get("WAYLAND_DISPLAY")


def check(environ=os.environ, argv: list[str] = ()) -> str:
    """"" when the window can open (or we cannot tell: no ldd, no plugin); otherwise the advice to print."""
    if not uses_xcb(environ, argv) or (plugin := xcb_plugin()) is None or shutil.which("ldd") is None:
        return ""
    env = dict(environ)
    if getattr(sys, "frozen", False):  # a bundle carries some of these libraries next to Qt's
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [sys._MEIPASS, env.get("LD_LIBRARY_PATH", "")]))
    try:
        out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=20, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    missing = missing_libraries(out)
    return install_advice(missing) if missing else ""


def log_path(environ=os.environ) -> Path:
    """The app's log file (XDG state folder): start-up failures and the app's own log lines."""
    state = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    return Path(state) / APP_DIR_NAME / f"{APP_DIR_NAME}.log"


def write_log(text: str, environ=os.environ) -> Path | None:
    path = log_path(environ)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} start-up failed\n{text}\n")
    except OSError:
        return None
    return path


def notify_commands(title: str, body: str) -> list[list[str]]:
    """How each tool shows one message, in the order tried: a notification first (it never blocks), then
    dialogs."""
    return [["notify-send", "--app-name=PaliGemma Desktop", "--urgency=critical", title, body],
            ["zenity", "--error", f"--title={title}", "--no-markup", f"--text={body}"],
            ["kdialog", "--title", title, "--error", body],
            ["xmessage", "-center", f"{title}\n\n{body}"]]


def show_failure(advice: str, environ=os.environ) -> str:
    """Make a start-up failure visible without Qt: the log file always, and the first notifier present. Returns
    the tool used ("" if none)."""
    path = write_log(advice, environ)
    body = advice + (f"\n\nThis message is also in {path}." if path else "")
    if not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
        return ""  # no desktop to show it on: stderr is all there is
    for command in notify_commands("PaliGemma Desktop cannot start", body):
        if shutil.which(command[0], path=environ.get("PATH")) is None:
            continue
        try:
            subprocess.Popen(command, env=dict(environ), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)  # outlives this process
        except OSError:
            continue
        return command[0]
    return ""


def main(argv: list[str] | None = None) -> int:
    """argv: the app's own arguments, so `-platform offscreen` skips the check as it skips xcb."""
    advice = check(argv=sys.argv[1:] if argv is None else argv)
    if advice:
        print(advice, file=sys.stderr)
        show_failure(advice)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
