"""macOS's "Open With" and drops on the Dock icon arrive as a QFileOpenEvent on the application, not in argv: the
app must open that file (build.spec's Info.plist lists the image types so that Finder offers the app)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("PySide6")

LAUNCH = """
import sys
from PySide6.QtCore import QCoreApplication
from PySide6.QtGui import QFileOpenEvent
import desktop_app.open_with as open_with
from desktop_app.views.main_window import MainWindow

opened = []
MainWindow.open_image = lambda self, source, name=None: opened.append(source)
init = open_with.Application.__init__

def init_then_event(self, argv):  # Finder posts the file before the event loop runs
    init(self, argv)
    QCoreApplication.postEvent(self, QFileOpenEvent(sys.argv[1]))

open_with.Application.__init__ = init_then_event
from desktop_app.__main__ import main
rc = main(["--exit-when-shown", "-platform", "offscreen"])
print("opened:", opened)
sys.exit(rc)
"""


def test_a_file_open_event_at_launch_opens_the_image_in_the_window(tmp_path, photos):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PGD_PLATFORM_CHECKED": "1"}
    out = subprocess.run([sys.executable, "-c", LAUNCH, str(photos[0])], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"opened: [{str(photos[0])!r}]" in out.stdout

