"""Top-N recommendations, similar items and fold-in over a fitted model's factors."""
