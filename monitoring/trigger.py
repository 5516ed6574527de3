"""The drift check: compare the last window of served traffic with the reference, give a verdict, and start a
retraining when it drifted (once per cool-down for the same drift).

Verdicts: "no data" (fewer than `min_rows` requests in the window), "ok", or "drift" with its reasons:

- the drift share within the prompt features or within the audio features reaches `max_drift_share` (shares
  are taken per group: users asking in another language move only the prompt features, and the share over all
  features would dilute that with the unchanged audio features);
- the window's FAD (mel) exceeds `max_fad_ratio` times the evaluation's FAD, both against the real held-out
  audio's statistics (monitoring.quality).

A retraining starts only when there is data the promoted model has not seen (`unseen`: the data sources of
settings.data_sources that its card does not list with their current digest, or a function that finds them,
asked only on drift: digesting the sources reads every audio byte): a drift no data can fix is reported with
what to add instead. Retraining is `dvc repro` in the repository, or, with a promoted model to
start from, `dvc exp run -S train.init_from=promoted`, which fine-tunes it on the data as it is now (started in
the background; its output goes to a log file beside the state file), or `musicops pipeline submit --host
KFP_HOST` (waited for: it only uploads a run). Monitoring
does not import the pipelines: both run as subprocesses. A JSON state file keeps the last trigger's time and
its drift signature (the groups that drifted, and "fad"): within `cooldown` of it, a drift whose signature is
covered by the last one is held back; a new kind of drift, or any drift after the cool-down, starts another.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from model.atomic_io import atomic_file
from monitoring.drift import drift_report, feature_group
from monitoring.explain import explain
from monitoring.quality import FadReference, window_fad
from monitoring.request_log import part_files, read_log
from monitoring.schema import DRIFT_FEATURES

RETRAIN_KINDS = ("dvc", "kfp")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

Launcher = Callable[[str, str | None], str]  # (kind, kfp_host) -> what was started, one line
# The data sources the promoted model has not seen (None: no promoted model), or a function that finds them.
Unseen = Sequence[str] | Callable[[], Sequence[str] | None] | None


class RetrainError(RuntimeError):
    """Retraining could not be started; the message says why."""


def parse_duration(text: str | timedelta) -> timedelta:
    """ "30m", "1h", "2d", "1h30m", "90s", "1w" -> timedelta (a bare number is seconds)."""
    if isinstance(text, timedelta):
        return text
    spec = str(text).strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", spec):
        return timedelta(seconds=float(spec))
    parts = _DURATION.findall(spec)
    if not parts or _DURATION.sub("", spec).strip():
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 1h, 2d or 1h30m)")
    duration = sum((timedelta(**{_UNITS[unit]: float(number)}) for number, unit in parts), timedelta())
    if duration <= timedelta(0):
        raise ValueError(f"a duration must be positive, got {text!r}")
    return duration


def _utc(moment: datetime) -> datetime:
    # Naive times are taken as UTC, the request log's zone.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_window(log: str | Path | pd.DataFrame, since: datetime, until: datetime) -> pd.DataFrame:
    """The logged requests with since <= time < until, from a log folder or an already loaded frame; a folder
    with no part file raises FileNotFoundError saying how to get one."""
    if not isinstance(log, pd.DataFrame):
        if not part_files(log):
            raise FileNotFoundError(f"no request log in {log}: serve some traffic first (`musicops serve`)")
        return read_log(log, since, until)
    if log.empty:
        return log
    times = pd.to_datetime(log["time"], utc=True)
    return log[(times >= pd.Timestamp(_utc(since))) & (times < pd.Timestamp(_utc(until)))].reset_index(drop=True)


@dataclass
class CheckResult:
    """What one check found and did."""

    verdict: str  # "no data", "ok" or "drift"
    rows: int
    window: timedelta
    reasons: list[str] = field(default_factory=list)
    drift_share: float | None = None
    group_shares: dict[str, float] = field(default_factory=dict)
    drifted: list[str] = field(default_factory=list)
    window_fad: float | None = None
    fad_ratio: float | None = None
    signature: list[str] = field(default_factory=list)
    # "not needed", "started", "held back", "no new data", "dry run" or "failed"
    retraining: str = "not needed"
    detail: str = ""  # the command started, or why it was held back or failed
    explanation: list[str] = field(default_factory=list)  # on drift: what drifted, in words (monitoring.explain)

    @property
    def exit_code(self) -> int:
        """1 on drift, else 0 (a quiet window is not a failure)."""
        return 1 if self.verdict == "drift" else 0

    def line(self) -> str:
        """The verdict in one line, for logs and the CronJob's output."""
        text = f"{self.verdict}: {self.rows} requests in the last {_format(self.window)}"
        if self.reasons:
            text += "; " + "; ".join(self.reasons)
        elif self.drift_share is not None:
            text += f"; drift share {self.drift_share:.2f}"
            if self.fad_ratio is not None:
                text += f", FAD ratio {self.fad_ratio:.2f}"
        if self.verdict == "drift":
            text += f"; retraining {self.retraining}" + (f" ({self.detail})" if self.detail else "")
        return text


def _format(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _read_state(path: Path) -> dict | None:
    try:
        state = json.loads(path.read_text())
        return {"time": datetime.fromisoformat(state["time"]), "signature": list(state["signature"])}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None  # unreadable state: better one retraining too many than a drift never acted on


def _write_state(path: Path, now: datetime, signature: list[str], detail: str) -> None:
    state = {"time": now.isoformat(), "signature": signature, "started": detail}
    with atomic_file(path) as handle:
        handle.write((json.dumps(state, indent=1) + "\n").encode())


FINE_TUNE = "train.init_from=promoted"  # the parameter a fine-tuning retraining sets (dvc exp run -S)
ADD_DATA = "musicops data add FOLDER --captions FILE"


def retrain_command(kind: str, kfp_host: str | None = None, fine_tune: bool = False) -> tuple[list[str], str]:
    """The command a retraining runs (in the repository root), and how to show it. `fine_tune` starts training
    from the promoted model (a DVC experiment that sets train.init_from) rather than from params.yaml's start."""
    if kind == "dvc":
        if fine_tune:
            return [sys.executable, "-m", "dvc", "exp", "run", "-S", FINE_TUNE], f"dvc exp run -S {FINE_TUNE}"
        return [sys.executable, "-m", "dvc", "repro"], "dvc repro"
    if kind == "kfp":
        if not kfp_host:
            raise RetrainError("retraining on Kubeflow needs the pipelines API host (monitor.kfp_host)")
        shown = f"musicops pipeline submit --host {kfp_host}"
        return [sys.executable, "-m", "musicops.cli", "pipeline", "submit", "--host", kfp_host], shown
    raise RetrainError(f"unknown retraining kind {kind!r}; use one of {RETRAIN_KINDS}")


def dvc_environment() -> dict[str, str]:
    """The environment `dvc repro` and `dvc exp run` need: the stages call `python -m components...`, so this
    interpreter's environment comes first on PATH (a CronJob or a shell may run the venv's musicops unactivated)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def start_retraining(
    kind: str,
    kfp_host: str | None = None,
    cwd: str | Path | None = None,
    log_file: str | Path | None = None,
    fine_tune: bool = False,
) -> str:
    """Start a retraining in `cwd` (default: the working directory, the repository root where dvc.yaml and
    params.yaml are); return one line saying what was started. DVC runs in the background (it takes as long as
    training does) with its output in `log_file`; a Kubeflow submission is waited for."""
    command, shown = retrain_command(kind, kfp_host, fine_tune)
    cwd = Path(cwd) if cwd else Path.cwd()
    if kind == "kfp":
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()[-1]
            raise RetrainError(f"`{shown}` failed: {last}")
        return f"{shown}: {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else 'submitted'}"
    log = Path(log_file) if log_file else cwd / "artifacts" / "monitoring" / "retrain.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        # A new session: the retraining outlives the check (a CronJob's pod or a terminal that closes).
        process = subprocess.Popen(
            command, cwd=cwd, env=dvc_environment(), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    return f"{shown} (pid {process.pid}, output in {log})"


def _on(unseen: Sequence[str] | None) -> str:
    return f" on new data: {', '.join(unseen)}" if unseen else ""


def check(
    log: str | Path | pd.DataFrame,
    reference: pd.DataFrame,
    *,
    window: str | timedelta = "1h",
    min_rows: int = 30,
    max_drift_share: float = 0.5,
    fad_reference: FadReference | None = None,
    max_fad_ratio: float | None = 2.0,
    state_file: str | Path | None = None,
    cooldown: str | timedelta = "24h",
    retrain: str = "dvc",
    kfp_host: str | None = None,
    dry_run: bool = False,
    launcher: Launcher | None = None,
    now: datetime | None = None,
    features: Sequence[str] = DRIFT_FEATURES,
    unseen: Unseen = None,
) -> CheckResult:
    """Check the window of `log` (a request-log folder or a loaded frame) ending at `now` against `reference`.

    On drift, retraining starts through `launcher(kind, kfp_host)` (default `start_retraining`) unless there is
    no new data (`unseen` given and empty: the data sources the promoted model has not seen), the cool-down holds
    it back or `dry_run` is set; only a started retraining is written to `state_file`. `unseen` None: no
    promoted model to compare with, so any drift may retrain. `unseen` may be a function returning either; it
    is called once, only on drift, so a check that finds none does not digest the data sources.
    """
    span = parse_duration(window)
    now = _utc(now or datetime.now(UTC))
    current = read_window(log, now - span, now)
    result = CheckResult(verdict="no data", rows=len(current), window=span)
    if len(current) < min_rows:
        result.reasons.append(f"fewer than {min_rows} requests: no verdict")
        return result

    drift = drift_report(current, reference, features, when=now.replace(tzinfo=None), drift_share=max_drift_share)
    result.drift_share, result.drifted, result.group_shares = drift.drift_share, drift.drifted, drift.group_shares()
    signature = []
    for group, share in result.group_shares.items():
        if share >= max_drift_share:
            names = [name for name in drift.drifted if feature_group(name) == group]
            result.reasons.append(f"{group} features drifted {share:.2f} >= {max_drift_share:g} ({', '.join(names)})")
            signature.append(group)
    if fad_reference is not None:
        try:
            result.window_fad = window_fad(current, fad_reference.real)
        except ValueError:
            pass  # no mel frames were logged in this window: the FAD check has nothing to measure
        else:
            if fad_reference.evaluation_fad > 0:
                result.fad_ratio = result.window_fad / fad_reference.evaluation_fad
            if max_fad_ratio is not None and result.window_fad > max_fad_ratio * fad_reference.evaluation_fad:
                result.reasons.append(
                    f"window FAD {result.window_fad:.3g} > {max_fad_ratio:g} x the evaluation's "
                    f"{fad_reference.evaluation_fad:.3g}"
                )
                signature.append("fad")
    if not signature:
        result.verdict = "ok"
        return result

    result.verdict, result.signature = "drift", signature
    result.explanation = explain(current, reference, drift.drifted)
    if callable(unseen):
        unseen = unseen()  # only now: its errors (a missing data source) surface only when they matter
    if unseen is not None and not unseen:
        result.retraining = "no new data"
        result.detail = (
            "the promoted model has seen all the data, so a retraining would learn nothing new: add recordings "
            f"like this traffic with `{ADD_DATA}`, then check again"
        )
        return result
    state_path = Path(state_file) if state_file else None
    state = _read_state(state_path) if state_path else None
    cooling = state is not None and now - _utc(state["time"]) < parse_duration(cooldown)
    if cooling and set(signature) <= set(state["signature"]):
        until = _utc(state["time"]) + parse_duration(cooldown)
        result.retraining, result.detail = "held back", f"cool-down until {until.isoformat(timespec='minutes')}"
        return result
    fine_tune = bool(unseen)  # new data and a promoted model to start from
    if dry_run:
        try:
            result.retraining = "dry run"
            result.detail = "would run " + retrain_command(retrain, kfp_host, fine_tune)[1] + _on(unseen)
        except RetrainError as error:
            result.retraining, result.detail = "failed", str(error)
        return result
    try:
        launch = launcher or functools.partial(start_retraining, fine_tune=fine_tune)
        result.detail = launch(retrain, kfp_host) + _on(unseen)
    except (RetrainError, OSError, subprocess.SubprocessError) as error:
        result.retraining, result.detail = "failed", str(error)
        return result
    result.retraining = "started"
    if state_path:
        # The retraining just started answers the drifts still cooling down too: keep them in the signature.
        covered = sorted(set(signature) | set(state["signature"] if cooling else []))
        _write_state(state_path, now, covered, result.detail)
    return result
