"""sae-report: train sparse autoencoders, find what happened in a run, and report it.

Importing this package never imports torch: ``sae-report analyze`` works without the training extra.
"""

__version__ = "0.1.0"
