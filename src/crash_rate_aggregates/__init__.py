"""Daily crash-rate aggregates from browser telemetry pings."""

# The one place the version is written (pyproject.toml reads it from here): cheaper at start-up
# than asking importlib.metadata, which every run would pay for.
__version__ = "0.1.0"

__all__ = ["__version__"]
