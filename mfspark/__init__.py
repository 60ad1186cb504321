"""mfspark: matrix-factorisation recommenders for MovieLens on Apache Spark."""

__version__ = "0.1.0"
