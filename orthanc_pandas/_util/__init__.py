"""Helpers every layer may use: warnings that point at the user's line, progress bars, fan-out."""
