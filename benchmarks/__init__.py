"""Throughput and memory benchmarks. Each module prints a Markdown table and writes results/<name>.json."""
