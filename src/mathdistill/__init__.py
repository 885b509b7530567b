"""mathdistill: distil mathematical reasoning from a large teacher into a small student."""

__version__ = "0.1.0"
