"""Benchmarks: measured numbers, printed and written to JSON, with the command that produced them."""
