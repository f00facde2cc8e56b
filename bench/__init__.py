"""py-serving-bench's benchmark driver: local runs, the shared report code, run comparison."""
