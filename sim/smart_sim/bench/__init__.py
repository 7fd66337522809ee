"""Benchmarks: scripts that print figures and ratios (``make bench``). Never timed
assertions; the figures go into BENCHMARKS.md with the command that produced them."""
