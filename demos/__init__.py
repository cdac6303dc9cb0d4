"""Gradio demo and small demo scripts."""
