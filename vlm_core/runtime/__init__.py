"""Running a loaded model: the engine, generation, image and text processing, and parsing structured answers."""
