"""The codec's training steps: reconstruction, commitment and (once its phase starts) adversarial losses,
one AdamW step each, and the state a checkpoint needs to continue a run exactly (`CodecTrainer.state`).

Why the discriminator is there, and the measurements behind these constants: components/train_codec.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from components.codec import CodecError
from components.codec.discriminator import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses
from components.codec.losses import MultiScaleMelLoss, SpectrumLoss, waveform_l1
from components.codec.model import TrainableCodec
from model.errors import first_line
from settings.params import CodecParams

# Generator loss weights. "disc" (the discriminator's own loss) is logged but not part of the generator's.
# The commitment loss is weak on purpose: at EnCodec's weight of 1 it dominated the first steps, while the
# decoder cannot yet use what the encoder says, and pulled every frame onto one code (measured, tiny preset).
LOSS_WEIGHTS = {"l1": 1.0, "mel": 1.0, "spectrum": 1.0, "commit": 0.05, "adv": 1.0, "feat": 2.0}
BETAS = (0.5, 0.9)  # EnCodec's: a short-memory Adam suits the moving adversarial target
GRAD_CLIP = 10.0


class _Adversary:
    """The discriminator and its optimizer: each call takes a discriminator step, then returns the
    generator's adversarial and feature-matching losses on the same audio."""

    def __init__(self, learning_rate: float) -> None:
        self.discriminator = MultiScaleSTFTDiscriminator()
        self.optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=learning_rate, betas=BETAS)

    def __call__(self, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        loss = discriminator_loss(self.discriminator(real), self.discriminator(fake.detach()))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():  # feature matching treats the real audio's features as fixed targets
            real_outputs = self.discriminator(real)
        adversarial, matching = generator_losses(real_outputs, self.discriminator(fake))
        return {"disc": loss.detach(), "adv": adversarial, "feat": matching}


class CodecTrainer:
    """The codec, its optimizer, the discriminator once its phase starts, the step and each step's losses:
    everything one training step changes, so `state` and `restore` continue a run exactly."""

    def __init__(self, codec: TrainableCodec, params: CodecParams, sample_rate: int) -> None:
        self.codec, self.params = codec, params
        self.mel_loss, self.spectrum_loss = MultiScaleMelLoss(sample_rate), SpectrumLoss(sample_rate)
        self.optimizer = torch.optim.AdamW(codec.parameters(), lr=params.learning_rate, betas=BETAS)
        self.adversary: _Adversary | None = None
        self.step = 0
        self.history: list[dict[str, float]] = []
        codec.train()

    def train_step(self, audio: Tensor) -> dict[str, float]:
        """One optimizer step on `audio` [batch, 1, samples]; returns (and records) its losses."""
        params, codec = self.params, self.codec
        output = codec(audio)
        losses = {
            "l1": waveform_l1(output.audio, audio),
            "mel": self.mel_loss(output.audio, audio),
            "spectrum": self.spectrum_loss(output.audio, audio),
        }
        losses["commit"] = output.commitment
        if params.adversarial and self.step >= params.adversarial_start:
            # Built when its phase starts (its random init included), so the steps before it are exactly
            # those of a run without one.
            self.adversary = self.adversary or _Adversary(params.learning_rate)
            losses.update(self.adversary(audio, output.audio))
        total = sum(LOSS_WEIGHTS[name] * value for name, value in losses.items() if name in LOSS_WEIGHTS)
        self.optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), GRAD_CLIP)
        self.optimizer.step()
        self.step += 1
        self.history.append({name: float(value.detach()) for name, value in {**losses, "total": total}.items()})
        return self.history[-1]

    def state(self) -> dict[str, Any]:
        adversary = self.adversary
        return {
            "codec": self.codec.state_dict(),  # the quantizer's codebooks, EMA buffers and k-means flag too
            "optimizer": self.optimizer.state_dict(),
            "discriminator": adversary.discriminator.state_dict() if adversary else None,
            "discriminator_optimizer": adversary.optimizer.state_dict() if adversary else None,
            "step": self.step,
            "history": self.history,
        }

    def restore(self, state: dict[str, Any]) -> None:
        try:
            self.codec.load_state_dict(state["codec"])
            self.optimizer.load_state_dict(state["optimizer"])
            if state["discriminator"] is not None:
                self.adversary = _Adversary(self.params.learning_rate)
                self.adversary.discriminator.load_state_dict(state["discriminator"])
                self.adversary.optimizer.load_state_dict(state["discriminator_optimizer"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise CodecError(f"the codec checkpoint does not fit this codec: {first_line(error)}") from None
        self.step, self.history = state["step"], list(state["history"])


def train(
    trainer: CodecTrainer,
    batches: Iterator[Tensor],
    show_progress: bool,
    checkpoint: Callable[[], None] | None = None,
) -> None:
    """Step `trainer` to `codec.steps`, calling `checkpoint` every `codec.checkpoint_every` steps and at the end."""
    params = trainer.params
    with tqdm(total=params.steps, initial=trainer.step, desc="codec", unit="step", disable=not show_progress) as bar:
        while trainer.step < params.steps:
            losses = trainer.train_step(next(batches))
            bar.update(1)
            bar.set_postfix({name: f"{value:.3f}" for name, value in losses.items()}, refresh=False)
            if checkpoint and (trainer.step % params.checkpoint_every == 0 or trainer.step == params.steps):
                checkpoint()


def fit(
    codec: TrainableCodec,
    batches: Iterator[Tensor],
    params: CodecParams,
    sample_rate: int,
    show_progress: bool = True,
) -> list[dict[str, float]]:
    """Train `codec` for `params.steps` steps on `batches` ([batch, 1, samples]); returns each step's losses."""
    trainer = CodecTrainer(codec, params, sample_rate)
    train(trainer, batches, show_progress)
    return trainer.history
