"""labtune.generator: taxonomy sync and validation, and synthetic data generation."""
