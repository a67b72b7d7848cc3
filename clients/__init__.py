"""Clients of ClearPath Realtime: the Python SDK, the ``clearpath`` CLI and the simulator."""
