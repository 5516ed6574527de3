"""The project's settings, defined once: params.yaml's typed sections and the artifact locations.

- `settings.params`: one frozen dataclass per params.yaml section, with every default, checked on load.
- `settings.paths`: where each stage writes under `artifacts/` (DVC's outs, the CLIs' defaults).

Every package above `model/` may import it (components, serving, monitoring, pipelines, the command); it
imports only `model` (preset and embedder names, generation defaults), so `model/` stays at the bottom.
"""
