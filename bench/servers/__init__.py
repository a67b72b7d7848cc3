"""Baseline servers the benchmark compares ClearPath against. Each prints
``listening on 127.0.0.1:PORT`` once it is bound (port 0 picks a free port)."""

__all__: list[str] = []
