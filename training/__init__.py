"""Data, training loops and evaluation for unimask."""
