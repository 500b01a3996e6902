"""Finding what happened in a run."""
