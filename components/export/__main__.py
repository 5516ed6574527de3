"""`python -m components.export`: the export stage's command line (components/export/stage.py)."""

from components.export import app

app()
