"""The S³CMN network: one block a file, assembled in ``lm.py``."""
