"""SAE-Track speed-up on the built-in language model: tokens a recurrently initialised SAE needs to
reach the fresh SAE's final loss, against the fresh SAE's own tokens, side by side with the ratio.

Acceptance (issue 7): ratio <= 1/10 on the built-in LM (the paper reports under 1/20).

    python benchmarks/track_speedup.py --quick        # smoke run: tiny LM, tiny SAEs (~30 s)
    python benchmarks/track_speedup.py                # full: small LM (16 checkpoints), 3 controls

The LM series is cached (``--cache-dir``); SAE runs go to ``--out`` (a temp folder by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ACCEPT = 0.1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny LM and tiny SAEs")
    p.add_argument("--out", type=Path, default=None, help="output folder for the SAE runs (default: a temp folder)")
    p.add_argument("--cache-dir", type=Path, default=None, help="LM cache (default: ~/.cache/sae-report)")
    p.add_argument("--fraction", type=float, default=0.05, help="budget fraction of the recurrent SAEs")
    p.add_argument("--steps", type=int, default=None, help="full SAE budget in steps")
    p.add_argument("--batch-size", type=int, default=None, help="SAE tokens per step")
    p.add_argument("--spacing", choices=("linear", "log"), default="linear", help="LM checkpoint spacing")
    p.add_argument("--controls", default=None, help="comma-separated checkpoint indices for fresh controls "
                   "(default: quick -1; full 3,7,-1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sae_report.commands.track import BUILTIN_SAE
    from sae_report.track import analyze_series, read_manifest
    from trainer.lm import LMConfig, build_lm_series
    from trainer.track import TrackConfig, train_series

    if args.quick:
        lm = LMConfig.preset("tiny", n_checkpoints=4, seed=args.seed, threads=args.threads)
        sae = {**BUILTIN_SAE, "total_steps": 300, "batch_size": 256}
        controls = (-1,)
    else:
        lm = LMConfig.preset("small", seed=args.seed, threads=args.threads, spacing=args.spacing)
        sae = dict(BUILTIN_SAE)
        controls = (3, 7, -1)
    if args.controls:
        controls = tuple(int(c) for c in args.controls.split(","))
    if args.steps:
        sae["total_steps"] = args.steps
    if args.batch_size:
        sae["batch_size"] = args.batch_size
    sae.update(threads=args.threads, seed=args.seed)
    out = args.out or Path(tempfile.mkdtemp(prefix="track_speedup_"))

    t0 = time.perf_counter()
    series = build_lm_series(lm, args.cache_dir, log=lambda m: print(m, file=sys.stderr))
    t_lm = time.perf_counter() - t0
    t1 = time.perf_counter()
    train_series(series.acts_paths, out, TrackConfig(base=sae, fraction=args.fraction, controls=controls,
                                                     labels=tuple(f"LM step {c.step}" for c in series.checkpoints)),
                 log=lambda m: print(m, file=sys.stderr))
    t_sae = time.perf_counter() - t1
    t = analyze_series(read_manifest(out), n_eval=16384)

    print(f"\nSAE-Track speed-up ({'quick' if args.quick else 'full'}): LM d_model {lm.d_model}, {lm.n_layer} layers, "
          f"{len(series.checkpoints)} {lm.spacing}-spaced checkpoints; SAE d_sae {lm.d_model * sae['expansion_factor']}, "
          f"full budget {sae['total_steps']:,} steps x {sae['batch_size']:,} tokens, recurrent fraction {args.fraction:g}")
    print(f"LM {'reused from cache' if series.reused else f'trained in {t_lm:.0f} s'}; SAEs trained in {t_sae:.0f} s; runs in {out}\n")
    head = (f"{'checkpoint':<16}{'metric':<20}{'target':>10}{'fresh tokens':>15}{'recurrent tokens':>19}{'ratio':>10}"
            f"{'speed-up':>10}{'within series budget':>22}")
    print(head)
    print("-" * len(head))
    labels = [c.label for c in t.checkpoints]
    ratios = []
    for s in t.speedups:
        fresh = f"{s.fresh_tokens:,}" if s.fresh_tokens is not None else "not reached"
        rec = f"{s.recurrent_tokens:,}" if s.recurrent_tokens is not None else f">{s.recurrent_budget:,}"
        if s.ratio is not None:
            ratio, speed = f"{s.ratio:.3f}", (f"{1 / s.ratio:.0f}x" if s.ratio > 0 else "inf")
        elif s.ratio_upper_bound is not None:
            ratio, speed = f">{s.ratio_upper_bound:.3f}", f"<{1 / s.ratio_upper_bound:.0f}x"
        else:
            ratio, speed = "-", "-"
        if s.metric == "loss":
            ratios.append(s.ratio if s.ratio is not None else float("inf"))
        budget = round(args.fraction * s.fresh_budget)
        inside = "-" if s.recurrent_tokens is None else ("yes" if s.recurrent_tokens <= budget else f"no (>{budget:,})")
        print(f"{labels[s.checkpoint]:<16}{s.metric:<20}{s.target:>10.4g}{fresh:>15}{rec:>19}{ratio:>10}{speed:>10}{inside:>22}")
    loose = [s for s in analyze_series(read_manifest(out), tolerance=0.05, n_eval=4096).speedups if s.metric == "loss"]
    print("\nsensitivity, target = fresh final loss x 1.05 instead of x 1.01: "
          + ", ".join(f"{labels[s.checkpoint]}: fresh {s.fresh_tokens:,} / recurrent "
                      + (f"{s.recurrent_tokens:,} = {s.ratio:.3f}" if s.ratio is not None else "not reached")
                      for s in loose if s.fresh_tokens))
    if not ratios:
        print("\nno loss comparison measured")
        return 1
    worst, median = max(ratios), statistics.median(ratios)
    missed = [labels[s.checkpoint] for s in t.speedups if s.metric == "loss" and s.ratio is None]
    print(f"\nloss ratio recurrent/fresh: median {median:.3f}, worst "
          + (f"{worst:.3f}" if worst != float("inf") else f"not reached within the recurrent budget at {', '.join(missed)}")
          + f" (acceptance <= {ACCEPT:g}; paper < 0.05) -> {'PASS' if worst <= ACCEPT else 'FAIL'}")
    return 0 if worst <= ACCEPT else 1


if __name__ == "__main__":
    raise SystemExit(main())
