"""Helpers shared by the component cores (never imports kfp)."""
