"""PaliGemma Desktop: the Qt application.

Layout: `views/` holds widgets (they never import torch), `jobs/` the threads (the engine worker and image
decoding), and the modules at this level are plain Python the views and jobs share (prompts, conversations,
settings, assets), testable without a display.
"""

APP_NAME = "PaliGemma Desktop"
APP_ID = "paligemma-desktop"
ORG_NAME = "PaliGemma Desktop"
