"""Small agent programs the worker tests run as real processes."""
