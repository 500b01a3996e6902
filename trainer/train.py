"""The training loop, top to bottom in one function (in the spirit of nanoGPT's train.py).

Read ``train`` from the top: set-up (device, data, model, optimizer, run directory), the loop,
then the end of the run (log flush, checkpoint, stats, summary). The per-step math lives in
``sae.SparseAutoencoder.forward_backward``; everything else a step does is here.
"""

from __future__ import annotations

import datetime as _dt
import math
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
from sae_report.runlog import RunLogWriter, read_config

from .checkpoint import CheckpointError, load_checkpoint, load_optimizer_state, save_checkpoint
from .config import ConfigError, TrainConfig, parse_overrides
from .data import FileData, SyntheticData, normalisation_scale
from .progress import NoProgress, ProgressDisplay
from .resample import resample_dead
from .sae import SparseAutoencoder, explained_variance
from .schedules import L1Schedule, LRSchedule
from .stats import feature_recovery, write_feature_freq, write_input_stats

#: Metric columns kept on the device, in buffer order (the host adds step, tokens, l1_alpha, lr, elapsed_s).
DEVICE_COLUMNS = ("loss", "mse", "l1", "l0", "dead", "explained_variance", "grad_norm")


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
    raw = read_config(path)
    raw["device"] = raw.get("device_requested", raw.get("device", "auto"))
    base = {k: v for k, v in raw.items() if k in TrainConfig.keys()}
    return TrainConfig.from_sources([(str(path), base), *parse_overrides(overrides)])


def train(config: TrainConfig, out_dir: str | Path = "runs", *, run_dir: str | Path | None = None,
          resume: str | Path | None = None, progress: bool = False) -> TrainResult:
    """Train an SAE as ``config`` says, writing a run directory; see docs/trainer.md.

    ``run_dir``: write there instead of ``out_dir/train_<8 hex>``. ``resume``: continue the run
    directory given from its newest checkpoint (same data order; rows after it are superseded).
    """
    # ---- device -------------------------------------------------------------------------------
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if device.type == "cuda" and config.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- where we start from: a fresh run, a resumed one, or another SAE's weights ------------
    ckpt = load_checkpoint(Path(resume)) if resume is not None else None
    init = load_checkpoint(Path(config.init_from)) if (config.init_from and ckpt is None) else None
    if ckpt is not None:
        run_dir = Path(resume)  # type: ignore[arg-type]
    elif run_dir is None:
        run_dir = Path(out_dir) / f"train_{uuid.uuid4().hex[:8]}"
    run_dir = Path(run_dir)
    if ckpt is None and (run_dir / "metrics").exists():
        raise ConfigError(f"{run_dir}: already holds a run (use --resume to continue it)")
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

    # ---- model and optimizer ------------------------------------------------------------------
    gen = torch.Generator().manual_seed(config.seed)
    sae = SparseAutoencoder(d_in, d_sae, variant=config.sae_variant, device=device, generator=gen)
    sae.bf16 = config.precision == "bf16"
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

    # ---- trainer state: when each feature last fired, and firing counts per dead window -------
    track = config.log_every > 0 or config.resample_interval > 0
    last_fired = torch.zeros(d_sae, dtype=torch.int64, device=device)
    fire_count = torch.zeros(d_sae, dtype=torch.int64, device=device)
    prev_fire_count = torch.zeros(d_sae, dtype=torch.int64, device=device)
    window_tokens, prev_window_tokens = 0, 0
    if ckpt is not None and ckpt.state:
        last_fired.copy_(ckpt.state["last_fired"])
        fire_count.copy_(ckpt.state["fire_count"])
        prev_fire_count.copy_(ckpt.state["prev_fire_count"])
        window_tokens = int(ckpt.meta.get("window_tokens", 0))
        prev_window_tokens = int(ckpt.meta.get("prev_window_tokens", 0))
    elif start_step:
        last_fired.fill_(start_step)

    # ---- run directory: config.yaml once, then append-only metrics and events -----------------
    run_id = run_dir.name
    resolved = config.to_dict()
    writer = RunLogWriter(run_dir)
    elapsed_before = float(ckpt.meta.get("elapsed_s", 0.0)) if ckpt is not None else 0.0
    if ckpt is None:
        writer.write_config({
            **resolved,
            "device": str(device), "device_requested": config.device,
            "run_id": run_id, "sae_report_version": SAE_REPORT_VERSION, "torch_version": str(torch.__version__),
            "start_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "input_scale": scale, "dead_window_steps": config.dead_window,
            "dead_window_tokens": config.dead_window * config.batch_size,
            "loss_formula": "mse + l1_alpha * l1; mse = mean over tokens and dims; l1 = mean over tokens of sum_i f_i"
                            + (" * ||W_dec,i||" if config.sae_variant == "april2024" else ""),
            "data": data.describe(),
            "init_from_step": init.step if init is not None else None,
        })
        writer.log_event("start", 0, device=str(device), d_in=d_in, d_sae=d_sae, input_scale=scale,
                         init_from=config.init_from)
    else:
        changed = {k: v for k, v in resolved.items() if k in ckpt.meta and ckpt.meta[k] != v and k != "device"}
        writer.log_event("resume", start_step, checkpoint=str(ckpt.path), tokens=start_step * config.batch_size,
                         changed=changed)

    l1_at, lr_at = L1Schedule(config), LRSchedule(config)
    milestones: dict[int, list[tuple[str, Any]]] = {}
    for kind, sched in (("l1_change", l1_at), ("lr_change", lr_at)):
        for m in sched.milestones():
            milestones.setdefault(m.step, []).append((kind, m))

    # Metrics stay on the device in a [flush_every, 7] buffer; the host copies it once per flush
    # (a per-step .item() would stall a GPU every step).
    B = config.batch_size
    buf = torch.zeros(config.flush_every, len(DEVICE_COLUMNS), dtype=torch.float32, device=device)
    host_cols: dict[str, list[float]] = {"step": [], "tokens": [], "l1_alpha": [], "lr": [], "elapsed_s": []}
    last_row: dict[str, float] = {}
    display = ProgressDisplay(config.total_steps, start_step, str(run_dir), d_sae) if progress else NoProgress()
    status: Literal["completed", "interrupted", "diverged"] = "completed"
    last_ckpt: Path | None = ckpt.path if ckpt is not None else None
    nonfinite_step: int | None = None

    def flush() -> bool:
        """Copy the buffered rows to the log; False (and the nonfinite event) when a loss is NaN/inf."""
        nonlocal nonfinite_step
        n = len(host_cols["step"])
        if n == 0:
            return True
        rows = buf[:n].double().cpu().numpy()
        cols: dict[str, Any] = {k: np.asarray(v) for k, v in host_cols.items()}
        for j, name in enumerate(DEVICE_COLUMNS):
            cols[name] = rows[:, j]
        cols["l0_frac"] = cols["l0"] / d_sae
        cols["dead_frac"] = cols["dead"] / d_sae
        bad = np.flatnonzero(~np.isfinite(cols["loss"]))
        if bad.size:  # keep the first non-finite row (it is the signal), drop what came after it
            cut = int(bad[0]) + 1
            cols = {k: v[:cut] for k, v in cols.items()}
            nonfinite_step = int(cols["step"][-1])
        writer.log_metrics(cols)
        last_row.clear()
        last_row.update({k: float(v[-1]) for k, v in cols.items()})
        for v in host_cols.values():
            v.clear()
        if nonfinite_step is not None:
            which = [k for k in DEVICE_COLUMNS if not math.isfinite(last_row[k])]
            writer.log_event("nonfinite", nonfinite_step, metrics=which, loss=last_row["loss"])
            return False
        display.update(int(last_row["step"]), last_row, session_tokens / max(time.monotonic() - t0, 1e-9))
        return True

    def checkpoint(step: int, final: bool = False) -> Path:
        meta = {"step": step, "tokens": step * B, "data_position_tokens": step * B, "input_scale": scale,
                "window_tokens": window_tokens, "prev_window_tokens": prev_window_tokens,
                "elapsed_s": elapsed_before + time.monotonic() - t0, "run_id": run_id}
        state = {"last_fired": last_fired, "fire_count": fire_count, "prev_fire_count": prev_fire_count}
        ckpt_config = {**resolved, "input_scale": scale, "step": step, "tokens": step * B}
        path = save_checkpoint(run_dir, step, sae, optimizer, state, ckpt_config, meta, final=final,
                               keep=config.keep_checkpoints)
        writer.log_event("checkpoint", step, path=str(path.relative_to(run_dir)), final=final)
        return path

    # Ctrl-C / SIGTERM set a flag the loop checks between steps: the step in flight completes, so
    # the checkpoint written on the way out is a consistent state. A second Ctrl-C aborts at once.
    stop = {"signal": None}
    old_handlers: dict[int, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:
        if stop["signal"] is not None:
            raise KeyboardInterrupt
        stop["signal"] = signum

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, on_signal)

    # ---- the loop -----------------------------------------------------------------------------
    step = start_step
    session_tokens = 0
    t0 = time.monotonic()
    last_flush = t0
    current_lr = None
    first_step_s = 0.0
    try:
        for step in range(start_step + 1, config.total_steps + 1):
            # Schedules are pure functions of the step; their milestones become events.
            alpha, lr = l1_at(step), lr_at(step)
            if lr != current_lr:
                for group in optimizer.param_groups:
                    group["lr"] = lr
                current_lr = lr
            for kind, m in milestones.get(step, ()):
                writer.log_event(kind, step, value=m.value, reason=m.reason)

            x = data.batch(step)
            stats = sae.forward_backward(x, alpha, count_fires=track)
            sae.project_decoder_grad()
            log_now = config.log_every > 0 and step % config.log_every == 0
            grad_norm = sae.grad_norm() if log_now else None
            optimizer.step()
            sae.normalize_decoder()
            session_tokens += B

            # Dead-feature bookkeeping on the device: no host sync.
            if track:
                counts = stats.fire_count
                last_fired.masked_fill_(counts > 0, step)
                fire_count += counts.long()
                window_tokens += B
                if step % config.dead_window == 0:  # rotate the windows kept for feature_freq.npy
                    prev_fire_count.copy_(fire_count)
                    fire_count.zero_()
                    prev_window_tokens, window_tokens = window_tokens, 0
            if log_now:
                i = len(host_cols["step"])
                dead = (step - last_fired >= config.dead_window).sum()
                l0 = counts.sum() / B
                ev = explained_variance(stats.sse, x)
                torch.stack([stats.loss, stats.mse, stats.l1, l0.float(), dead.float(), ev, grad_norm], out=buf[i])
                host_cols["step"].append(step)
                host_cols["tokens"].append(step * B)
                host_cols["l1_alpha"].append(alpha)
                host_cols["lr"].append(lr)
                host_cols["elapsed_s"].append(elapsed_before + time.monotonic() - t0)
                now = time.monotonic()
                if i + 1 == config.flush_every or now - last_flush >= config.flush_secs:
                    last_flush = now
                    if not flush():
                        status = "diverged"
                        break

            # Resampling (Anthropic 2023) of the features dead over the last dead_window steps.
            if config.resample_interval and step % config.resample_interval == 0 and step < config.total_steps:
                dead_mask = step - last_fired >= config.dead_window
                result = resample_dead(sae, optimizer, dead_mask, data.sample(config.resample_tokens, stream=1000 + step),
                                       encoder_scale=config.resample_encoder_scale,
                                       generator=torch.Generator().manual_seed(config.seed * 7919 + step))
                last_fired[dead_mask] = step  # a fresh window for the new features
                writer.log_event("resample", step, n=len(result.features), features=result.features,
                                 dead_window=config.dead_window, mean_alive_encoder_norm=result.mean_alive_encoder_norm,
                                 mean_loss=result.mean_loss)

            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.total_steps:
                if not flush():  # never checkpoint weights past a non-finite loss
                    status = "diverged"
                    break
                last_ckpt = checkpoint(step)
            if step == start_step + 1:
                if device.type == "cuda":
                    torch.cuda.synchronize()  # once: so first_step_s is the first step's real cost
                first_step_s = time.monotonic() - t0
            if stop["signal"] is not None:
                status = "interrupted"
                break
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)

    # ---- end of run: flush, checkpoint, stats, summary ---------------------------------------
    if device.type == "cuda":
        torch.cuda.synchronize()  # the host runs ahead of the GPU: wait before reading the clock
    loop_s = time.monotonic() - t0
    if status != "diverged" and not flush():
        status = "diverged"
    if status == "diverged" and nonfinite_step is not None:
        step = nonfinite_step
    if status != "diverged":
        last_ckpt = checkpoint(step, final=True)
    tokens = step * B
    # Stats are written even for a diverged run: outlier input dimensions are a likely suspect.
    write_feature_freq(run_dir, fire_count + prev_fire_count, window_tokens + prev_window_tokens)
    sample = data.sample(max(config.stats_sample, 16384), stream=1)
    write_input_stats(run_dir, sample[:config.stats_sample], sample, config.outlier_factor)
    recovery = None
    if status != "diverged" and isinstance(data, SyntheticData):
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
        "final": {k: last_row.get(k) for k in ("loss", "mse", "l1", "l0", "l0_frac", "dead", "dead_frac", "explained_variance")} if last_row else None,
        "feature_recovery": {"mmcs": recovery.mmcs, "frac_above_0.9": recovery.frac_above_09} if recovery else None,
        "nonfinite_step": nonfinite_step,
        "checkpoint": str(last_ckpt.relative_to(run_dir)) if last_ckpt and last_ckpt.is_relative_to(run_dir) else None,
        "resumed_from_step": start_step or None,
    })
    writer.close()
    display.close()
    return TrainResult(
        run_dir=run_dir, status=status, steps=step, tokens=tokens, elapsed_s=elapsed, tokens_per_s=tps,
        final_loss=last_row.get("loss"), final_l0_frac=last_row.get("l0_frac"), final_dead_frac=last_row.get("dead_frac"),
        feature_recovery=recovery.mmcs if recovery else None, checkpoint=last_ckpt, steady_tokens_per_s=steady,
    )


__all__ = ["TrainResult", "train", "config_from_run", "resolve_device", "CheckpointError"]
