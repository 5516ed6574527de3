"""`params.yaml`, read into typed sections: one dataclass per stage, unknown keys rejected by name.

Each default is defined here once: params.yaml repeats them for the reader, the CLIs and servers take them
from these classes, and generation's defaults (guidance, top-k, temperature) come from `GenerationParams`.
DVC tracks each stage's section (`params:` in dvc.yaml), so changing one section re-runs only the
stages that read it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from model.generation_params import GenerationParams
from settings import paths

T = TypeVar("T")


class ParamsError(ValueError):
    """params.yaml is missing, malformed, or has a value out of range; the message names it."""


def _check_preset(section: str, name: str) -> None:
    from model.presets import PRESETS

    if name not in PRESETS:
        raise ParamsError(f"{section}.preset {name!r} is not a preset; known presets: {', '.join(PRESETS)}")


@dataclass(frozen=True)
class DataParams:
    """The corpus: rendered offline (the default) or ingested from a folder of the user's audio."""

    source: str = "rendered"  # "rendered", or a folder of audio files to ingest
    captions: str | None = None  # ingest: a CSV or JSONL of (file, caption); None: a .txt beside each file
    seed: int = 0
    count: int = 240  # rendered clips
    clip_seconds: float = 10.0
    min_clip_seconds: float = 1.0  # ingest: a shorter tail of a file is dropped
    sample_rate: int = 32_000
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "valid": 0.1, "test": 0.1})
    audio_format: str = "flac"  # flac (lossless, about half of wav) or wav
    # The user's data sources read beside `source`: names of folders under data/sources (settings.data_sources)
    sources: list[str] = field(default_factory=list)
    # Rendered corpus only: the genres it renders, taking turns (None: every genre of components/corpus/genres.py).
    # Leaving one out gives a base model that never heard it (`musicops data render` makes it new data). The names
    # are checked where the genres are defined (components.corpus.rendered), which settings must not import.
    genres: list[str] | None = None

    def check(self) -> None:
        if set(self.splits) != {"train", "valid", "test"} or any(v < 0 for v in self.splits.values()):
            raise ParamsError(f"data.splits must give train, valid and test shares, got {self.splits}")
        if abs(sum(self.splits.values()) - 1.0) > 1e-6:
            raise ParamsError(f"data.splits must sum to 1, got {sum(self.splits.values())}")
        if self.count < 3 and self.source == "rendered":
            raise ParamsError(f"data.count must be at least 3 (one clip per split), got {self.count}")
        if not 0 < self.min_clip_seconds <= self.clip_seconds:
            raise ParamsError("data.min_clip_seconds must be positive and at most data.clip_seconds")
        if self.audio_format not in ("flac", "wav"):
            raise ParamsError(f"data.audio_format must be flac or wav, got {self.audio_format!r}")
        if self.sample_rate < 8000:
            raise ParamsError(f"data.sample_rate must be at least 8000, got {self.sample_rate}")
        if self.genres is not None and not self.genres:
            raise ParamsError("data.genres must name at least one genre, or be null for every genre")


@dataclass(frozen=True)
class ValidateParams:
    """Thresholds of the Great Expectations suite over the corpus."""

    rms_floor: float = 0.003  # a clip quieter than this (RMS, full scale 1.0) counts as silent
    max_clipped_share: float = 0.001  # share of samples at or above 0.999 full scale
    caption_min_chars: int = 10
    caption_max_chars: int = 400


@dataclass(frozen=True)
class AugmentParams:
    """Augmented copies of the training split; strength follows a curriculum over the copies."""

    seed: int = 0
    copies: int = 1  # augmented copies per training clip
    strength_start: float = 0.2  # strength of the first copy (0: untouched, 1: strongest)
    strength_end: float = 0.8  # strength of the last copy
    schedule: str = "linear"  # linear or cosine ramp between them
    probabilities: dict[str, float] = field(
        default_factory=lambda: {
            "time_stretch": 0.5,
            "pitch_shift": 0.5,
            "time_mask": 0.3,
            "frequency_mask": 0.3,
            "noise": 0.3,
            "reverb": 0.3,
            "distortion": 0.1,
            "chorus": 0.2,
            "compression": 0.3,
        }
    )
    polymix: float = 0.1  # share of copies that mix two clips and merge their captions


@dataclass(frozen=True)
class CodecParams:
    """The audio codec: trained from scratch for the preset, or a pretrained one copied through."""

    preset: str = "tiny"
    pretrained: str | None = None  # a directory with facebook/encodec_32khz's layout: copied, not trained
    seed: int = 0
    steps: int = 1000  # about 26 minutes on 2 CPU cores at the tiny preset (1.6 s a step with the discriminator)
    batch_size: int = 8
    segment_seconds: float = 1.0
    learning_rate: float = 3e-4
    adversarial: bool = True  # add a multi-scale STFT discriminator after `adversarial_start` steps
    adversarial_start: int = 0
    valid_clips: int = 8  # held-out clips for SI-SNR and mel distance
    checkpoint_every: int = 50  # steps between checkpoints a killed run resumes from (about 80 s at the tiny preset)

    def check(self) -> None:
        _check_preset("codec", self.preset)
        if self.steps < 1 or self.batch_size < 1 or self.valid_clips < 1 or self.checkpoint_every < 1:
            raise ParamsError(
                "codec.steps, codec.batch_size, codec.valid_clips and codec.checkpoint_every must be positive"
            )
        if self.segment_seconds <= 0 or self.learning_rate <= 0:
            raise ParamsError("codec.segment_seconds and codec.learning_rate must be positive")
        if self.adversarial and not 0 <= self.adversarial_start < self.steps:
            raise ParamsError(
                f"codec.adversarial_start ({self.adversarial_start}) must be from 0 to below codec.steps "
                f"({self.steps}), or the adversarial phase never starts"
            )


@dataclass(frozen=True)
class TokenizeParams:
    """Encoding the corpus (and its augmented copies) into codebook tokens."""

    batch_size: int = 8
    include_augmented: bool = True


INIT_SCRATCH = "scratch"
ADAPTERS = ("full", "lora", "frozen")


@dataclass(frozen=True)
class TrainParams:
    """The MusicGen decoder's training (text encoder frozen), as audiocraft trains it, scaled down."""

    preset: str = "tiny"
    seed: int = 0
    steps: int = 400  # about 8 minutes on 2 CPU cores at the tiny preset
    batch_size: int = 16  # the global batch, over all processes and accumulation steps
    grad_accumulation: int = 1
    segment_seconds: float = 5.0  # random crop of each clip per step
    learning_rate: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    condition_dropout: float = 0.3  # share of captions replaced by the null condition (for guidance)
    # A beat grid at the caption's tempo summed into the decoder's inputs (model/beat_grid.py).
    beat_grid: bool = False
    beat_grid_dropout: float = 0.2  # share of the kept captions trained without their grid
    dropout: float | None = None  # the decoder's dropout; None keeps the preset's
    eval_every: int = 100
    checkpoint_every: int = 50
    valid_batches: int = 4
    mixed_precision: str = "auto"  # auto (bf16 on CUDA when supported, else fp16 on CUDA, off on CPU), off
    # Where the weights start: scratch (a random decoder of `preset`), base (settings.paths.BASE_MODEL),
    # promoted (settings.paths.PROMOTED / "model"), or a model directory (ours, or facebook/musicgen-small's layout).
    init_from: str = INIT_SCRATCH
    adapter: str = "full"  # full (every decoder weight), lora (peft adapters, merged at the end), frozen (`trainable`)
    trainable: tuple[str, ...] = ("lm_heads", "embed_tokens")  # adapter frozen: the decoder parts that train
    # LoRA as ylacombe/musicgen-dreamboothing fine-tunes MusicGen: rank 16, alpha 16, dropout 0.05, on the
    # decoder's attention and feed-forward projections and, per codebook, its output heads and embeddings.
    lora_rank: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "lm_heads", "embed_tokens")
    gradient_checkpointing: bool = False  # recompute the decoder's activations in backward: less memory, more time

    def check(self) -> None:
        _check_preset("train", self.preset)
        if not self.init_from:
            raise ParamsError("train.init_from must be scratch, base, promoted or a model directory")
        if self.adapter not in ADAPTERS:
            raise ParamsError(f"train.adapter must be one of {', '.join(ADAPTERS)}, got {self.adapter!r}")
        if self.adapter != "full" and self.init_from == INIT_SCRATCH:
            raise ParamsError(
                f"train.adapter {self.adapter} trains a few weights of a trained model, but train.init_from is "
                "scratch (a random decoder): set train.init_from to base, promoted or a model directory"
            )
        if self.adapter == "frozen" and not self.trainable:
            raise ParamsError("train.adapter is frozen: train.trainable must name at least one decoder part")
        if self.adapter == "lora" and not self.lora_targets:
            raise ParamsError("train.adapter is lora: train.lora_targets must name at least one decoder module")
        if self.lora_rank < 1 or self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0:
            raise ParamsError("train.lora_rank and train.lora_alpha must be positive, train.lora_dropout in [0, 1)")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accumulation < 1:
            raise ParamsError("train.steps, train.batch_size and train.grad_accumulation must be positive")
        if self.batch_size % self.grad_accumulation:
            raise ParamsError("train.batch_size must be a multiple of train.grad_accumulation")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ParamsError(f"train.condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if not 0.0 <= self.beat_grid_dropout < 1.0:
            raise ParamsError(f"train.beat_grid_dropout must be in [0, 1), got {self.beat_grid_dropout}")
        if self.mixed_precision not in ("auto", "off"):
            raise ParamsError(f"train.mixed_precision must be auto or off, got {self.mixed_precision!r}")


@dataclass(frozen=True)
class EvaluateParams:
    """Evaluation of the trained model on held-out prompts, beside baselines, and the promotion gate."""

    seed: int = 0
    max_prompts: int = 24  # held-out test prompts (the rendered corpus holds 24)
    duration: float = GenerationParams.duration  # seconds generated per prompt (the corpus clips' length)
    guidance_scale: float = GenerationParams.guidance_scale
    temperature: float = GenerationParams.temperature
    top_k: int = GenerationParams.top_k
    batch_size: int = 8
    workers: int = 2  # processes analysing the clips (features, notes, tempo) side by side; 1: this one
    # Seconds of each real test clip the model continues (0: off); the tempo it keeps after them tells
    # a model that has not learned rhythm from one that does not read the prompt's tempo.
    continuation_seconds: float = 3.0
    embedders: tuple[str, ...] = ("mel", "encodec", "musicnn")  # FAD embedders; add "vggish" with vggish_weights
    vggish_weights: str | None = None  # a local vggish-10086976.pth (never downloaded)
    reference_clips: int = 96  # real training clips: the FAD floor and the label classifier's training set
    classifier_label: str = "genre"  # the corpus label the classifier predicts (accuracy and KL)
    classifier_embedder: str = "mel"
    report_samples: int = 8  # prompts shown with audio players and spectrograms in the report
    # The gate: a null threshold is not checked.
    gate_embedder: str = "mel"  # whose FAD the gate reads
    max_fad_ratio: float | None = 0.9  # model FAD at most this share of the untrained model's
    min_tempo_match: float | None = None  # share of prompts whose tempo the audio follows
    min_key_score: float | None = None  # MIREX key score (chance is about 0.1)
    min_label_accuracy: float | None = 0.2  # the label classifier on generated audio (chance 1/classes)
    regression_tolerance: float = 0.1  # vs the promoted model: FAD relative, shares absolute
    promoted: str = str(paths.PROMOTED)  # the promoted model's folder (`musicops promote` writes it)

    def check(self) -> None:
        from model.embedders import EMBEDDERS

        if self.max_prompts < 1 or self.batch_size < 1 or self.workers < 1 or self.reference_clips < 2:
            raise ParamsError(
                "evaluate.max_prompts, evaluate.batch_size and evaluate.workers must be positive, reference_clips >= 2"
            )
        if self.duration <= 0:
            raise ParamsError(f"evaluate.duration must be positive, got {self.duration}")
        if not 0 <= self.continuation_seconds < self.duration:
            raise ParamsError(
                f"evaluate.continuation_seconds ({self.continuation_seconds}) must be at least 0 (off) and below "
                f"evaluate.duration ({self.duration})"
            )
        unknown = sorted(set(self.embedders) - set(EMBEDDERS))
        if unknown or not self.embedders:
            raise ParamsError(f"evaluate.embedders must name some of {', '.join(EMBEDDERS)}; unknown: {unknown}")
        for name in ("gate_embedder", "classifier_embedder"):
            if getattr(self, name) not in self.embedders:
                raise ParamsError(f"evaluate.{name} ({getattr(self, name)!r}) must be one of evaluate.embedders")
        if "musicnn" in self.embedders:
            from model.musicnn import MIN_SAMPLES, SAMPLE_RATE

            if self.duration < MIN_SAMPLES / SAMPLE_RATE:
                raise ParamsError(
                    f"evaluate.embedders names musicnn, which hears {MIN_SAMPLES / SAMPLE_RATE} s patches: "
                    f"evaluate.duration ({self.duration}) must be at least that, or drop musicnn"
                )
        if "vggish" in self.embedders and not self.vggish_weights:
            raise ParamsError("evaluate.embedders names vggish: set evaluate.vggish_weights to a local weights file")
        if self.regression_tolerance < 0:
            raise ParamsError("evaluate.regression_tolerance must not be negative")


@dataclass(frozen=True)
class ExportParams:
    """ONNX export (Optimum's MusicGen layout) and the parity check every graph must pass to be published.

    A bound is on max |onnxruntime - torch| / max(1, max |torch|) over real inputs, per graph. fp32 graphs
    measure about 1e-6 (float reassociation); 1e-4 keeps a 100x margin and still catches any real defect
    (a wrong mask, position or weight moves outputs by 1e-2 or more). Dynamic INT8 quantization rounds
    every weight to 1/127 of its channel's range: the trained tiny model measures 0.006 on decoder logits
    and 0.06 on MiniLM's text states, so 0.15 catches a broken quantization, not rounding.
    """

    opset: int = 20  # the dynamo exporter's own; at 17 the codec's Pad has no down-converter, so 18 is the floor
    tolerance: float = 1e-4  # fp32 graphs
    int8: bool = True  # also write int8/: MatMul/Gemm weights QInt8, the codec decoder kept fp32
    int8_tolerance: float = 0.15
    parity_prompts: int = 3  # real prompts of different lengths, plus one empty (unconditional) prompt
    parity_steps: int = 8  # cached decoder steps checked after the prefill
    workers: int = 2  # processes exporting graphs side by side (each holds a copy of the model); 1: this one

    def check(self) -> None:
        if self.workers < 1:
            raise ParamsError(f"export.workers must be at least 1, got {self.workers}")
        if self.opset < 18:
            raise ParamsError(f"export.opset must be at least 18, got {self.opset}")
        if not 0 < self.tolerance <= self.int8_tolerance:
            raise ParamsError("export.tolerance must be positive and at most export.int8_tolerance")
        if not 1 <= self.parity_prompts <= 4 or self.parity_steps < 1:
            raise ParamsError("export.parity_prompts must be 1 to 4 and export.parity_steps positive")


@dataclass(frozen=True)
class TritonSettings:
    """How the repository serves the model: the `triton:` section of params.yaml."""

    model_name: str = "musicgen"  # the streaming model clients call
    instance_kind: str = "cpu"  # cpu or gpu: where the four ONNX models run
    instance_count: int = 1  # instances of each ONNX model (on each GPU with gpu)
    generator_instances: int = 1  # musicgen instances: concurrent streams
    text_encoder_max_batch_size: int = 16  # 0: no dynamic batching; also caps one request's batch
    codec_decoder_max_batch_size: int = 0  # the export's audio_codes has its chunk axis first: see the docstring
    max_queue_delay_microseconds: int = 2000  # how long a batchable request waits for company
    intra_op_threads: int = 0  # ONNX Runtime threads per instance; 0: one per core
    chunk_frames: int = 25  # decoder frames per streamed audio chunk (50 frames a second)
    link: bool = True  # hard-link graphs when on the same filesystem (they are never written in place)
    python_env: str | None = None  # EXECUTION_ENV_PATH of the musicgen model: a conda-pack archive with musicops

    def check(self) -> None:
        """Raise ParamsError naming the first setting out of range."""
        if self.instance_kind not in ("cpu", "gpu"):
            raise ParamsError(f"triton.instance_kind must be cpu or gpu, got {self.instance_kind!r}")
        if self.instance_count < 1 or self.generator_instances < 1:
            raise ParamsError("triton.instance_count and triton.generator_instances must be at least 1")
        if self.text_encoder_max_batch_size < 0 or self.codec_decoder_max_batch_size < 0:
            raise ParamsError("triton max batch sizes must be 0 (no batching) or positive")
        if self.max_queue_delay_microseconds < 0 or self.intra_op_threads < 0:
            raise ParamsError("triton.max_queue_delay_microseconds and triton.intra_op_threads must not be negative")
        if self.chunk_frames < 1:
            raise ParamsError(f"triton.chunk_frames must be at least 1, got {self.chunk_frames}")
        if not self.model_name.replace("_", "").replace("-", "").isalnum():
            raise ParamsError(f"triton.model_name must be letters, digits, - and _, got {self.model_name!r}")
        from model.onnx_backend import TRITON_MODEL_NAMES  # imported here: it loads torch

        if self.model_name in TRITON_MODEL_NAMES.values():
            raise ParamsError(f"triton.model_name {self.model_name!r} is taken by one of the ONNX models")


ROLLOUTS = ("rolling", "canary")


@dataclass(frozen=True)
class DeployParams:
    """How the pipeline's deploy step replaces the served model (components/cluster/rollout.py).

    rolling: KServe's Standard mode, where the predictor's Deployment starts a new pod before it stops an old one.
    canary: KServe's Serverless (Knative) mode, the only one that splits traffic between revisions: the new model
    takes `canary_percent` of the requests until its revision is ready, then all of them, or none when it fails.
    It needs Knative Serving and the runtime of k8s/overlays/canary (one container port).
    """

    rollout: str = "rolling"
    canary_percent: int = 10

    def check(self) -> None:
        if self.rollout not in ROLLOUTS:
            raise ParamsError(f"deploy.rollout must be one of {', '.join(ROLLOUTS)}, got {self.rollout!r}")
        # 0 would send the canary nothing to prove itself on, and 100 is no canary at all.
        if not 1 <= self.canary_percent <= 99:
            raise ParamsError(f"deploy.canary_percent must be 1 to 99, got {self.canary_percent}")


@dataclass(frozen=True)
class MonitorParams:
    """Monitoring (monitoring/): the request log, the drift check's thresholds and the retraining it starts."""

    log_dir: str = str(paths.REQUEST_LOG)  # the request log (Parquet part files)
    reference: str = str(paths.EVALUATION)  # the evaluation whose held-out prompts and samples are the reference
    workspace: str = str(paths.MONITOR_WORKSPACE)  # the Evidently workspace the dashboard shows
    window: str = "1h"  # the traffic a check or report compares with the reference
    min_rows: int = 30  # fewer requests in the window: no verdict
    # Share of drifted features, prompt and audio features apart, that raises the alarm: a shift in prompts
    # alone moves at most 9 of the 20 features, and unseen genres move the 4 embedding components of 9.
    max_drift_share: float = 0.4
    max_fad_ratio: float | None = 2.0  # window FAD at most this times the evaluation's (the same embedder)
    cooldown: str = "24h"  # after a retraining starts, the same alarm does not start another
    retrain: str = "dvc"  # dvc (`dvc repro` here) or kfp (`musicops pipeline submit` to kfp_host)
    kfp_host: str | None = None
    flush_rows: int = 32  # the logger writes a part file every flush_rows rows or flush_seconds
    flush_seconds: float = 5.0

    def check(self) -> None:
        if not 0 < self.max_drift_share <= 1:
            raise ParamsError(f"monitor.max_drift_share must be in (0, 1], got {self.max_drift_share}")
        if self.max_fad_ratio is not None and self.max_fad_ratio <= 0:
            raise ParamsError(f"monitor.max_fad_ratio must be positive or null, got {self.max_fad_ratio}")
        if self.retrain not in ("dvc", "kfp"):
            raise ParamsError(f"monitor.retrain must be dvc or kfp, got {self.retrain!r}")
        if self.retrain == "kfp" and not self.kfp_host:
            raise ParamsError("monitor.retrain is kfp: set monitor.kfp_host to the Kubeflow Pipelines API")
        if self.min_rows < 1 or self.flush_rows < 1 or self.flush_seconds <= 0:
            raise ParamsError("monitor.min_rows, monitor.flush_rows and monitor.flush_seconds must be positive")


@dataclass(frozen=True)
class ServeSettings:
    """`musicops serve`'s own switches. Not a params.yaml section: no stage reads them, and changing one must not
    make DVC or the cluster's copy of params.yaml think the pipeline's parameters changed."""

    # Seconds between checks of the served model's folder for a replacement (`musicops promote`); 0: never.
    reload_interval_s: float = 5.0


SECTIONS = {
    "data": DataParams,
    "validate": ValidateParams,
    "augment": AugmentParams,
    "codec": CodecParams,
    "tokenize": TokenizeParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "triton": TritonSettings,
    "export": ExportParams,
    "deploy": DeployParams,
    "monitor": MonitorParams,
}


def _section(cls: type[T], raw: Any, name: str) -> T:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"params section {name!r} must be a mapping")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ParamsError(f"unknown key(s) in params section {name!r}: {', '.join(unknown)}")
    try:
        value = cls(**raw)
    except TypeError as error:
        raise ParamsError(f"params section {name!r}: {error}") from None
    check = getattr(value, "check", None)
    if check:
        check()
    return value


def load_section(path: str | Path, name: str) -> Any:
    """One section of params.yaml as its dataclass (defaults where the file is silent)."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"params file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"params file {path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ParamsError(f"params file {path} must be a mapping of sections")
    return section_from(document, name)


def section_from(document: dict[str, Any], name: str) -> Any:
    """One section of a params document (params.yaml's contents) as its dataclass."""
    if not isinstance(document, dict):
        raise ParamsError(f"params must be a mapping of sections, got {type(document).__name__}")
    return _section(SECTIONS[name], document.get(name), name)


def section_text(text: str, name: str) -> Any:
    """One section given as JSON text, as the Kubeflow pipeline passes it to a step (a KFP dict parameter
    cannot hold params.yaml's nulls, and a step that receives only its sections is re-run only when they change)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ParamsError(f"params section {name!r} is not valid JSON: {error}") from None
    return _section(SECTIONS[name], raw, name)


def with_overrides(document: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` with dotted keys set ("train.preset": "small"), every section then checked.

    The pipeline's run parameters (preset, data source, gate thresholds) reach the stages this way, so a
    bad value fails the first step with the key's name instead of a stage an hour later."""
    merged = json.loads(json.dumps(document))  # a deep copy that also proves the document is plain JSON
    for key, value in overrides.items():
        section, _, field_name = key.partition(".")
        if section not in SECTIONS or not field_name:
            raise ParamsError(f"override {key!r} must be section.key with a section of {', '.join(SECTIONS)}")
        if field_name not in {f.name for f in fields(SECTIONS[section])}:
            raise ParamsError(f"override {key!r}: params section {section!r} has no key {field_name!r}")
        merged.setdefault(section, {})
        merged[section] = {**(merged[section] or {}), field_name: value}
    for name in SECTIONS:
        section_from(merged, name)
    return merged


def fingerprint(*sections: Any) -> str:
    """A short hash of parameter sections: names a resumable staging folder for exactly these values."""
    blob = json.dumps([asdict(s) for s in sections], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
