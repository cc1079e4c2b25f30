"""The colours objects are drawn in: one per label, the same in the app's canvas and in saved pictures.

Apart from runtime/annotate.py (numpy and Pillow) so that the window can colour its labels without importing
either before it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence

# Distinct, readable on photos in both light and dark themes (Tableau 10).
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac"]
FILL_ALPHA = 0.45  # mask fill opacity: the picture stays readable under it


def label_color_names(labels: Sequence[str]) -> dict[str, str]:
    """One palette colour per distinct label, stable in order of first appearance."""
    colors: dict[str, str] = {}
    for label in labels:
        if label not in colors:
            colors[label] = PALETTE[len(colors) % len(PALETTE)]
    return colors
