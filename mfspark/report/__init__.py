"""The model report: analysis on Spark, figures (matplotlib), one self-contained HTML page."""
