"""ClearPath Realtime benchmark suite (issue 6).

Run it with ``python -m bench`` (``--quick`` for the CI smoke run); see ``bench/README.md``.
"""

__all__: list[str] = []
