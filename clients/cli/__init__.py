"""The ``clearpath`` command line."""
