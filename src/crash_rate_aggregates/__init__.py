"""Daily crash-rate aggregates from browser telemetry pings."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crash-rate-aggregates")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
