"""Training recipes of the shipped tiny models (run by scripts/build_tiny_models.py; not needed to load them)."""
