"""The language-model trainer: exact resume after SIGKILL, DDP equal to one process, checkpoints that
survive failures, dvclive metrics, and clear errors."""

import errno
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from components.corpus.manifest import read_sources
from components.tokenize import TokenizeError
from components.train import train
from components.training import state as checkpoint_module
from components.training.objective import DecoderObjective
from components.training.state import STATE_FILE, CheckpointError
from model import GenerationParams, ModelInputError, MusicGenerator
from model.build import build_model
from model.delay_pattern import build_delay_pattern, valid_positions
from model.presets import DecoderPreset
from settings.data_sources import source_digests
from settings.params import TrainParams
from tests.conftest import MICRO
from tests.support.audio_folder import audio_folder
from tests.support.micro_pipeline import MICRO_DATA, MICRO_TRAIN, micro_tokens
from tests.support.micro_train import finish, killed_and_straight, start_training, trained_weights

pytestmark = pytest.mark.integration

# dropout 0: DDP processes draw dropout masks from their own RNG streams, one process from one; with it
# off, two processes and one differ only by the order gradients are summed in.


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    return micro_tokens(tmp_path_factory.mktemp("micro"))


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tokens, tmp_path):
    straight, resumed = killed_and_straight(tokens, tmp_path, MICRO_TRAIN)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_two_processes_match_one_with_the_same_global_batch(tokens, tmp_path):
    """Tolerance: after 8 AdamW steps every weight agrees within 1e-4 (gloo sums gradients in another
    order than one process does; Adam's normalisation lets those 1e-7 differences grow a little)."""
    finish(start_training(tokens, tmp_path / "one", MICRO_TRAIN))
    torchrun = (str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2")
    finish(start_training(tokens, tmp_path / "two", MICRO_TRAIN, launcher=torchrun))
    one, two = trained_weights(tmp_path / "one"), trained_weights(tmp_path / "two")
    worst = max((one[name] - two[name]).abs().max().item() for name in one)
    assert worst < 1e-4
    torch.manual_seed(0)
    initial = DecoderObjective(build_model(MICRO, codec=tokens[0], seed=0)[0]).state_dict()
    moved = max((one[name] - initial[name]).abs().max().item() for name in one)
    assert moved > 100 * worst  # the runs trained, and agree far more closely than they moved


def test_outputs_model_card_and_dvclive_metrics(tokens, tmp_path):
    codec, token_dir = tokens
    params = TrainParams(**{**MICRO_TRAIN, "steps": 6})
    report = train(token_dir, codec, tmp_path / "train", tmp_path / "model", params, preset=MICRO, show_progress=False)
    assert report.best_valid_loss < report.uniform_loss
    generator = MusicGenerator.load(tmp_path / "model")
    assert generator.card.metrics["valid_loss"] == pytest.approx(report.best_valid_loss)
    assert generator.card.data_version.startswith("md5:") and "codes.npy=" in generator.card.data_version
    assert generator.card.data_sources == {}  # the micro corpus holds no data source
    live = tmp_path / "train" / "dvclive"
    summary = json.loads((live / "metrics.json").read_text())
    assert {"train", "valid", "best_valid_loss", "unigram_loss"} <= set(summary)
    losses = (live / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert len(losses) == 1 + 6  # header and one row per step
    assert generator.generate(["jazz"], GenerationParams(duration=0.2, seed=0)).audio.shape == (1, 6400)


def test_the_model_card_lists_the_data_sources_the_corpus_held(tmp_path):
    """prepare records the sources in the corpus, tokenize carries the record, train writes it into the card."""
    sources = tmp_path / "sources"
    audio_folder(sources / "field", files=3, seconds=2.0, rate=MICRO_DATA.sample_rate, word="field")
    data = replace(MICRO_DATA, count=6, sources=["field"])
    codec, token_dir = micro_tokens(tmp_path / "micro", data, sources)
    digests = source_digests(["field"], sources)
    assert read_sources(token_dir) == digests
    params = TrainParams(**{**MICRO_TRAIN, "steps": 2, "eval_every": 2})
    train(token_dir, codec, tmp_path / "train", tmp_path / "model", params, preset=MICRO, show_progress=False)
    assert MusicGenerator.load(tmp_path / "model").card.data_sources == digests


def test_a_corrupt_checkpoint_is_named_and_a_failed_save_keeps_the_previous_one(tokens, tmp_path, monkeypatch):
    codec, token_dir = tokens
    params = TrainParams(**{**MICRO_TRAIN, "steps": 4})
    train(token_dir, codec, tmp_path / "train", tmp_path / "model", params, preset=MICRO, show_progress=False)
    last = tmp_path / "train" / "checkpoints" / "last"
    before = (last / STATE_FILE).read_bytes()

    real_save = torch.save

    def disk_full(obj, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    longer = TrainParams(**{**MICRO_TRAIN, "steps": 6})
    with pytest.raises(OSError, match="No space left"):
        train(
            token_dir,
            codec,
            tmp_path / "train",
            tmp_path / "model",
            longer,
            resume=True,
            preset=MICRO,
            show_progress=False,
        )
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert (last / STATE_FILE).read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir()) == ["best", "last"]  # no staging left behind

    (last / STATE_FILE).write_bytes(before[: len(before) // 3])
    with pytest.raises(CheckpointError, match="is corrupt"):
        train(
            token_dir,
            codec,
            tmp_path / "train",
            tmp_path / "model",
            longer,
            resume=True,
            preset=MICRO,
            show_progress=False,
        )


def test_a_checkpoint_of_another_shape_is_refused(tokens, tmp_path):
    codec, token_dir = tokens
    params = TrainParams(**{**MICRO_TRAIN, "steps": 2})
    train(token_dir, codec, tmp_path / "train", tmp_path / "model", params, preset=MICRO, show_progress=False)
    wider = MICRO.__class__(
        **{
            **MICRO.__dict__,
            "decoder": DecoderPreset(num_layers=2, hidden_size=32, num_heads=2, ffn_dim=64, max_positions=512),
        }
    )
    with pytest.raises(CheckpointError, match="hidden_size 64 in the checkpoint vs 32 now"):
        train(
            token_dir,
            codec,
            tmp_path / "train",
            tmp_path / "m2",
            params,
            resume=True,
            preset=wider,
            show_progress=False,
        )


def test_missing_tokens_and_codec_are_named(tokens, tmp_path):
    codec, token_dir = tokens
    params = TrainParams(**MICRO_TRAIN)
    with pytest.raises(TokenizeError, match=r"codes\.npy is missing"):
        train(tmp_path / "none", codec, tmp_path / "t", tmp_path / "m", params, preset=MICRO, show_progress=False)
    with pytest.raises(ModelInputError, match="no codec"):
        train(token_dir, tmp_path / "none", tmp_path / "t", tmp_path / "m", params, preset=MICRO, show_progress=False)


def test_a_dropped_caption_is_the_null_condition_with_a_position_to_attend_to():
    # A row with no text position to attend to is NaN in CUDA's fused bf16 attention; one zero state
    # gives the decoder exactly what a fully masked row gives on the CPU.
    model, _ = build_model(MICRO, seed=0)
    objective = DecoderObjective(model).eval()
    seen = []
    objective.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_attention_mask"]), with_kwargs=True
    )
    codebooks = MICRO.codec.num_codebooks
    codes = torch.randint(0, MICRO.codec.codebook_size, (2, codebooks, 12))
    states = torch.randn(2, 5, model.config.text_encoder.hidden_size)
    text_mask = torch.ones(2, 5, dtype=torch.long)
    delayed = build_delay_pattern(codes[1:], objective.special)
    targets = delayed[:, :, 1:].clone()
    targets[:, ~valid_positions(codebooks, 12 + codebooks)[:, 1:]] = -100
    with torch.no_grad():
        loss = objective(codes, states, text_mask, torch.tensor([True, False]))
        kept = objective(codes[:1], states[:1], text_mask[:1], torch.tensor([True]))
        fully_masked = objective.decoder(
            input_ids=delayed[:, :, :-1].reshape(codebooks, -1),
            encoder_hidden_states=torch.zeros(1, 5, model.config.decoder.hidden_size),
            encoder_attention_mask=torch.zeros(1, 5, dtype=torch.long),
        ).logits
    assert seen[0].sum(dim=1).min() > 0  # the objective's own call: every row attends somewhere
    dropped = torch.nn.functional.cross_entropy(
        fully_masked.reshape(-1, fully_masked.shape[-1]), targets.reshape(-1), ignore_index=-100
    )
    assert loss.item() == pytest.approx((kept.item() + dropped.item()) / 2, rel=1e-5)
