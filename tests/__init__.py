"""musicops tests: unit, integration and end-to-end (see pyproject markers)."""
