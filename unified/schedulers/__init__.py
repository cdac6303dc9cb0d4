"""Unmasking schedulers, one per modality (diffusers-style: no model inside)."""
