"""centrobind: one unified embedding space for any number of paired modalities."""

__version__ = "0.1.0"
