"""Data: dataset readers (records), the synthetic generator, and tf.data pipelines."""
