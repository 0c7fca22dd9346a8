"""Blind A/B comparison: votes and their statistics."""
