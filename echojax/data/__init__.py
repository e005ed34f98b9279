"""Dataset features, pre-processing and the input pipeline."""
