"""What the tests share: the repository root, micro models and pipelines, CRD schemas, synthetic traffic."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
