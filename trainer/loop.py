"""The training loop, top to bottom in one function (in the spirit of nanoGPT's train.py).

Read ``_train`` from the top (``train`` only installs the signal handlers around it): set-up
(device, lock, data, model, optimizer, run directory), the loop, then the end of the run (log
flush, checkpoint, stats, summary). The per-step math lives in
``sae.SparseAutoencoder.forward_backward``; everything else a step does is here.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from sae_report import __version__ as SAE_REPORT_VERSION
from sae_report.runlog import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVENTS_FILE,
    METRICS_DIR,
    STATS_DIR,
    SUMMARY_FILE,
    LockHeldError,
    RunLogError,
    RunLogWriter,
    lock_folder,
    read_config,
    read_events,
)
from sae_report.runlog.writer import summary_from_log, sweep_temp_files

from .checkpoint import CheckpointError, checkpoint_name, ensure_final, load_checkpoint, load_optimizer_state, save_checkpoint
from .config import ConfigError, TrainConfig, parse_overrides
from .resume import ResumeChangeError, changes_since, check_fixed, old_config, plain, updated_config
from .data import FileData, SyntheticData, normalisation_scale
from . import distributed as _distributed
from .distributed import PeerLostError
from .export import prepare_init, write_final_export
from .progress import make_display
from .resample import resample_dead
from .sae import SparseAutoencoder, explained_variance
from .schedules import KSchedule, L1Schedule, LRSchedule
from .stats import density_summary, feature_recovery, write_feature_density, write_feature_freq, write_input_stats
from .threads import LONG_RUN_S, CpuSampler, Pace, ThreadChoice, choose_threads, fmt_long, note_run_end

#: Metric columns kept on the device, in buffer order (the host adds step, tokens, l1_alpha, lr, elapsed_s).
DEVICE_COLUMNS = ("loss", "mse", "l1", "l0", "dead", "explained_variance", "grad_norm", "l2_ratio")
#: The same for the variants without an L1 term: topk/batchtopk log the AuxK term (the host adds k),
#: jumprelu none (its penalty is l0_coefficient * l0; the host adds l0_coefficient).
VARIANT_DEVICE_COLUMNS = {
    "topk": ("loss", "mse", "aux_loss", "l0", "dead", "explained_variance", "grad_norm", "l2_ratio"),
    "batchtopk": ("loss", "mse", "aux_loss", "l0", "dead", "explained_variance", "grad_norm", "l2_ratio"),
    "jumprelu": ("loss", "mse", "l0", "dead", "explained_variance", "grad_norm", "l2_ratio"),
}
#: Columns of the feature-density summary, logged every ``density_every`` steps (``_density_summary``).
DENSITY_COLUMNS = ("density_below_1e-5", "density_below_1e-6", "mean_log10_density", "dense_features")
#: The host column holding each variant's coefficient in force (topk/batchtopk: k; their AuxK
#: coefficient is constant and in config.yaml).
COEFFICIENT_COLUMN = {"standard": "l1_alpha", "april2024": "l1_alpha", "jumprelu": "l0_coefficient",
                      "topk": "k", "batchtopk": "k"}
#: What ``loss`` is, per variant (config.yaml's ``loss_formula``).
LOSS_FORMULA = {
    "standard": "mse + l1_alpha * l1; mse = mean over tokens and dims; l1 = mean over tokens of sum_i f_i",
    "april2024": "mse + l1_alpha * l1; mse = mean over tokens and dims; l1 = mean over tokens of sum_i f_i * ||W_dec,i||",
    "topk": "mse + aux_loss_coefficient * aux_loss; f = relu(TopK_k(pre)); aux_loss = AuxK (dead latents reconstruct x - x_hat)",
    "batchtopk": "mse + aux_loss_coefficient * aux_loss; f = relu(pre) on the batch's B * k largest; aux_loss = AuxK",
    "jumprelu": "mse + l0_coefficient * l0; f = pre * H(pre - threshold); l0 = mean over tokens of sum_i H(pre_i - threshold_i)",
}


@dataclass(frozen=True)
class TrainResult:
    """What a call to ``train`` did."""

    run_dir: Path
    """The run directory (config.yaml, metrics/, events.ndjson, checkpoints/, stats/, summary.json)."""
    status: Literal["completed", "interrupted", "diverged"]
    """completed: reached total_steps; interrupted: Ctrl-C / SIGTERM; diverged: the loss became NaN/inf."""
    steps: int
    """Last step trained (and logged)."""
    tokens: int
    """Tokens trained on up to ``steps``."""
    elapsed_s: float
    """Seconds spent in the training loop (all sessions of a resumed run)."""
    tokens_per_s: float
    """Training throughput of this session."""
    final_loss: float | None
    """Loss on the last logged step (None when nothing was logged)."""
    final_l0_frac: float | None
    """L0 / d_sae on the last logged step."""
    final_dead_frac: float | None
    """Dead fraction on the last logged step."""
    feature_recovery: float | None
    """Synthetic data: mean max cosine similarity of the true features with the decoder rows."""
    checkpoint: Path | None
    """The last checkpoint written (None when diverged before the first one)."""
    steady_tokens_per_s: float = 0.0
    """Throughput of this session without its first step (allocations, first-touch page faults)."""
    already_completed: bool = False
    """A resume of a run that had already reached total_steps: nothing was trained."""
    summary_rebuilt: bool = False
    """With ``already_completed``: summary.json was missing or stale and was rebuilt from the log."""
    world_size: int = 1
    """Processes that trained it together (torchrun); ``batch_size`` is their global batch."""
    comm_s: float = 0.0
    """Several ranks: seconds this rank spent in the step's all_reduce (waiting for the others included)."""


class TrainAborted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM before the first step, or a second one during the run. ``message`` is one
    line saying what is on disk."""

    def __init__(self, message: str, run_dir: Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.run_dir = run_dir


class RunWriteError(Exception):
    """Writing the run directory failed (disk full, read-only, ...): one line naming the file,
    what was kept, and how to continue."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} requested but torch.cuda.is_available() is False", "device")
    return torch.device(name)


def config_from_run(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The TrainConfig recorded in ``RUN/config.yaml`` (for ``--resume``), with ``key=value`` overrides."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir}: not a run directory of ours (no config.yaml)")
    try:
        raw = read_config(path)
    except RunLogError as exc:
        raise ConfigError(str(exc)) from None
    raw["device"] = raw.get("device_requested", raw.get("device", "auto"))
    base = {k: v for k, v in raw.items() if k in TrainConfig.keys()}
    return TrainConfig.from_sources([(str(path), base), *parse_overrides(overrides)])


def resolve_config(config: TrainConfig) -> TrainConfig:
    """The config as training would resolve it, without training (``sae-report train --print-config``):
    ``d_in`` (activation files: from their headers), ``d_sae`` (an ``init_from`` checkpoint: from its
    weights), ``data_seed`` and ``synth_features`` filled in. Raises what training would raise
    (``ConfigError``, ``DataError``, ``CheckpointError``), one line each."""
    data_seed = config.data_seed if config.data_seed is not None else config.seed
    init_d_sae = None
    if config.init_from and config.d_sae is None:
        init_d_sae = int(load_checkpoint(Path(config.init_from)).weights["W_dec"].shape[0])
    if config.data_source == "synthetic":
        d_in = config.d_in or 64
    elif config.data_source == "model":
        from .harvest import model_width

        d_in = model_width(config)
        if config.d_in is not None and config.d_in != d_in:
            raise ConfigError(f"d_in: is {config.d_in} but hookpoint {config.hookpoint} of {config.model} has width "
                              f"{d_in}", "d_in")
    else:
        data = FileData(config.data_path, seed=data_seed, batch_size=config.batch_size,  # type: ignore[arg-type]
                        buffer_tokens=config.shuffle_buffer_tokens, block_tokens=config.shuffle_block_tokens,
                        device=torch.device("cpu"))
        if config.d_in is not None and config.d_in != data.d_in:
            raise ConfigError(f"d_in: is {config.d_in} but the activations in {config.data_path} have width "
                              f"{data.d_in}", "d_in")
        d_in = data.d_in
    d_sae = config.d_sae or init_d_sae or d_in * config.expansion_factor
    synth = config.synth_features
    if config.data_source == "synthetic" and not synth:
        synth = max(d_sae // 2, 1)
    return config.replace(d_in=d_in, d_sae=d_sae, data_seed=data_seed, synth_features=synth)


def train(config: TrainConfig, out_dir: str | Path = "runs", *, run_dir: str | Path | None = None,
          resume: str | Path | None = None, progress: bool = False) -> TrainResult:
    """Train an SAE as ``config`` says, writing a run directory; see docs/trainer.md.

    ``run_dir``: write there instead of ``out_dir/train_<8 hex>``. ``resume``: continue the run
    directory given from its newest checkpoint (same data order; rows after it are superseded;
    changed settings are refused or recorded, see ``trainer.resume``).

    The run directory is locked for as long as this writes it (``LockHeldError`` names the
    process holding it). Ctrl-C / SIGTERM: the step in flight completes, the log is flushed, a
    checkpoint is written and the result says ``interrupted``; before the first step, or a second
    time, ``TrainAborted`` (a ``KeyboardInterrupt``) says what is on disk. A failed write (disk
    full) is a ``RunWriteError`` naming the file and the checkpoint that is intact.
    """
    # Ctrl-C / SIGTERM set a flag the loop checks between steps: the step in flight completes, so
    # the checkpoint written on the way out is a consistent state. A second one aborts at once.
    # Installed first, so that a signal during the set-up is seen too.
    stop: dict[str, Any] = {"signal": None, "at": 0.0}
    old_handlers: dict[int, Any] = {}
    # Under torchrun a Ctrl-C reaches every rank twice: from the terminal and forwarded by torchrun
    # a moment later. The forwarded copy is not a second interrupt.
    forwarded_s = 10.0 if _distributed.env_world()[0] > 1 else 0.0

    def on_signal(signum: int, frame: Any) -> None:
        if stop["signal"] is not None:
            if time.monotonic() - stop["at"] < forwarded_s:
                return
            raise KeyboardInterrupt
        stop["signal"] = signum
        stop["at"] = time.monotonic()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, on_signal)
    held: list[Any] = []  # the run directory's lock, once taken
    threads_before = torch.get_num_threads()  # torch's default, or what the caller set; restored at the end
    group: list[Any] = []  # the torch.distributed context under torchrun (trainer/distributed.py)
    ended = False  # returned normally: the ranks leave the group together (Distributed.close)
    try:
        result = _train(config, Path(out_dir), run_dir, resume, progress, stop, held, group)
        ended = True
        return result
    finally:
        for lock in held:
            lock.release()
        for ctx in group:
            ctx.close(wait=ended)
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)
        note_run_end()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)


#: Keys a config may leave unset (resolved at the start of training); a resume takes them from its checkpoint.
_RESOLVED_LATER = ("d_in", "d_sae", "data_seed", "synth_features")


def _train(config: TrainConfig, out_dir: Path, run_dir: str | Path | None, resume: str | Path | None,
           progress: bool, stop: dict[str, Any], held: list[Any], group: list[Any]) -> TrainResult:
    # ---- device, and the other ranks under torchrun (trainer/distributed.py) -------------------
    device = resolve_device(config.device)
    world = _distributed.env_world()[0]
    if world > 1:
        _check_distributed(config, world)
    ctx = _distributed.context(device)
    group.append(ctx)
    device = ctx.device(device)
    main = ctx.is_main  # only rank 0 writes the run directory
    default_threads = torch.get_num_threads()
    # threads: 0 (auto) on a CPU: how busy the CPUs are is sampled over the set-up below, and the
    # loop gets as many threads as there are free cores (trainer/threads.py).
    sampler = CpuSampler() if device.type == "cpu" and not config.threads else None
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda" and config.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- where we start from: a fresh run, a resumed one, or another SAE's weights ------------
    ckpt = None
    changes: dict[str, tuple[Any, Any]] = {}
    finished = False  # resumed at or past total_steps: only a missing summary is rebuilt
    if resume is not None:
        run_dir = Path(resume)

        def take_resume_lock() -> None:
            held.append(_lock(run_dir, f"{run_dir} is unchanged"))  # one writer at a time (LockHeldError names the holder)
            sweep_temp_files(run_dir)  # temp files a kill -9 left between a write and its rename

        ctx.on_main(take_resume_lock)
        ckpt = load_checkpoint(run_dir)
        config = config.replace(**{k: ckpt.meta[k] for k in _RESOLVED_LATER
                                   if getattr(config, k) is None and ckpt.meta.get(k) is not None})
        changes = changes_since(ckpt.meta, config.to_dict())
        check_fixed(changes, str(run_dir))
        if config.data_source == "model":
            from .harvest import check_model_keys

            check_model_keys(changes, str(run_dir))
        # Another number of ranks: the same data order as long as the global batch is the same.
        ranks_before = int(ckpt.meta.get("world_size", 1) or 1)
        if ranks_before != ctx.world:
            changes["world_size"] = (ranks_before, ctx.world)
        if config.total_steps <= ckpt.step:
            if "total_steps" in changes:
                raise ResumeChangeError(f"total_steps: {config.total_steps} is not above step {ckpt.step} of the newest "
                                        f"checkpoint ({ckpt.path}); raise it above {ckpt.step} to train further",
                                        "total_steps")
            summary = _read_summary(run_dir)
            if summary is not None and summary.get("status") == "completed" and summary.get("steps") == ckpt.step:
                return _completed_result(run_dir, ckpt, summary, config)
            finished = True
    init = load_checkpoint(Path(config.init_from)) if (config.init_from and ckpt is None) else None
    if ckpt is None:
        def choose_run_dir() -> str:
            chosen = Path(run_dir) if run_dir is not None else out_dir / f"train_{uuid.uuid4().hex[:8]}"
            if (chosen / METRICS_DIR).exists():
                raise ConfigError(f"{chosen}: already holds a run (use --resume to continue it)")
            return str(chosen)

        run_dir = ctx.on_main(choose_run_dir)  # rank 0 names it; every rank hears the name
    run_dir = Path(run_dir)
    start_step = ckpt.step if ckpt is not None else 0

    # ---- data: a pure function of (data seed, step), so a resume sees the same order ----------
    data_seed = config.data_seed if config.data_seed is not None else config.seed
    if config.data_source == "synthetic":
        d_in = config.d_in or 64
        d_sae_guess = config.d_sae or (init.weights["W_dec"].shape[0] if init else d_in * config.expansion_factor)
        data: SyntheticData | FileData = SyntheticData(
            d_in=d_in, n_features=config.synth_features or max(d_sae_guess // 2, 1), active=config.synth_active,
            power=config.synth_power, noise=config.synth_noise, outlier_dims=config.synth_outlier_dims,
            outlier_scale=config.synth_outlier_scale, mean_norm=config.synth_mean_norm,
            magnitude_sigma=config.synth_magnitude_sigma, seed=data_seed, batch_size=config.batch_size, device=device)
    elif config.data_source == "model":  # harvested while training; a resume starts at its checkpoint's model batch
        from .harvest import ModelData

        data = ModelData(config, seed=data_seed, batch_size=config.batch_size, device=device,
                         total_tokens=config.total_steps * config.batch_size)
        if config.d_in is not None and config.d_in != data.d_in:
            raise ConfigError(f"d_in: is {config.d_in} but hookpoint {config.hookpoint} of {config.model} has width "
                              f"{data.d_in}", "d_in")
        if ckpt is not None:
            data.restore(ckpt.meta.get("data_state"), start_step)
    else:
        data = FileData(config.data_path, seed=data_seed, batch_size=config.batch_size,  # type: ignore[arg-type]
                        buffer_tokens=config.shuffle_buffer_tokens, block_tokens=config.shuffle_block_tokens, device=device)
        if config.d_in is not None and config.d_in != data.d_in:
            raise ConfigError(f"d_in: is {config.d_in} but the activations in {config.data_path} have width {data.d_in}", "d_in")
    d_in = data.d_in
    d_sae = config.d_sae or (int(init.weights["W_dec"].shape[0]) if init else d_in * config.expansion_factor)
    # One constant so that E||x|| = sqrt(d_in): l1_alpha then means the same thing on any model's
    # activations. A resumed run keeps its recorded factor (the data must not change scale mid-run).
    if ckpt is not None:
        scale = float(ckpt.meta.get("input_scale", 1.0))
    else:
        scale = normalisation_scale(data) if config.normalize_input else 1.0
    data.scale = scale
    config = config.replace(d_in=d_in, d_sae=d_sae, data_seed=data_seed,
                            synth_features=(data.n_features if isinstance(data, SyntheticData) else config.synth_features))
    init = prepare_init(init, config, scale)  # a SAELens folder: its weights in this run's variant and units

    # ---- model and optimizer ------------------------------------------------------------------
    gen = torch.Generator().manual_seed(config.seed)
    sae = SparseAutoencoder(d_in, d_sae, variant=config.sae_variant, device=device, generator=gen,
                            jumprelu_init_threshold=config.jumprelu_init_threshold,
                            jumprelu_bandwidth=config.jumprelu_bandwidth, aux_k=config.aux_k,
                            topk_threshold_lr=config.topk_threshold_lr)
    sae.bf16 = config.precision == "bf16"
    if ctx.world > 1:  # BatchTopK selects over the global batch through the group
        sae.group = ctx
    try:  # fused Adam: one kernel for all four tensors (CPU support needs torch >= 2.4)
        optimizer = torch.optim.Adam(sae.parameters(), lr=config.learning_rate,
                                     betas=(config.adam_beta1, config.adam_beta2), fused=True)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.Adam(sae.parameters(), lr=config.learning_rate,
                                     betas=(config.adam_beta1, config.adam_beta2), foreach=True)
    try:
        if ckpt is not None:
            sae.load_tensors(ckpt.weights, str(ckpt.path))
            load_optimizer_state(sae, optimizer, ckpt.optimizer, str(ckpt.path))
        elif init is not None:
            sae.load_tensors(init.weights, str(init.path))
            if config.init_optimizer:
                load_optimizer_state(sae, optimizer, init.optimizer, str(init.path))
    except ValueError as exc:  # shape mismatches: one line naming the checkpoint
        raise CheckpointError(str(exc)) from None
    if ckpt is None and init is None:
        # b_dec starts at the data mean: the encoder then sees centred inputs from step 1.
        with torch.no_grad():
            sae.b_dec.copy_(data.sample(8192, stream=0).mean(dim=0))
    # Several ranks: the gradients become views into one flat buffer (one all_reduce per step),
    # and every rank starts from rank 0's weights and Adam moments (identical already: same seed
    # or checkpoint; made sure of).
    bucket = _distributed.Bucket(sae, ctx, batch_size=config.batch_size) if ctx.world > 1 else None
    ctx.broadcast_state(sae, optimizer)

    if ckpt is not None and "data_path" in changes:
        _check_same_data(run_dir, data, config)
    if ckpt is not None and data.kind == "model":  # the same model and text, wherever they are now
        data.check_resume(_recorded_data(run_dir), changes)

    # ---- the spliced-in LM loss (data_source model, causal LMs; trainer/evaluate.py) ------------
    evaluator = None
    ce_eval: dict[str, Any] | None = None
    if data.kind == "model" and config.eval_every and not finished:
        from .evaluate import SpliceEval, skipped_note

        if data.loaded.causal:
            evaluator = SpliceEval(config, data)
            ce_eval = evaluator.describe()
        else:
            ce_eval = skipped_note(data)

    # ---- trainer state: when each feature last fired, and firing counts per dead window -------
    # (AuxK needs to know which latents are dead at every step, logged or not)
    auxk = config.sae_variant in ("topk", "batchtopk") and bool(config.aux_loss_coefficient)
    aux_window = config.aux_dead_window or config.dead_window
    density_every = config.density_every if config.log_every > 0 else 0  # the summary goes on logged rows
    track = config.log_every > 0 or config.resample_interval > 0 or auxk
    last_fired = torch.zeros(d_sae, dtype=torch.int64, device=device)
    fire_count = torch.zeros(d_sae, dtype=torch.int64, device=device)
    prev_fire_count = torch.zeros(d_sae, dtype=torch.int64, device=device)
    window_tokens, prev_window_tokens = 0, 0
    # fire counts since the last feature-density summary (density_every)
    density_count = torch.zeros(d_sae, dtype=torch.int64, device=device)
    density_tokens = 0
    if ckpt is not None and ckpt.state:
        for name in ("last_fired", "fire_count", "prev_fire_count"):
            t = ckpt.state.get(name)
            if t is None or tuple(t.shape) != (d_sae,) or t.is_floating_point() or t.is_complex():
                raise CheckpointError(f"{ckpt.path / 'state.safetensors'}: {name} must be an integer tensor of shape "
                                      f"[{d_sae}], got {'nothing' if t is None else f'{list(t.shape)} {t.dtype}'}")
        last_fired.copy_(ckpt.state["last_fired"])
        fire_count.copy_(ckpt.state["fire_count"])
        prev_fire_count.copy_(ckpt.state["prev_fire_count"])
        window_tokens = int(ckpt.meta.get("window_tokens", 0))
        prev_window_tokens = int(ckpt.meta.get("prev_window_tokens", 0))
        t = ckpt.state.get("density_count")  # absent in older checkpoints: the interval restarts
        if t is not None and tuple(t.shape) == (d_sae,) and not t.is_floating_point():
            density_count.copy_(t)
            density_tokens = int(ckpt.meta.get("density_tokens", 0))
    elif start_step:
        last_fired.fill_(start_step)

    # ---- CPU threads for the loop (auto: as many as there are free cores) ---------------------
    threads: ThreadChoice | None = None
    if device.type == "cpu" and not finished:
        threads = choose_threads(config.threads, default_threads, sampler)
        if threads.auto and threads.threads != torch.get_num_threads():
            torch.set_num_threads(threads.threads)

    # ---- run directory: locked, then config.yaml once, then append-only metrics and events ----
    if stop["signal"] is not None:
        raise TrainAborted("interrupted before training started; nothing written" if ckpt is None else
                           f"interrupted before training resumed; {run_dir} is unchanged", run_dir if ckpt else None)
    def create_run_dir() -> None:
        created = not run_dir.exists()
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunWriteError(f"{exc.filename or run_dir}: cannot write ({exc.strerror or _first_line(exc)}); "
                                "nothing written") from None
        try:
            held.append(_lock(run_dir, "nothing written"))
        except BaseException:
            if created:
                _rmdir_quietly(run_dir)
            raise
        if (run_dir / METRICS_DIR).exists():  # another writer got there first
            raise ConfigError(f"{run_dir}: already holds a run (use --resume to continue it)")

    if ckpt is None:
        ctx.on_main(create_run_dir)
    run_id = run_dir.name
    resolved = config.to_dict()
    writer: Any = RunLogWriter(run_dir) if main else _NullWriter()
    elapsed_before = float(ckpt.meta.get("elapsed_s", 0.0)) if ckpt is not None else 0.0

    l1_at, lr_at, k_at = L1Schedule(config), LRSchedule(config), KSchedule(config)
    milestones: dict[int, list[tuple[str, Any]]] = {}
    for kind, sched in (("l1_change", l1_at), ("lr_change", lr_at), ("k_change", k_at)):
        if kind == "l1_change" and config.sae_variant in ("topk", "batchtopk"):
            continue  # a constant AuxK coefficient: no sparsity-coefficient schedule
        for m in sched.milestones():
            milestones.setdefault(m.step, []).append((kind, m))
    device_columns = VARIANT_DEVICE_COLUMNS.get(config.sae_variant, DEVICE_COLUMNS)
    coef_column = COEFFICIENT_COLUMN[config.sae_variant]

    # Metrics stay on the device in a [flush_every, 7] buffer; the host copies it once per flush
    # (a per-step .item() would stall a GPU every step).
    B = config.batch_size
    buf = torch.zeros(config.flush_every, len(device_columns), dtype=torch.float32, device=device)
    host_cols: dict[str, list[float]] = {"step": [], "tokens": [], coef_column: [], "lr": [], "elapsed_s": []}
    # Columns logged on some rows only (density summary, spliced-in loss): one dict per buffered row.
    host_extra: list[dict[str, float]] = []
    pending_extra: dict[str, float] = {}  # computed at a step that was not logged: goes on the next logged row
    last_row: dict[str, float] = {}
    info = None
    if threads is not None:
        n = threads.threads
        info = f"device cpu, {n} thread{'s' if n != 1 else ''} ({threads.why})"
    elif device.type != "cpu":
        info = f"device {device}"
    if ctx.world > 1:
        info = f"{info or f'device {device}'}; {ctx.world} ranks of {B // ctx.world:,} tokens"
    display = make_display(progress and main, config.total_steps, start_step, str(run_dir), d_sae, info) \
        if not finished else make_display(False, config.total_steps, start_step, str(run_dir), d_sae)
    if not main:
        display = _SilentDisplay()
    pace = Pace(config.total_steps, start_step)
    paused = [0.0]  # seconds in checkpoints and resampling since the last flush (left out of the collapse check)
    threads_changed: dict[str, int] = {}
    status: Literal["completed", "interrupted", "diverged"] = "completed"
    last_ckpt: Path | None = ckpt.path if ckpt is not None else None
    nonfinite_step: int | None = None

    step = start_step
    session_tokens = 0
    t0 = time.monotonic()

    def flush() -> bool:
        """Copy the buffered rows to the log; False (and the nonfinite event) when a loss is NaN/inf."""
        nonlocal nonfinite_step
        n = len(host_cols["step"])
        if n == 0:
            return True
        rows = buf[:n].double().cpu().numpy()
        cols: dict[str, Any] = {k: np.asarray(v) for k, v in host_cols.items()}
        for j, name in enumerate(device_columns):
            cols[name] = rows[:, j]
        cols["l0_frac"] = cols["l0"] / d_sae
        cols["dead_frac"] = cols["dead"] / d_sae
        extras = list(host_extra)
        bad = np.flatnonzero(~np.isfinite(cols["loss"]))
        if bad.size:  # keep the first non-finite row (it is the signal), drop what came after it
            cut = int(bad[0]) + 1
            cols = {k: v[:cut] for k, v in cols.items()}
            extras = extras[:cut]
            nonfinite_step = int(cols["step"][-1])
        # Runs of rows with the same extra columns go in one write each (a column a row lacks is null).
        a = 0
        n_rows = len(cols["step"])
        while a < n_rows:
            keys = sorted(extras[a])
            b = a + 1
            while b < n_rows and sorted(extras[b]) == keys:
                b += 1
            part = {k: v[a:b] for k, v in cols.items()}
            part.update({k: np.asarray([e[k] for e in extras[a:b]], dtype=np.float64) for k in keys})
            writer.log_metrics(part)
            a = b
        last_row.clear()
        last_row.update({k: float(v[-1]) for k, v in cols.items()})
        if extras:
            last_row.update(extras[-1])
        for v in host_cols.values():
            v.clear()
        host_extra.clear()
        if nonfinite_step is not None:
            which = [k for k in device_columns if not math.isfinite(last_row[k])]
            writer.log_event("nonfinite", nonfinite_step, metrics=which, loss=last_row["loss"])
            return False
        now = time.monotonic()
        at = int(last_row["step"])
        pace.observe(at, now, paused[0])
        paused[0] = 0.0
        _watch_pace(pace, at, now, display, threads, threads_changed, device, config, B)
        rate = pace.recent_rate
        display.update(at, last_row, rate * B if rate else session_tokens / max(now - t0, 1e-9), pace.eta(at))
        return True

    def checkpoint(step: int, final: bool = False) -> Path:
        if not main:  # rank 0 writes it; the others hold the same weights
            return run_dir / CHECKPOINTS_DIR / checkpoint_name(step)
        meta = {"step": step, "tokens": step * B, "data_position_tokens": step * B, "input_scale": scale,
                "window_tokens": window_tokens, "prev_window_tokens": prev_window_tokens,
                "elapsed_s": elapsed_before + time.monotonic() - t0, "run_id": run_id,
                "world_size": ctx.world, "batch_size_per_rank": B // ctx.world}
        if data.kind == "model":  # where the model batches of the next step start
            meta["data_state"] = data.resume_state(step)
        meta["density_tokens"] = density_tokens
        state = {"last_fired": last_fired, "fire_count": fire_count, "prev_fire_count": prev_fire_count,
                 "density_count": density_count}
        ckpt_config = {**resolved, "input_scale": scale, "step": step, "tokens": step * B}
        path = save_checkpoint(run_dir, step, sae, optimizer, state, ckpt_config, meta, final=final,
                               keep=config.keep_checkpoints)
        writer.log_event("checkpoint", step, path=str(path.relative_to(run_dir)), final=final)
        return path

    try:
        if ckpt is None:
            writer.write_config({
                **resolved,
                "device": str(device), "device_requested": config.device,
                "run_id": run_id, "sae_report_version": SAE_REPORT_VERSION, "torch_version": str(torch.__version__),
                "start_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "input_scale": scale, "dead_window_steps": config.dead_window,
                "dead_window_tokens": config.dead_window * config.batch_size,
                "loss_formula": LOSS_FORMULA[config.sae_variant],
                "data": data.describe(),
                "init_from_step": init.step if init is not None else None,
                "world_size": ctx.world, "batch_size_per_rank": B // ctx.world,
                **({"ce_eval": ce_eval} if ce_eval is not None else {}),
            })
            writer.log_event("start", 0, device=str(device), d_in=d_in, d_sae=d_sae, input_scale=scale,
                             init_from=config.init_from, threads=threads.threads if threads else None,
                             **({"world_size": ctx.world, "batch_size_per_rank": B // ctx.world} if ctx.world > 1 else {}))
        elif not finished:
            writer.log_event("resume", start_step, checkpoint=str(ckpt.path), tokens=start_step * config.batch_size,
                             changed={k: new for k, (_, new) in changes.items()},
                             threads=threads.threads if threads else None)
            if main:
                _record_changes(writer, run_dir, ckpt, config, resolved, changes, str(device),
                                data.describe() if {"data_path", "model", "dataset"} & set(changes) else None,
                                extra={"world_size": ctx.world, "batch_size_per_rank": B // ctx.world})
        if finished:
            if not main:
                return _completed_result(run_dir, ckpt, {}, config)
            return _finish_completed(run_dir, writer, ckpt, config, data, sae, device, fire_count + prev_fire_count,
                                     window_tokens + prev_window_tokens, elapsed_before)

        # ---- the loop -----------------------------------------------------------------------------
        t0 = time.monotonic()
        last_flush = t0
        current_lr = None
        first_step_s = 0.0
        if ctx.any(stop["signal"] is not None):  # every rank hears of a signal during the set-up
            stop["signal"] = stop["signal"] or signal.SIGTERM
        if stop["signal"] is None:  # a signal during the set-up: straight to the end (nothing trained)
            for step in range(start_step + 1, config.total_steps + 1):
                # Schedules are pure functions of the step; their milestones become events.
                alpha, lr = l1_at(step), lr_at(step)
                if lr != current_lr:
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    current_lr = lr
                for kind, m in milestones.get(step, ()):
                    if kind == "l1_change" and coef_column != "l1_alpha":
                        writer.log_event(kind, step, value=m.value, reason=m.reason, coefficient=coef_column)
                    else:
                        writer.log_event(kind, step, value=m.value, reason=m.reason)

                x = data.batch(step) if bucket is None else _distributed.local_batch(data, step, ctx.rank, ctx.world)
                k_now = k_at(step)
                # AuxK's dead latents: none fired in the aux_dead_window steps before this one
                aux_dead = (step - 1 - last_fired >= aux_window) if auxk else None
                log_now = config.log_every > 0 and step % config.log_every == 0
                stats = sae.forward_backward(x, alpha, count_fires=track, k=k_now, dead=aux_dead, l2_ratio=log_now)
                reduced = None
                if bucket is not None:  # several ranks: one all_reduce of grads, fire counts, sums, flags
                    flush_due = main and log_now and time.monotonic() - last_flush >= config.flush_secs
                    reduced = bucket.reduce(stats, x, step=step, stop=stop["signal"] is not None,
                                            flush_due=flush_due, with_ev=log_now)
                sae.project_decoder_grad()
                grad_norm = sae.grad_norm() if log_now else None
                optimizer.step()
                sae.post_step()
                session_tokens += B

                # Dead-feature bookkeeping on the device: no host sync.
                if track:
                    counts = stats.fire_count if reduced is None else reduced.fire_count
                    last_fired.masked_fill_(counts > 0, step)
                    fire_count += counts.long()
                    window_tokens += B
                    if step % config.dead_window == 0:  # rotate the windows kept for feature_freq.npy
                        prev_fire_count.copy_(fire_count)
                        fire_count.zero_()
                        prev_window_tokens, window_tokens = window_tokens, 0
                    if density_every:
                        density_count += counts.long()
                        density_tokens += B
                        if step % density_every == 0:  # one host copy per interval
                            pending_extra.update(_density_summary(run_dir if main else None, step, density_count,
                                                                  density_tokens))
                            density_count.zero_()
                            density_tokens = 0
                if evaluator is not None and (step % config.eval_every == 0 or step == config.total_steps):
                    t_pause = time.monotonic()
                    pending_extra.update(evaluator.losses(sae, scale, k_now))
                    paused[0] += time.monotonic() - t_pause
                if log_now:
                    i = len(host_cols["step"])
                    dead = (step - last_fired >= config.dead_window).sum()
                    l0 = counts.sum() / B
                    if reduced is None:
                        ev = explained_variance(stats.sse, x)
                        third = (stats.l1,) if stats.aux_loss is None and coef_column == "l1_alpha" else \
                            (stats.aux_loss,) if stats.aux_loss is not None else ()
                        loss_now, mse_now = stats.loss, stats.mse
                        ratio_now = stats.l2_ratio_sum / x.shape[0]
                    else:  # the global batch's metrics, from the reduced sums
                        ev = reduced.explained_variance
                        third = (reduced.third,) if reduced.third is not None and device_columns[2] in ("l1", "aux_loss") \
                            else ()
                        loss_now, mse_now, ratio_now = reduced.loss, reduced.mse, reduced.l2_ratio
                    torch.stack([loss_now, mse_now, *third, l0.float(), dead.float(), ev, grad_norm, ratio_now.float()],
                                out=buf[i])
                    host_extra.append(dict(pending_extra))
                    pending_extra.clear()
                    host_cols["step"].append(step)
                    host_cols["tokens"].append(step * B)
                    host_cols[coef_column].append(k_now if coef_column == "k" else alpha)
                    host_cols["lr"].append(lr)
                    host_cols["elapsed_s"].append(elapsed_before + time.monotonic() - t0)
                    now = time.monotonic()
                    due = now - last_flush >= config.flush_secs if reduced is None else reduced.flush_due
                    if i + 1 == config.flush_every or due:
                        last_flush = now
                        if not flush():
                            status = "diverged"
                            break

                # Resampling (Anthropic 2023) of the features dead over the last dead_window steps.
                if config.resample_interval and step % config.resample_interval == 0 and step < config.total_steps:
                    t_pause = time.monotonic()
                    dead_mask = step - last_fired >= config.dead_window
                    result = resample_dead(sae, optimizer, dead_mask, data.sample(config.resample_tokens, stream=1000 + step),
                                           encoder_scale=config.resample_encoder_scale,
                                           generator=torch.Generator().manual_seed(config.seed * 7919 + step))
                    last_fired[dead_mask] = step  # a fresh window for the new features
                    if bucket is not None:  # every rank resampled alike; rank 0's result is the one kept
                        ctx.broadcast_state(sae, optimizer, step=step)
                    writer.log_event("resample", step, n=len(result.features), features=result.features,
                                     dead_window=config.dead_window, mean_alive_encoder_norm=result.mean_alive_encoder_norm,
                                     mean_loss=result.mean_loss)
                    paused[0] += time.monotonic() - t_pause

                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.total_steps:
                    if not flush():  # never checkpoint weights past a non-finite loss
                        status = "diverged"
                        break
                    t_pause = time.monotonic()
                    last_ckpt = checkpoint(step)
                    paused[0] += time.monotonic() - t_pause
                if step == start_step + 1:
                    if device.type == "cuda":
                        torch.cuda.synchronize()  # once: so first_step_s is the first step's real cost
                    first_step_s = time.monotonic() - t0
                    pace.first(step, t0 + first_step_s)
                    paused[0] = 0.0
                stopping = stop["signal"] is not None if reduced is None else reduced.stop
                if stopping and step < config.total_steps:
                    status = "interrupted"
                    break

        # ---- end of run: flush, checkpoint, stats, summary ---------------------------------------
        if status == "completed" and stop["signal"] is not None and step < config.total_steps:
            status = "interrupted"  # the signal came during the set-up: no step was trained
        if device.type == "cuda":
            torch.cuda.synchronize()  # the host runs ahead of the GPU: wait before reading the clock
        loop_s = time.monotonic() - t0
        if status != "diverged" and not flush():
            status = "diverged"
        if status == "diverged" and nonfinite_step is not None:
            step = nonfinite_step
        if status != "diverged":
            last_ckpt = checkpoint(step, final=True)
            if main:
                write_final_export(run_dir, last_ckpt)  # checkpoints/final/saelens/ (trainer/export.py)
        tokens = step * B
        # Stats are written even for a diverged run: outlier input dimensions are a likely suspect.
        if main:
            write_feature_freq(run_dir, fire_count + prev_fire_count, window_tokens + prev_window_tokens)
            sample = data.sample(max(config.stats_sample, 16384), stream=1)
            write_input_stats(run_dir, sample[:config.stats_sample], sample, config.outlier_factor)
        recovery = None
        if main and status != "diverged" and isinstance(data, SyntheticData):
            recovery = feature_recovery(sae.W_dec.detach(), data.true_features)
        if status == "interrupted":
            writer.log_event("interrupt", step, signal=signal.Signals(stop["signal"]).name if stop["signal"] else None)
        elapsed = elapsed_before + loop_s
        tps = session_tokens / loop_s if loop_s > 0 else 0.0
        steady = (session_tokens - B) / (loop_s - first_step_s) if session_tokens > B and loop_s > first_step_s else tps
        writer.log_event("end", step, status=status)
        writer.write_summary({
            "status": status, "run_id": run_id, "steps": step, "total_steps": config.total_steps, "tokens": tokens,
            "elapsed_s": round(elapsed, 3), "tokens_per_s": round(tps, 1), "device": str(device),
            "final": {k: last_row.get(k) for k in ("loss", "mse", "l1", "l0", "l0_frac", "dead", "dead_frac", "explained_variance")
                      + (("aux_loss",) if "aux_loss" in device_columns else ())} if last_row else None,
            "feature_recovery": {"mmcs": recovery.mmcs, "frac_above_0.9": recovery.frac_above_09} if recovery else None,
            "nonfinite_step": nonfinite_step,
            "checkpoint": str(last_ckpt.relative_to(run_dir)) if last_ckpt and last_ckpt.is_relative_to(run_dir) else None,
            "resumed_from_step": start_step or None,
            "threads": torch.get_num_threads() if device.type == "cpu" else None,
            "threads_changed": threads_changed or None,
            **({"world_size": ctx.world, "batch_size_per_rank": B // ctx.world,
                "comm_s": round(bucket.comm_s, 3) if bucket is not None else None} if ctx.world > 1 else {}),
        })
        writer.close()
        display.close()
        return TrainResult(
            run_dir=run_dir, status=status, steps=step, tokens=tokens, elapsed_s=elapsed, tokens_per_s=tps,
            final_loss=last_row.get("loss"), final_l0_frac=last_row.get("l0_frac"), final_dead_frac=last_row.get("dead_frac"),
            feature_recovery=recovery.mmcs if recovery else None, checkpoint=last_ckpt, steady_tokens_per_s=steady,
            world_size=ctx.world, comm_s=bucket.comm_s if bucket is not None else 0.0,
        )
    except PeerLostError as exc:  # a rank died (or stopped answering): every rank stops, one line each
        writer.abandon()
        display.close()
        raise PeerLostError(f"{exc}; {_kept(run_dir, last_row, last_ckpt)}") from None
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM: out at once, nothing more written
        writer.abandon()
        display.close()
        raise TrainAborted(f"aborted by a second interrupt at step {step}; {_kept(run_dir, last_row, last_ckpt)}",
                           run_dir) from None
    except OSError as exc:  # disk full, read-only, ...: the log is flushed, the last checkpoint intact
        writer.abandon()
        display.close()
        where = exc.filename or run_dir
        what = exc.strerror or _first_line(exc)
        raise RunWriteError(f"{where}: cannot write ({what}); {_kept(run_dir, last_row, last_ckpt, room=True)}") from None
    except BaseException:
        writer.abandon()
        display.close()
        raise


def _density_summary(run_dir: Path | None, step: int, counts: torch.Tensor, tokens: int) -> dict[str, float]:
    """The feature-density columns of the interval ending at ``step`` (``stats.density_summary``);
    with ``run_dir`` (rank 0) the per-feature density goes to stats/feature_density/step_N.npy."""
    freq = counts.double().cpu().numpy() / max(tokens, 1)
    if run_dir is not None:
        write_feature_density(run_dir, step, freq)
    return density_summary(freq)


def _watch_pace(pace: Pace, step: int, now: float, display: Any, threads: ThreadChoice | None,
                changed: dict[str, int], device: torch.device, config: TrainConfig, batch_size: int) -> None:
    """At a flush: the run's time from its first steps (one warning line when it is hours), and the
    collapse of a multi-threaded run on a busy CPU (auto: drop to one thread; set: say what to set)."""
    if not pace.estimated:
        total_s = pace.first_estimate(step, now)
        if total_s is not None:
            pace.estimated = True
            if total_s >= LONG_RUN_S:
                n = step - pace.step_first + 1
                steps = config.total_steps - pace.start_step
                rate = steps / total_s
                where = (f"{device}, {threads.threads} thread{'s' if threads.threads != 1 else ''}"
                         if threads is not None else str(device))
                what = "the rest of this run" if pace.start_step else "this run"
                hint = (": fewer total_steps, a smaller d_sae or batch_size, or a GPU shorten it"
                        if device.type == "cpu" else ": fewer total_steps or a smaller d_sae shorten it")
                display.warn(f"{what} will take about {fmt_long(total_s)} here ({steps:,} steps at {rate:.3g} "
                             f"steps/s, {rate * batch_size:,.0f} tokens/s, from its first {n:,} steps; {where}, "
                             f"d_sae {config.d_sae:,}){hint}")
    if threads is None or not pace.collapsed():
        return
    pace.mark_collapse(step)
    n = torch.get_num_threads()
    if n <= 1:
        return
    before, after = pace.promise or 0.0, pace.recent_measured or 0.0
    head = (f"at step {step:,} training slowed to {after:.3g} steps/s from {before:.3g} in its first steps: "
            f"other processes are using the CPU and torch's {n} threads wait for each other")
    if threads.auto:
        torch.set_num_threads(1)
        changed.update({"step": step, "from": n, "to": 1})
        display.warn(f"{head}; switched to 1 thread (--set threads=1 starts with one)")
    else:
        display.warn(f"{head}; set threads=1 (--set threads=1, or threads: 0 to choose by itself): "
                     f"one thread does not stall when another process takes a core")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _kept(run_dir: Path, last_row: dict[str, float], last_ckpt: Path | None, room: bool = False) -> str:
    """What a run stopped by an error or a second interrupt keeps, and how to go on (one clause)."""
    flushed = f"the log holds steps up to {int(last_row['step'])}" if last_row.get("step") else "no metrics were logged"
    if last_ckpt is None:
        return f"{flushed} and there is no checkpoint yet: train again" + (" once there is room" if room else "")
    try:
        name: Any = last_ckpt.relative_to(run_dir)
    except ValueError:
        name = last_ckpt
    return (f"{flushed}, the checkpoint {name} is intact; " + ("once there is room, " if room else "")
            + f"resume with: sae-report train --resume {run_dir}")


def _lock(run_dir: Path, kept: str) -> Any:
    """The run directory's lock; a folder we cannot write is one line (``RunWriteError``)."""
    try:
        return lock_folder(run_dir)
    except OSError as exc:
        raise RunWriteError(f"{exc.filename or run_dir}: cannot write ({exc.strerror or _first_line(exc)}); {kept}") from None


def _rmdir_quietly(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` when it is a readable JSON object (a regular file under 1 MiB), else None."""
    path = run_dir / SUMMARY_FILE
    try:
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _completed_result(run_dir: Path, ckpt: Any, summary: dict[str, Any], config: TrainConfig,
                      rebuilt: bool = False) -> TrainResult:
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    rec = summary.get("feature_recovery") if isinstance(summary.get("feature_recovery"), dict) else {}
    tokens = _num(summary.get("tokens"))
    return TrainResult(
        run_dir=run_dir, status="completed", steps=ckpt.step,
        tokens=int(tokens) if tokens is not None else ckpt.step * config.batch_size,
        elapsed_s=_num(summary.get("elapsed_s")) or 0.0, tokens_per_s=0.0,
        final_loss=_num(final.get("loss")), final_l0_frac=_num(final.get("l0_frac")),
        final_dead_frac=_num(final.get("dead_frac")), feature_recovery=_num(rec.get("mmcs")),
        checkpoint=ckpt.path, already_completed=True, summary_rebuilt=rebuilt,
    )


def _recorded_data(run_dir: Path) -> Any:
    """The ``data`` description in ``RUN/config.yaml`` (None when unreadable)."""
    try:
        return read_config(run_dir / CONFIG_FILE).get("data")
    except RunLogError:
        return None


def _check_same_data(run_dir: Path, data: Any, config: TrainConfig) -> None:
    """A resume may read its activations from a new ``data_path`` (files moved), not other data."""
    try:
        recorded = read_config(run_dir / CONFIG_FILE).get("data")
    except RunLogError:
        recorded = None
    now = data.describe()
    if not isinstance(recorded, dict) or "n_tokens" not in recorded:
        return
    if (recorded.get("n_tokens"), recorded.get("d_in")) != (now.get("n_tokens"), now.get("d_in")):
        raise ResumeChangeError(
            f"data_path: {config.data_path} holds {now.get('n_tokens')} tokens of width {now.get('d_in')}, the run "
            f"was trained on {recorded.get('n_tokens')} of width {recorded.get('d_in')} "
            f"({run_dir / CONFIG_FILE}: data); a resume needs the same activations", "data_path")


def _record_changes(writer: RunLogWriter, run_dir: Path, ckpt: Any, config: TrainConfig, resolved: dict[str, Any],
                    changes: dict[str, tuple[Any, Any]], device: str, data: dict[str, Any] | None,
                    extra: dict[str, Any] | None = None) -> None:
    """Log the settings a resume changed and bring config.yaml up to date (see ``trainer.resume``)."""
    first = ckpt.step + 1  # the first step trained with the new settings, as for a schedule milestone
    for key, (old, new) in changes.items():
        writer.log_event("config_change", first, key=key, **{"from": old, "to": new})
    before = old_config(ckpt.meta)
    if before is not None:
        for kind, then, now in (("l1_change", L1Schedule(before)(first), L1Schedule(config)(first)),
                                ("lr_change", LRSchedule(before)(first), LRSchedule(config)(first))):
            if then != now:
                writer.log_event(kind, first, value=now, reason="changed on resume", **{"from": then})
    path = run_dir / CONFIG_FILE
    try:
        raw = read_config(path) if path.is_file() else {}
    except RunLogError:
        raw = {}
    try:
        checkpoint = str(ckpt.path.relative_to(run_dir))
    except ValueError:
        checkpoint = str(ckpt.path)
    new = updated_config(raw, resolved, step=ckpt.step, checkpoint=checkpoint, changes=changes, device=device, data=data)
    if extra and ("world_size" in raw or "world_size" in changes):
        new.update(extra)  # world_size, batch_size_per_rank in force
    if plain(new) != plain(raw):
        writer.write_config(new)


def _finish_completed(run_dir: Path, writer: RunLogWriter, ckpt: Any, config: TrainConfig, data: Any, sae: Any,
                      device: torch.device, fire_counts: torch.Tensor, window_tokens: int,
                      elapsed_s: float) -> TrainResult:
    """A run killed after its last checkpoint but before its summary: write what the end of the run
    would have written (final link, stats, ``end`` event, summary rebuilt from the log); train nothing."""
    step = ckpt.step
    ensure_final(run_dir, ckpt.path)
    write_final_export(run_dir, ckpt.path)  # checkpoints/final/saelens/ (trainer/export.py)
    stats = run_dir / STATS_DIR
    if not (stats / "feature_freq.npy").is_file():
        write_feature_freq(run_dir, fire_counts, window_tokens)
    if not ((stats / "input_sample.npy").is_file() and (stats / "input_dims.csv").is_file()):
        sample = data.sample(max(config.stats_sample, 16384), stream=1)
        write_input_stats(run_dir, sample[:config.stats_sample], sample, config.outlier_factor)
    recovery = feature_recovery(sae.W_dec.detach(), data.true_features) if isinstance(data, SyntheticData) else None
    events = read_events(run_dir / EVENTS_FILE)
    if not events or events[-1].kind != "end" or events[-1].step != step:
        writer.log_event("end", step, status="completed")
    summary = summary_from_log(run_dir, status="completed", steps=step)
    summary.update({
        "elapsed_s": round(elapsed_s, 3), "device": str(device),
        "feature_recovery": {"mmcs": recovery.mmcs, "frac_above_0.9": recovery.frac_above_09} if recovery else None,
        "checkpoint": str(ckpt.path.relative_to(run_dir)) if ckpt.path.is_relative_to(run_dir) else None,
    })
    writer.write_summary(summary)
    writer.close()
    return _completed_result(run_dir, ckpt, summary, config, rebuilt=True)


__all__ = ["TrainResult", "train", "config_from_run", "resolve_config", "resolve_device", "CheckpointError", "TrainAborted", "RunWriteError",
           "LockHeldError", "ResumeChangeError"]


class _NullWriter:
    """The run-log writer of ranks other than 0: they write nothing."""

    def write_config(self, config: Any) -> None:
        pass

    def log_metrics(self, columns: Any) -> None:
        pass

    def log_event(self, kind: str, step: int, **fields: Any) -> None:
        pass

    def write_summary(self, summary: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass


class _SilentDisplay:
    """Progress and warnings of ranks other than 0: rank 0 shows them."""

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


def _check_distributed(config: TrainConfig, world: int) -> None:
    """What several ranks (torchrun) cannot train yet, refused in one line before the group is joined."""
    if config.batch_size % world:
        raise ConfigError(f"batch_size: {config.batch_size} is the global batch and must be divisible by the "
                          f"{world} ranks (WORLD_SIZE={world})", "batch_size")
