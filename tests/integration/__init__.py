"""Integration tests: one real boundary at a time (an SDK against a simulator, ...)."""
