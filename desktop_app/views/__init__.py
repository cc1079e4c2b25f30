"""Widgets. Nothing here imports torch or touches the engine directly; they talk to jobs through signals."""
