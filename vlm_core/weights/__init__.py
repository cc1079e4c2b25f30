"""Getting weights: which files make a checkpoint, the strict loader, Hub downloads, the catalogue of released
models, and toy checkpoints written in the Hub's exact layout for tests."""
