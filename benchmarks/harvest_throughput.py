"""Harvest throughput, side by side in one run: ours, SAELens' ActivationsStore, the bare forward pass.

    python benchmarks/harvest_throughput.py --threads 1       # the tests' tiny GPT-2: 2 blocks, d_model 64
    python benchmarks/harvest_throughput.py --quick           # smoke run (fewer tokens, 1 round)
    python benchmarks/harvest_throughput.py --layers 4 --d-model 256 --hookpoint layers.2 --d-sae 8192
    python benchmarks/harvest_throughput.py --saelens-python benchmarks/.venv-saelens/bin/python
    python benchmarks/harvest_throughput.py --layers 12 --d-model 768 --hookpoint layers.8 --device cuda

The model is a randomly initialised GPT2LMHeadModel with a byte-level BPE tokenizer trained on the
stdlib's pydoc text (tests/harvest_support.py; nothing is downloaded), saved with save_pretrained.
The text is the same pydoc paragraphs for every mode; rows of --context tokens, --model-batch rows
per forward pass, BOS at the start of each row and document; the BOS positions are left out of the
activations in all three modes, so every figure is activation vectors delivered per second.

- bare     the forward pass to the hookpoint and nothing else, on rows tokenised beforehand: the
           model stops at the hooked block (a forward hook raises once it has the output). The limit.
- ours     ``trainer.harvest.Harvester.buffer``: documents tokenised (a background thread), packed
           into rows, forward to the hookpoint, special tokens left out, a shuffled buffer of
           --buffer tokens. What ``data_source: model`` and ``sae-report harvest`` run.
- saelens  SAELens' ``ActivationsStore`` on the same model folder (``load_model("AutoModelForCausalLM",
           ..., hook_names=[hook])``, which also stops at the hook), the same text as a
           ``datasets.Dataset``, ``prepend_bos``, ``exclude_special_tokens`` = the BOS id, a mixing
           buffer of the same size; timed over ``next_batch()`` after its first buffer is filled.
           In a subprocess (this interpreter when sae_lens imports here, else --saelens-python);
           skipped with the reason when neither has it.

Then training: SAE steps/s of ``trainer.train`` streaming from the model (``data_source: model``,
the next buffer harvested by a background thread) against training on the same activations already
in memory (``data_source: files``, a page-cached .npy), with an SAE whose step costs more per
token than the model's forward pass (the case the prefetch is for; the costs of both are printed).

Modes are interleaved over --repeats rounds; medians are printed with ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rounds import interleaved  # noqa: E402 (benchmarks/rounds.py)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAELENS_SCRIPT = r"""
import json, os, sys, time, warnings
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
import torch
a = json.loads(sys.argv[1])
if a["threads"]:
    torch.set_num_threads(a["threads"])
from datasets import Dataset
from sae_lens.load_model import load_model
from sae_lens.training.activations_store import ActivationsStore
texts = json.load(open(a["texts"]))
model = load_model("AutoModelForCausalLM", a["model"], device=a["device"], hook_names=[a["hook"]])
bos = model.tokenizer.bos_token_id
store = ActivationsStore(
    model=model, dataset=Dataset.from_dict({"text": texts}), streaming=False, hook_name=a["hook"],
    hook_head_index=None, context_size=a["context"], d_in=a["d_model"], n_batches_in_buffer=a["buffer"] // a["context"],
    total_training_tokens=10**12, store_batch_size_prompts=a["model_batch"], train_batch_size_tokens=a["batch"],
    prepend_bos=True, normalize_activations="none", device=a["device"], dtype="float32",
    exclude_special_tokens=torch.tensor([bos]), sequence_separator_token="bos")
store.next_batch()  # the first buffer fill (warm-up)
n = 0
t = time.perf_counter()
while n < a["tokens"]:
    n += store.next_batch().shape[0]
print(json.dumps({"tokens_per_s": n / (time.perf_counter() - t)}))
"""


def build(args: argparse.Namespace, workdir: Path) -> Path:
    from harvest_support import build_tiny_model

    return build_tiny_model("gpt2", workdir / "model", n_layer=args.layers, d_model=args.d_model,
                            n_head=max(1, args.d_model // 64), vocab_size=args.vocab)


def model_config(model: Path, args: argparse.Namespace, **kw):
    from trainer import TrainConfig

    base = dict(data_source="model", model=str(model), hookpoint=args.hookpoint, dataset="builtin:pydoc",
                context_size=args.context, model_batch_size=args.model_batch, shuffle_buffer_tokens=args.buffer,
                normalize_input=False, device=args.device)
    base.update(kw)
    return TrainConfig(**base)


class Harvest:
    """Ours and the bare forward on one loaded model (loaded once: both time steady state)."""

    def __init__(self, model: Path, args: argparse.Namespace) -> None:
        from trainer.harvest import Cursor, ModelData

        self.args = args
        self.data = ModelData(model_config(model, args), seed=0, batch_size=args.batch,
                              device=torch.device(args.device), prefetch=False)
        self.k = 0
        rows = []
        for b in self.data.rows_spec.batches(Cursor(0, 0, 0)):
            rows.append(b)
            if sum(r.n_keep for r in rows) >= args.tokens:
                break
        self.rows = rows
        self.kept = sum(r.n_keep for r in rows)
        dev = self.data.loaded.device
        self.ids = [r.ids.to(dev) for r in rows]

    def bare(self) -> float:
        fwd = self.data.forward
        _sync(self.args.device)
        t = time.perf_counter()
        for ids in self.ids:
            fwd.run(ids, None)
        _sync(self.args.device)
        return self.kept / (time.perf_counter() - t)

    def ours(self) -> float:
        h = self.data.harvester
        n = max(1, -(-self.args.tokens // self.args.buffer))
        _sync(self.args.device)
        t = time.perf_counter()
        for _ in range(n):
            h.buffer(self.k)
            self.k += 1
        _sync(self.args.device)
        return n * self.args.buffer / (time.perf_counter() - t)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def find_saelens(arg: str | None) -> tuple[str | None, str]:
    if arg:
        if not Path(arg).exists():
            return None, f"--saelens-python {arg}: no such file"
        return arg, arg
    default = ROOT / "benchmarks" / ".venv-saelens" / "bin" / "python"
    if default.exists():
        return str(default), str(default)
    try:
        import sae_lens

        return sys.executable, f"sae_lens {sae_lens.__version__} in this interpreter"
    except ImportError:
        return None, "SAELens not found (pip install sae-lens, here or in its own venv: --saelens-python)"


def measure_saelens(python: str, model: Path, texts: Path, args: argparse.Namespace) -> float:
    hook = args.hookpoint if args.hookpoint.startswith("transformer.") else f"transformer.h.{args.hookpoint.split('.')[-1]}"
    payload = json.dumps({"model": str(model), "texts": str(texts), "hook": hook, "context": args.context,
                          "model_batch": args.model_batch, "batch": args.batch, "buffer": args.buffer,
                          "tokens": args.tokens, "d_model": args.d_model, "device": args.device, "threads": args.threads})
    out = subprocess.run([python, "-c", SAELENS_SCRIPT, payload], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "SAELens failed")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"])


def measure_training(model: Path, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """SAE steps/s streaming from the model against the same activations in memory."""
    from trainer import TrainConfig, train
    from trainer.harvest import ModelData

    steps = args.train_steps
    need = (steps + 2) * args.batch + 16384
    data = ModelData(model_config(model, args), seed=0, batch_size=args.batch, device=torch.device("cpu"), prefetch=False)
    acts = data.rows(0, need).numpy()
    data.close()
    npy = workdir / "acts.npy"
    np.save(npy, acts)
    sae = dict(d_sae=args.d_sae, batch_size=args.batch, total_steps=steps, checkpoint_every=0, resample_interval=0,
               learning_rate=1e-4, device=args.device, threads=args.threads or 0, stats_sample=256,
               shuffle_buffer_tokens=args.buffer)
    out: dict[str, list[float]] = {"streamed": [], "in memory": []}
    for _ in range(args.repeats):
        for name, cfg in (("streamed", model_config(model, args, normalize_input=True, **sae)),
                          ("in memory", TrainConfig(data_source="files", data_path=str(npy),
                                                    shuffle_block_tokens=args.buffer, **sae))):
            run = workdir / f"run_{time.monotonic_ns()}"
            result = train(cfg, run_dir=run)
            shutil.rmtree(run, ignore_errors=True)
            out[name].append(result.steady_tokens_per_s / args.batch)
            print(f"  train {name:9s} {out[name][-1]:8.2f} steps/s", flush=True)
    return {k: statistics.median(v) for k, v in out.items()}


def sae_step_tokens_per_s(args: argparse.Namespace) -> float:
    """The SAE step alone (forward, backward, Adam) on random inputs: its cost per token."""
    from trainer.sae import SparseAutoencoder

    sae = SparseAutoencoder(args.d_model, args.d_sae, device=torch.device(args.device),
                            generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    x = torch.randn(args.batch, args.d_model, device=args.device)
    for _ in range(2):
        sae.forward_backward(x, 0.01, count_fires=True)
        opt.step()
    _sync(args.device)
    t = time.perf_counter()
    for _ in range(5):
        sae.forward_backward(x, 0.01, count_fires=True)
        opt.step()
    _sync(args.device)
    return 5 * args.batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2, help="blocks of the GPT-2-shaped model")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=1000, help="BPE vocabulary trained on the pydoc text")
    ap.add_argument("--hookpoint", default="layers.1")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--model-batch", type=int, default=32, help="rows per forward pass")
    ap.add_argument("--buffer", type=int, default=65536, help="shuffle / mixing buffer, tokens")
    ap.add_argument("--batch", type=int, default=4096, help="SAE batch, tokens")
    ap.add_argument("--tokens", type=int, default=131072, help="tokens harvested per measurement")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d-sae", type=int, default=2048, help="SAE features for the training comparison")
    ap.add_argument("--train-steps", type=int, default=96, help="SAE steps per training measurement (0: skip)")
    ap.add_argument("--saelens-python", default=None, help="python of a venv with sae-lens installed")
    ap.add_argument("--no-saelens", action="store_true")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.buffer, args.repeats, args.train_steps = 16384, 16384, 1, 16
    if args.threads:
        torch.set_num_threads(args.threads)
    saelens, note = (None, "skipped (--no-saelens)") if args.no_saelens else find_saelens(args.saelens_python)
    workdir = Path(tempfile.mkdtemp(prefix="sae_harvest_bench_"))
    try:
        model = build(args, workdir)
        from trainer.texts import pydoc_paragraphs

        texts = workdir / "texts.json"
        texts.write_text(json.dumps(pydoc_paragraphs()))
        import transformers

        print(f"model: GPT2LMHeadModel, {args.layers} blocks, d_model {args.d_model}, vocab {args.vocab}; hookpoint "
              f"{args.hookpoint}; context {args.context}, {args.model_batch} rows per forward, buffer {args.buffer:,} "
              f"tokens; {args.tokens:,} tokens x {args.repeats} rounds")
        print(f"device {args.device}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
              f"transformers {transformers.__version__}; SAELens: {note}")
        h = Harvest(model, args)
        h.bare()
        h.ours()  # warm-up: allocations, the tokenizer's first call
        modes = {"bare": h.bare, "ours": h.ours}
        if saelens:
            modes["saelens"] = lambda: measure_saelens(saelens, model, texts, args)
        med = interleaved(modes, args.repeats, width=8)
        print("\nmedian tokens/s:")
        for m, v in med.items():
            print(f"  {m:8s} {v:>10,.0f}")
        print("ratios:")
        print(f"  ours / bare forward   {med['ours'] / med['bare']:.3f}   (goal >= 0.8)")
        if "saelens" in med:
            print(f"  ours / SAELens        {med['ours'] / med['saelens']:.3f}   (goal >= 1.5)")
            print(f"  SAELens / bare        {med['saelens'] / med['bare']:.3f}")
        else:
            print(f"  ours / SAELens        n/a: {note}")
        h.data.close()
        if args.train_steps:
            step_tps = sae_step_tokens_per_s(args)
            print(f"\ntraining: d_sae {args.d_sae:,}, batch {args.batch:,}, {args.train_steps} steps x {args.repeats} "
                  f"rounds; SAE step alone {step_tps:,.0f} tokens/s, model forward alone {med['bare']:,.0f} tokens/s "
                  f"(the forward costs {step_tps / med['bare']:.2f} x the SAE step per token)")
            tr = measure_training(model, args, workdir)
            print(f"  streamed / in memory  {tr['streamed'] / tr['in memory']:.3f}   (goal >= 0.8; "
                  f"{tr['streamed']:.2f} vs {tr['in memory']:.2f} steps/s)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
