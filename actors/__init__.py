"""The actors: one module, one process each."""
