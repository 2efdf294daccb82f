"""Reproductions of the papers' findings, one module each."""
