"""Compiled hot path of the SFU (see src/ for the C core and _engine.pyx)."""
