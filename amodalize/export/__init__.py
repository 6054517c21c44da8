"""Converted files in the formats annotation and training tools open: one module per target."""
