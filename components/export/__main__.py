"""`python -m components.export`: the export stage's command line (components/export/stage.py)."""

from components.export.stage import app

app()
