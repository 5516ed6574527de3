"""Stage `train`: the MusicGen decoder on codec tokens, text encoder frozen, as audiocraft trains it.

    python -m components.train --params params.yaml [--resume]
    torchrun --nproc_per_node 2 -m components.train --params params.yaml   # DDP: gloo on CPU, NCCL on GPU

Teacher forcing under the delay pattern; condition dropout so classifier-free guidance works; AdamW
with warmup and cosine decay, gradient clipping and accumulation, mixed precision on GPUs. Metrics go
to dvclive (`dvc plots show`, `dvc metrics diff`). Checkpoints `last` and `best` (validation loss) are
written atomically; `--resume` continues from `last` exactly (weights, optimizer, scheduler, RNG and
data position), so a killed run ends with the same weights as one that never stopped. The best
weights are saved at the end as a Hugging Face model directory with its card.

`train.init_from` picks the starting weights (a random decoder of the preset, or a model directory:
components/training/start.py) and `train.adapter` what trains (everything, LoRA adapters merged into the
published model at the end, or named parts: components/training/adapters.py).
"""

from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.distributed as dist
import typer
from tqdm import tqdm

from components.corpus.manifest import read_sources
from components.tokenize import TokenizeError, read_tokens
from components.training.adapters import apply_adapter, save_adapter
from components.training.batches import Batch, TokenCrops
from components.training.objective import DecoderObjective, TextCache, unigram_loss
from components.training.provenance import data_version, git_commit
from components.training.start import Start, check_tokens_fit, load_start
from components.training.state import CheckpointError, load_checkpoint, save_checkpoint
from model.beat_grid import attach_beat_grid, beat_grid_of, prompt_tempi
from model.checkpoint import ModelCard, save_model
from model.errors import ModelInputError, first_line
from model.presets import Preset, get_preset
from settings import paths
from settings.params import ParamsError, TrainParams, load_section


@dataclass
class TrainReport:
    steps: int
    best_valid_loss: float
    final_valid_loss: float
    uniform_loss: float  # ln(codebook size): a model that knows nothing
    unigram_loss: float  # per-codebook code frequencies: a model that ignores context and text
    seconds: float
    model_dir: Path


@dataclass
class _Runtime:
    rank: int
    world: int
    device: torch.device

    @property
    def leader(self) -> bool:
        return self.rank == 0


def _runtime() -> _Runtime:
    """One process, or one of torchrun's: gloo on CPU, NCCL on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    return _Runtime(rank, world, device)


def warmup_cosine(warmup: int, total: int):
    """Learning-rate factor: linear warmup to 1, then cosine decay to 0 at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _autocast(params: TrainParams, device: torch.device):
    """Mixed precision where the device has it: bf16 (or fp16 with loss scaling) on CUDA, off on CPU."""
    if params.mixed_precision == "off" or device.type != "cuda":
        return None, False
    return (torch.bfloat16, False) if torch.cuda.is_bf16_supported() else (torch.float16, True)


class _Trainer:
    def __init__(self, params: TrainParams, preset: Preset, tokens_dir: Path, codec_dir: Path, runtime: _Runtime):
        self.params, self.runtime, self.preset = params, runtime, preset
        codes, index, info = read_tokens(tokens_dir)
        frames = round(params.segment_seconds * info["frame_rate"])
        self.train_set = TokenCrops(codes, [c for c in index if c.split == "train"], frames)
        self.valid_set = TokenCrops(codes, [c for c in index if c.split == "valid"], frames)
        if params.batch_size % (runtime.world * params.grad_accumulation):
            raise ParamsError("train.batch_size must divide by (processes x grad_accumulation)")
        torch.manual_seed(params.seed)
        self.start: Start = load_start(params, preset, codec_dir)
        self.model, self.processor = self.start.model, self.start.processor
        new_grid = ()
        if params.beat_grid and beat_grid_of(self.model.decoder) is None:  # a loaded model may bring its own
            new_grid = (attach_beat_grid(self.model.decoder, info["frame_rate"]),)
        vocab = self.model.config.decoder.vocab_size
        check_tokens_fit(info, self.start, preset, tokens_dir)
        self.model.text_encoder.requires_grad_(False)
        self.model.audio_encoder.requires_grad_(False)
        # Before the objective: LoRA replaces the text projection when it is a target.
        self.peft_model = apply_adapter(self.model, params, new_grid)
        if params.gradient_checkpointing:
            # Non-reentrant: it needs no input that requires grad (frozen embeddings under LoRA give none).
            self.model.decoder.activation_checkpointing_enable({"use_reentrant": False})
        tokenizer = self.processor.tokenizer
        self.text = {
            "train": TextCache(self.model, tokenizer, [c.caption for c in self.train_set.clips]),
            "valid": TextCache(self.model, tokenizer, [c.caption for c in self.valid_set.clips]),
        }
        self.tempi = {
            "train": prompt_tempi([c.caption for c in self.train_set.clips]),
            "valid": prompt_tempi([c.caption for c in self.valid_set.clips]),
        }
        self.objective = DecoderObjective(self.model).to(runtime.device)
        self.wrapped = (
            torch.nn.parallel.DistributedDataParallel(self.objective) if runtime.world > 1 else self.objective
        )
        self.trained = [p for p in self.objective.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trained,
            lr=params.learning_rate,
            betas=tuple(params.betas),
            weight_decay=params.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(params.warmup_steps, params.steps)
        )
        self.amp_dtype, scaled = _autocast(params, runtime.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaled)
        self.valid_batches = self.valid_set.validation_batches(params.batch_size, params.valid_batches, params.seed)
        self.step, self.best = 0, math.inf
        self.shape = {
            "num_layers": self.model.config.decoder.num_hidden_layers,
            "hidden_size": self.model.config.decoder.hidden_size,
            "num_codebooks": self.model.config.decoder.num_codebooks,
            "codebook_size": vocab,
            "text_hidden_size": self.model.config.text_encoder.hidden_size,
            # Keys only where they apply: older checkpoints have none of them.
            **({"beat_grid": True} if beat_grid_of(self.model.decoder) is not None else {}),
            **({"adapter": params.adapter} if params.adapter != "full" else {}),
            **({"start_weights": self.start.weights_sha256} if self.start.weights_sha256 else {}),
        }

    def _loss(self, module, batch: Batch, split: str) -> torch.Tensor:
        text = self.text[split]
        device = self.runtime.device
        autocast = torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()
        with autocast:
            return module(
                batch.codes.to(device),
                text.states[batch.clips].to(device),
                text.masks[batch.clips].to(device),
                batch.keep_text.to(device),
                self.tempi[split][batch.clips] * batch.keep_grid,
                batch.starts,
            )

    def train_step(self) -> float:
        params, runtime = self.params, self.runtime
        self.objective.train()
        batch = self.train_set.training_batch(
            self.step,
            params.batch_size,
            runtime.rank,
            runtime.world,
            params.seed,
            params.condition_dropout,
            params.beat_grid_dropout,
        )
        parts = params.grad_accumulation
        size = len(batch.clips) // parts
        total = 0.0
        for part in range(parts):
            piece = slice(part * size, (part + 1) * size)
            micro = Batch(*(getattr(batch, f.name)[piece] for f in fields(Batch)))
            last = part == parts - 1
            sync = self.wrapped.no_sync() if runtime.world > 1 and not last else nullcontext()
            with sync:
                loss = self._loss(self.wrapped, micro, "train") / parts
                self.scaler.scale(loss).backward()
            total += loss.item()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.trained, params.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if runtime.world > 1:  # report the global batch's loss, not this process's share
            value = torch.tensor([total], device=runtime.device)
            dist.all_reduce(value)
            total = value.item() / runtime.world
        return total

    @torch.no_grad()
    def validate(self) -> float:
        self.objective.eval()
        losses = [self._loss(self.objective, batch, "valid").item() for batch in self.valid_batches]
        return sum(losses) / len(losses)

    def weights(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps of the model: everything in full training, else the weights that train
        (the rest is the starting model's, loaded again on resume)."""
        if self.params.adapter == "full":
            return self.objective.state_dict()
        return {name: p.detach().clone() for name, p in self.objective.named_parameters() if p.requires_grad}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        if self.params.adapter == "full":
            self.objective.load_state_dict(weights)
            return
        trained = {name for name, p in self.objective.named_parameters() if p.requires_grad}
        if set(weights) != trained:
            raise RuntimeError(f"it holds {len(weights)} trained tensors, this run trains {len(trained)}")
        self.objective.load_state_dict(weights, strict=False)

    def state(self) -> dict[str, Any]:
        return {
            "objective": self.weights(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "step": self.step,
            "best": self.best,
        }

    def restore(self, state: dict[str, Any]) -> None:
        try:
            self.load_weights(state["objective"])
        except RuntimeError as error:
            raise CheckpointError(f"checkpoint weights do not fit this model: {first_line(error)}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.best = state["step"], state["best"]


def _baselines(trainer: _Trainer) -> tuple[float, float]:
    vocab = trainer.model.config.decoder.vocab_size
    train = trainer.train_set
    train_codes = torch.cat(
        [torch.from_numpy(train.codes[:, c.offset : c.offset + c.frames].astype("int64")) for c in train.clips], dim=1
    )
    valid_codes = torch.cat([batch.codes for batch in trainer.valid_batches])
    return math.log(vocab), unigram_loss(train_codes, valid_codes, vocab)


def train(
    tokens_dir: Path,
    codec_dir: Path,
    out_dir: Path,
    model_dir: Path,
    params: TrainParams,
    resume: bool = False,
    preset: Preset | None = None,
    show_progress: bool = True,
) -> TrainReport:
    """Train the decoder; checkpoints and dvclive logs under `out_dir`, the best model in `model_dir`."""
    params.check()
    runtime = _runtime()
    preset = preset or get_preset(params.preset)
    if params.dropout is not None:
        preset = replace(preset, decoder=replace(preset.decoder, dropout=params.dropout))
    started = time.perf_counter()
    trainer = _Trainer(params, preset, tokens_dir, codec_dir, runtime)
    checkpoints = out_dir / "checkpoints"
    if resume and (checkpoints / "last").is_dir():
        state, _ = load_checkpoint(checkpoints / "last", trainer.shape)
        trainer.restore(state)
    uniform, unigram = _baselines(trainer)
    meta = {
        "params": asdict(params),
        "preset": preset.name if trainer.start.card is None else trainer.start.card.preset,
        **(
            {"start": {"directory": str(trainer.start.directory), "weights_sha256": trainer.start.weights_sha256}}
            if trainer.start.directory
            else {}
        ),
        "decoder_shape": trainer.shape,
        "data_version": data_version(tokens_dir),
        "data_sources": read_sources(tokens_dir),  # the tokenize stage carried the corpus's sources.json here
        "training_commit": git_commit(),
        "baselines": {"uniform": uniform, "unigram": unigram},
    }
    live = None
    if runtime.leader:
        from dvclive import Live

        live = Live(dir=str(out_dir / "dvclive"), resume=resume and trainer.step > 0, save_dvc_exp=False, dvcyaml=None)
    bar = tqdm(
        total=params.steps,
        initial=trainer.step,
        desc="train",
        unit="step",
        disable=not (show_progress and runtime.leader),
    )
    valid = math.nan
    while trainer.step < params.steps:
        loss = trainer.train_step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", valid=f"{valid:.3f}")
        if live:
            live.step = trainer.step
            live.log_metric("train/loss", loss)
            live.log_metric("train/lr", trainer.scheduler.get_last_lr()[0])
        last = trainer.step == params.steps
        if trainer.step % params.eval_every == 0 or last:
            valid = trainer.validate()
            if live:
                live.log_metric("valid/loss", valid)
            if valid < trainer.best:
                trainer.best = valid
                if runtime.leader:
                    save_checkpoint(
                        checkpoints / "best", trainer.state(), {**meta, "step": trainer.step, "valid_loss": valid}
                    )
        if (trainer.step % params.checkpoint_every == 0 or last) and runtime.leader:
            save_checkpoint(checkpoints / "last", trainer.state(), {**meta, "step": trainer.step, "valid_loss": valid})
        if live:
            live.next_step()
    bar.close()
    if math.isnan(valid):  # resumed at the end: nothing trained in this run
        valid = trainer.validate()
    report = TrainReport(params.steps, trainer.best, valid, uniform, unigram, time.perf_counter() - started, model_dir)
    if runtime.leader:
        _export_best(trainer, checkpoints / "best", out_dir, model_dir, meta, report)
        if live:
            for name, value in (
                ("best_valid_loss", report.best_valid_loss),
                ("uniform_loss", uniform),
                ("unigram_loss", unigram),
            ):
                live.summary[name] = value
            live.end()
    if runtime.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return report


def _meta(meta: dict[str, Any], trainer: _Trainer, valid: float) -> dict[str, Any]:
    return {**meta, "step": trainer.step, "valid_loss": valid, "best_valid_loss": trainer.best}


def _export_best(
    trainer: _Trainer, best: Path, out_dir: Path, model_dir: Path, meta: dict[str, Any], report: TrainReport
) -> None:
    """The best checkpoint's weights as a Hugging Face MusicGen directory with its model card; under LoRA
    the adapter in PEFT's format in `out_dir`/adapter too, and the merged model in `model_dir`."""
    state, best_meta = load_checkpoint(best, trainer.shape)
    trainer.load_weights(state["objective"])
    provenance = dict(
        data_version="md5:" + ",".join(f"{k}={v[:12]}" for k, v in meta["data_version"].items()),
        data_sources=meta["data_sources"],
        training_commit=meta["training_commit"],
        started_from=str(trainer.start.directory) if trainer.start.directory else None,
        started_from_sha256=trainer.start.weights_sha256,
        metrics={
            "valid_loss": report.best_valid_loss,
            "uniform_loss": report.uniform_loss,
            "unigram_loss": report.unigram_loss,
            "step": float(best_meta["step"]),
        },
    )
    start = trainer.start
    if start.card is None:
        card = ModelCard.for_preset(trainer.preset, **provenance)
    else:  # the starting model's limits, this run's provenance
        kept = {k: v for k, v in asdict(start.card).items() if k not in ("created", *provenance)}
        kept["notes"] = (
            f"trained from {start.directory} (sha256 {start.weights_sha256[:12]}), adapter {trainer.params.adapter}"
        )
        card = ModelCard(**kept, **provenance)
    model = trainer.model.to("cpu")
    if trainer.peft_model is not None:
        save_adapter(trainer.peft_model, start.directory, start.weights_sha256, out_dir)
        model = trainer.peft_model.merge_and_unload()  # plain MusicGen: downstream stages need no peft
    save_model(model, trainer.processor, model_dir, card)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    params: Annotated[Path, typer.Option(help="params.yaml: reads its train section.")] = paths.PARAMS,
    tokens: Annotated[Path, typer.Option(help="The tokenize stage's output.")] = paths.TOKENS,
    codec: Annotated[Path, typer.Option(help="The codec the tokens were made with.")] = paths.CODEC,
    out: Annotated[Path, typer.Option(help="Checkpoints (last, best) and dvclive logs.")] = paths.TRAIN,
    model: Annotated[Path, typer.Option(help="Where the best model is saved (Hugging Face format).")] = paths.MODEL,
    resume: Annotated[bool, typer.Option("--resume", help="Continue exactly from the last checkpoint.")] = False,
) -> None:
    """Train the MusicGen decoder on codec tokens (single process, or one of torchrun's)."""
    try:
        report = train(tokens, codec, out, model, load_section(params, "train"), resume=resume)
    except (ParamsError, TokenizeError, CheckpointError, ModelInputError) as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(
            f"trained {report.steps} steps in {report.seconds / 60:.1f} min: validation loss "
            f"{report.best_valid_loss:.3f} (untrained level ln V = {report.uniform_loss:.3f}, unigram "
            f"{report.unigram_loss:.3f}); model in {model}"
        )


if __name__ == "__main__":
    app()
