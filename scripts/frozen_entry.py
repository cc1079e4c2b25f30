"""The bundle's entry point. PyInstaller runs its script as a top-level module, where desktop_app/__main__.py's
relative imports would fail; this imports the package properly."""

import sys

from desktop_app.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
