"""Data: the built-in procedural dataset, TFDS datasets, image-text data and input pipelines."""
