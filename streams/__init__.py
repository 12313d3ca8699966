"""mxprobe: streaming email verification (import package ``streams``)."""

__version__ = "0.1.0"
