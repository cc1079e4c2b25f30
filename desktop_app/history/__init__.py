"""Conversation history: a SQLite store (store.py) and exports (export.py). Plain Python, no Qt, no torch.

The Qt side lives where the rest of the app keeps it: jobs/history_writer.py (the thread that owns the store) and
views/history_panel.py (the panel).
"""
