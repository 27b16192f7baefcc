"""Reusable widgets: canvases, grids and panes that own only their pixels (no app state, no jobs)."""
