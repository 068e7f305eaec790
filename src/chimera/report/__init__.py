"""Rendering only: terminal summaries and per-patient trend reports, read from the warehouse."""
