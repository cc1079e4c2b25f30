"""Work that runs off the GUI thread: the engine worker and image decoding."""
