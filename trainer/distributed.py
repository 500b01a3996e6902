"""Data-parallel training on torch.distributed, launched by torchrun (docs/trainer.md, "Several
processes (torchrun)").

``torchrun --nproc_per_node N -m sae_report train CONFIG`` starts N processes with ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` set; ``context()`` sees them and joins the process group (gloo on a CPU,
nccl on CUDA with rank r on ``cuda:LOCAL_RANK``). Without them (or with ``WORLD_SIZE=1``) it returns
``Single``, whose methods do nothing, so the one-process path is unchanged.

The design, kept exact (N ranks reproduce one process with the same global batch, to float rounding):

- ``batch_size`` is the global batch; rank r trains on rows ``[r B/N, (r+1) B/N)`` of the batch one
  process would see at that step (``local_batch``).
- Each rank's hand-written step fills ``.grad`` with the gradient of the mean over its own tokens.
  The gradients live in one flat buffer (``Bucket``): one ``all_reduce`` (sum) per step reduces
  them, and in the same buffer the fire counts (summed, so every rank agrees which features are
  dead), the sums the logged metrics need (loss, sse, l1 / aux_loss, the sum of the per-token
  ratios ||x_hat|| / ||x|| for ``l2_ratio``; on logged steps also sum x
  and sum ||x||^2 for the explained variance) and two control flags (a signal seen by any rank, a
  log flush due on rank 0's clock), so every rank stops and flushes at the same step. Gradients are
  then divided by N: every rank takes the same Adam step.
- The parameters (and Adam moments) are broadcast from rank 0 after the set-up and after every
  resampling (which every rank computes from the same inputs and generator).
- Only rank 0 writes the run directory; a failed collective (a rank died) is ``PeerLostError``.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
import re
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch

#: Seconds a collective waits for a silent peer before failing (a dead peer's closed connection
#: fails at once with gloo). A checkpoint of a very large SAE must be written within this time.
TIMEOUT_ENV = "SAE_REPORT_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0
#: Test hook: ``RANK:STEP`` makes that rank exit at once (``os._exit(1)``) when it reaches that step.
KILL_ENV = "SAE_REPORT_TEST_KILL_AT"

T = TypeVar("T")


class PeerLostError(RuntimeError):
    """A collective failed: another rank died or stopped answering. ``str()`` is one line."""


class FollowerExit(SystemExit):
    """Rank 0 failed during the set-up and says why; the other ranks leave quietly (exit code 1)."""

    def __init__(self) -> None:
        super().__init__(1)


def env_world() -> tuple[int, int, int]:
    """``(world_size, rank, local_rank)`` from torchrun's environment; ``(1, 0, 0)`` without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", "0") or 0)
        local = int(os.environ.get("LOCAL_RANK", str(rank)) or rank)
    except ValueError:
        return 1, 0, 0
    return max(world, 1), rank, local


class Single:
    """One process: rank 0 of 1; every method is the identity or does nothing."""

    world = 1
    rank = 0
    local_rank = 0
    is_main = True

    def device(self, device: torch.device) -> torch.device:
        return device

    def on_main(self, fn: Callable[[], T]) -> T:
        return fn()

    def any(self, flag: bool) -> bool:
        return flag

    def broadcast_state(self, sae: Any, optimizer: Any, step: int | None = None) -> None:
        return None

    def close(self, wait: bool = True) -> None:
        return None


class Distributed(Single):
    """N ranks in a process group (``context``)."""

    is_main = False

    def __init__(self, world: int, rank: int, local_rank: int, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.world, self.rank, self.local_rank = world, rank, local_rank
        self.is_main = rank == 0
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self._device = device
        self.timeout_s = _timeout_s()
        if not dist.is_initialized():
            dist.init_process_group(self.backend, timeout=_dt.timedelta(seconds=self.timeout_s))
            self._owned = True
        else:
            self._owned = False
        kill = os.environ.get(KILL_ENV, "")
        self._kill_step = None
        if kill.count(":") == 1:
            r, s = kill.split(":")
            if r.strip().isdigit() and s.strip().isdigit() and int(r) == rank:
                self._kill_step = int(s)

    def device(self, device: torch.device) -> torch.device:
        return self._device

    # ---- set-up: rank 0 decides, everybody hears ------------------------------------------
    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and hand its result to every rank. When it raises, rank 0
        re-raises and the other ranks leave quietly (``FollowerExit``): rank 0 says why."""
        payload: list[Any] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                payload[0] = ("ok", fn())
            except BaseException as exc:  # noqa: BLE001 - handed on, then re-raised
                error = exc
                payload[0] = ("error", None)
            try:
                pickle.dumps(payload[0])
            except Exception:  # an unpicklable result: refuse it loudly on rank 0
                error = error or TypeError("on_main: the result cannot be sent to the other ranks")
                payload[0] = ("error", None)
        self._collective(lambda: self.dist.broadcast_object_list(payload, src=0), None)
        if error is not None:
            raise error
        kind, value = payload[0]
        if kind != "ok":
            raise FollowerExit()
        return value

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on any."""
        t = torch.tensor([1.0 if flag else 0.0], device=self._device)
        self._collective(lambda: self.dist.all_reduce(t), None)
        return bool(t.item() > 0)

    def all_gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's ``t`` (the same shape on each), concatenated in rank order."""
        parts = [torch.empty_like(t) for _ in range(self.world)]
        self._collective(lambda: self.dist.all_gather(parts, t.contiguous()), None)
        return torch.cat(parts)

    def reduce_min(self, t: torch.Tensor) -> None:
        """``t`` (in place) becomes its minimum over the ranks."""
        self._collective(lambda: self.dist.all_reduce(t, op=self.dist.ReduceOp.MIN), None)

    # ---- the state every rank must hold identically -----------------------------------------
    def broadcast_state(self, sae: Any, optimizer: Any, step: int | None = None) -> None:
        """Rank 0's parameters, buffers and Adam moments to every rank (one flat broadcast)."""
        tensors: list[torch.Tensor] = [getattr(sae, n).data for n in sae.PARAM_NAMES]
        for name, buf in sae.named_buffers():
            if buf.is_floating_point():
                tensors.append(buf)
        for name in sae.PARAM_NAMES:
            state = optimizer.state.get(getattr(sae, name)) or {}
            tensors.extend(state[k] for k in ("exp_avg", "exp_avg_sq") if k in state)
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        self._collective(lambda: self.dist.broadcast(flat, src=0), step)
        off = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[off:off + n].view_as(t))
            off += n

    # ---- failures ---------------------------------------------------------------------------
    def maybe_die(self, step: int) -> None:
        """The test hook (``SAE_REPORT_TEST_KILL_AT=RANK:STEP``)."""
        if self._kill_step is not None and step == self._kill_step:
            os._exit(1)

    def _collective(self, fn: Callable[[], Any], step: int | None) -> Any:
        try:
            return fn()
        except (RuntimeError, ValueError) as exc:  # DistBackendError is a RuntimeError
            raise self.lost(exc, step) from None

    def lost(self, exc: BaseException, step: int | None) -> PeerLostError:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # gloo's "[.../pair.cc:553] " source location
        text = re.split(r"(?<=[a-z0-9\]])\. ", text)[0][:160]
        where = f"at step {step}" if step is not None else "during the set-up"
        return PeerLostError(f"rank {self.rank} lost a peer {where} ({type(exc).__name__}: {text})")

    def close(self, wait: bool = True) -> None:
        """Leave the group. ``wait``: the run ended normally on this rank, so first wait for every
        rank to get here (rank 0 writes the final checkpoint and summary while the others are
        done): the ranks tear gloo down together, never one while its peer still holds the
        connection, which can abort the early rank at exit ("terminate called without an active
        exception"). After an error the barrier is skipped (a lost peer fails it anyway)."""
        if self._owned and self.dist.is_initialized():
            if wait:
                try:
                    self.dist.barrier()
                except Exception:  # a peer that failed while this rank waited: nothing to wait for
                    pass
            try:
                self.dist.destroy_process_group()
            except Exception:  # a broken group: nothing left to tidy
                pass


def _timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        value = DEFAULT_TIMEOUT_S
    return value if value > 0 else DEFAULT_TIMEOUT_S


def context(device: torch.device) -> Single:
    """``Distributed`` under torchrun with ``WORLD_SIZE > 1``, else ``Single``. On CUDA, rank r
    trains on ``cuda:LOCAL_RANK`` (a device index in the config is ignored there)."""
    world, rank, local = env_world()
    if world <= 1:
        return Single()
    if device.type == "cuda":
        device = torch.device("cuda", local)
    return Distributed(world, rank, local, device)


def local_batch(data: Any, step: int, rank: int, world: int) -> torch.Tensor:
    """Rank ``rank``'s rows of the global batch of ``step``: activation files read only those rows;
    synthetic data (a pure function of the step, cheap next to the step) and a model's activations
    harvested while training (every rank runs the whole harvest, so the order is one process's; the
    model's forward is not split) make the global batch and slice it."""
    B = data.batch_size
    n = B // world
    if data.kind == "files":
        x = data.rows((step - 1) * B + rank * n, n)
        return x * data.scale if data.scale != 1.0 else x
    return data.batch(step)[rank * n:(rank + 1) * n]


@dataclass
class Reduced:
    """What one step's all_reduce gives back (0-dim tensors on the device, global batch)."""

    loss: torch.Tensor
    mse: torch.Tensor
    third: torch.Tensor | None
    sse: torch.Tensor
    fire_count: torch.Tensor | None
    explained_variance: torch.Tensor | None
    stop: bool
    flush_due: bool
    l2_ratio: torch.Tensor | None = None
    """Mean over the global batch of ||x_hat|| / ||x|| (when the step computed it)."""


class Bucket:
    """One flat fp32 buffer: the parameters' ``.grad`` are views into its head (so the step writes
    them in place, nothing is copied), then 2 flags, ``d_sae`` fire counts, 4 metric sums, and
    ``d_in + 1`` sums for the explained variance. A step reduces the prefix it needs (the last
    ``d_in + 1`` entries on logged steps only)."""

    def __init__(self, sae: Any, ctx: Distributed, *, batch_size: int) -> None:
        params = [getattr(sae, n) for n in sae.PARAM_NAMES]
        self.n_grad = sum(p.numel() for p in params)
        self.d_sae, self.d_in = sae.d_sae, sae.d_in
        self.ctx, self.B = ctx, batch_size
        self.i_flags = self.n_grad
        self.i_fire = self.i_flags + 2
        self.i_sums = self.i_fire + self.d_sae
        self.i_ev = self.i_sums + 4
        total = self.i_ev + self.d_in + 1
        p0 = params[0]
        self.flat = torch.zeros(total, device=p0.device, dtype=torch.float32)
        off = 0
        for p in params:
            n = p.numel()
            p.grad = self.flat[off:off + n].view_as(p)
            off += n
        self.comm_s = 0.0  # seconds inside all_reduce (the benchmark reads it)
        self.calls = 0

    def reduce(self, stats: Any, x: torch.Tensor, *, step: int, stop: bool, flush_due: bool, with_ev: bool) -> Reduced:
        import time

        f = self.flat
        world = self.ctx.world
        f[self.i_flags] = 1.0 if stop else 0.0
        f[self.i_flags + 1] = 1.0 if flush_due else 0.0
        if stats.fire_count is not None:
            f[self.i_fire:self.i_sums].copy_(stats.fire_count)
        else:
            f[self.i_fire:self.i_sums].zero_()
        third = stats.l1 if stats.l1 is not None else stats.aux_loss
        zero = torch.zeros((), device=f.device, dtype=f.dtype)
        ratio = getattr(stats, "l2_ratio_sum", None)
        torch.stack([stats.loss.float(), stats.sse.float(), third.float() if third is not None else zero,
                     ratio.float() if ratio is not None else zero], out=f[self.i_sums:self.i_ev])
        end = self.i_ev
        if with_ev:
            ones = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
            torch.mv(x.t(), ones, out=f[self.i_ev:self.i_ev + self.d_in])
            f[self.i_ev + self.d_in] = torch.dot(x.reshape(-1), x.reshape(-1))
            end = f.numel()
        self.ctx.maybe_die(step)
        t = time.perf_counter()
        head = f[:end]
        self.ctx._collective(lambda: self.ctx.dist.all_reduce(head), step)
        if f.device.type == "cuda":
            torch.cuda.synchronize(f.device)
        self.comm_s += time.perf_counter() - t
        self.calls += 1
        f[:self.n_grad].mul_(1.0 / world)
        flags = f[self.i_flags:self.i_flags + 2].tolist()
        sums = f[self.i_sums:self.i_ev]
        loss = sums[0] / world
        sse = sums[1]
        mse = sse / (self.B * self.d_in)
        third_out = sums[2] / world if third is not None else None
        ratio_out = sums[3] / self.B if ratio is not None else None
        ev = None
        if with_ev:
            m = f[self.i_ev:self.i_ev + self.d_in] / self.B
            total = f[self.i_ev + self.d_in] - self.B * torch.dot(m, m)
            ev = 1.0 - sse / total.clamp_min(1e-30)
        fire = f[self.i_fire:self.i_sums].clone() if stats.fire_count is not None else None
        return Reduced(loss=loss, mse=mse, third=third_out, sse=sse, fire_count=fire, explained_variance=ev,
                       stop=flags[0] > 0, flush_due=flags[1] > 0, l2_ratio=ratio_out)


__all__ = ["Bucket", "Distributed", "FollowerExit", "PeerLostError", "Reduced", "Single", "context", "env_world",
           "local_batch", "KILL_ENV", "TIMEOUT_ENV"]
