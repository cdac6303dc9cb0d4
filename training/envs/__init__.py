"""Simulated environments a unimask policy runs in."""
