"""musicops package."""
