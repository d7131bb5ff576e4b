"""ttsd: a text-to-speech service built for high concurrency."""

__version__ = "0.1.0"
