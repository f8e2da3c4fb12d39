"""Benchmarks: measured numbers (cache_strategies, single_frame, flops); report.py turns them into tables and plots."""
