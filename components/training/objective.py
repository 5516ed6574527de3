"""What training updates (the decoder and the text projection) and the loss it minimises.

The loss is MusicGen's: cross-entropy of each codebook's next token under the delay pattern, with
teacher forcing, ignoring the cells the pattern leaves empty. A dropped caption is the null condition
(zero states), exactly what generation feeds the unconditional half of guidance. A decoder with a
beat grid (model/beat_grid.py) also sees the grid of each caption's tempo; it is dropped with the
caption, and on its own for a share of the rest, so prompts without a tempo stay in distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import MusicgenForConditionalGeneration, PreTrainedTokenizerBase

from model.beat_grid import grid_in_forward
from model.build import text_projection
from model.delay_pattern import build_delay_pattern, valid_positions

IGNORE = -100


class TextCache:
    """The frozen text encoder's states for every caption of a split, computed once."""

    def __init__(
        self, model: MusicgenForConditionalGeneration, tokenizer: PreTrainedTokenizerBase, captions: list[str]
    ):
        states, masks = [], []
        with torch.inference_mode():
            for start in range(0, len(captions), 64):
                tokens = tokenizer(
                    captions[start : start + 64],
                    padding="max_length",
                    truncation=True,
                    max_length=64,
                    return_tensors="pt",
                    return_token_type_ids=False,
                )
                output = model.text_encoder(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
                states.append(output.last_hidden_state)
                masks.append(tokens["attention_mask"])
        self.states, self.masks = torch.cat(states), torch.cat(masks)


class DecoderObjective(nn.Module):
    """The trainable part of a MusicGen and its loss on a batch of codes."""

    def __init__(self, model: MusicgenForConditionalGeneration):
        super().__init__()
        self.decoder = model.decoder
        self.project = text_projection(model)
        self.special = model.config.decoder.vocab_size

    def forward(
        self,
        codes: torch.Tensor,
        text_states: torch.Tensor,
        text_mask: torch.Tensor,
        keep_text: torch.Tensor,
        tempi: torch.Tensor | None = None,
        starts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean next-token cross-entropy over codes [B, K, T], conditioned on text [B, S, H] / [B, S] and,
        for a decoder with a beat grid, on the grid of tempi [B] (0: none) from clip frames `starts` [B]."""
        mask = text_mask * keep_text[:, None].to(text_mask.dtype)
        states = self.project(text_states) * mask[..., None].to(text_states.dtype)
        # A dropped caption attends to one zero state rather than to none: the same output (zero states
        # give zero values, and so does a row with nothing to attend to), but CUDA's fused bf16 attention
        # gives NaN for such a row: training went NaN at its second step on an H200.
        mask = mask.clone()
        mask[:, 0] = 1
        batch, codebooks, frames = codes.shape
        delayed = build_delay_pattern(codes, self.special)
        inputs, targets = delayed[:, :, :-1], delayed[:, :, 1:].clone()
        valid = valid_positions(codebooks, frames + codebooks, codes.device)[:, 1:]
        targets[:, ~valid] = IGNORE
        # Input column c is where frame c's first codebook is predicted: it gets frame c's grid.
        with grid_in_forward(self.decoder, tempi, starts, inputs.shape[2]):
            logits = self.decoder(
                input_ids=inputs.reshape(batch * codebooks, -1),
                encoder_hidden_states=states,
                encoder_attention_mask=mask,
            ).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE)


def unigram_loss(train_codes: torch.Tensor, valid_codes: torch.Tensor, vocab: int) -> float:
    """Cross-entropy of valid codes [B, K, T] under each codebook's code frequencies in training codes
    [K, N] (add-one smoothed): the level a model that ignores context and text would reach."""
    total = 0.0
    for k in range(train_codes.shape[0]):
        counts = torch.bincount(train_codes[k].reshape(-1), minlength=vocab).double() + 1.0
        logprobs = (counts / counts.sum()).log()
        total += -logprobs[valid_codes[:, k].reshape(-1)].mean().item()
    return total / train_codes.shape[0]
