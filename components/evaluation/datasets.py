"""The evaluation's test splits: the main corpus's, and each added data source's, reported side by side.

Clips from a data source (data.sources, `musicops data add`) carry `labels["dataset"]` with the source's name; the
main corpus's carry none. The headline metrics (FAD, adherence, quality, the settings fingerprint) stay those of
the main corpus's test split, the split the promoted model was measured on, so the gate's regression checks ask
whether the new model forgot the old data; each source's test split is reported under `new_data` beside it.
"""

from __future__ import annotations

from components.corpus.manifest import Clip

CORPUS = "corpus"  # the main corpus's name among the datasets (rendered, or data.source's folder)


def dataset_of(clip: Clip) -> str:
    """The dataset a clip belongs to: its data source's name, or CORPUS."""
    return str(clip.labels.get("dataset") or CORPUS)


def held_out_splits(clips: list[Clip], max_prompts: int) -> dict[str, list[Clip]]:
    """Per dataset, the main corpus first, its first `max_prompts` test clips (datasets without any left out)."""
    splits: dict[str, list[Clip]] = {CORPUS: []}
    for clip in clips:
        if clip.split == "test":
            split = splits.setdefault(dataset_of(clip), [])
            if len(split) < max_prompts:
                split.append(clip)
    return {name: split for name, split in splits.items() if split}
