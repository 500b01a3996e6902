"""SAELens' SAE folder format (trainer/export.py, ``sae-report export``, ``init_from: FOLDER``).

- a trained SAE of every variant the trainer has is written at the end of training to
  ``checkpoints/final/saelens/``; real SAELens 6 (``SAE.load_from_disk``) loads it and its
  encode / decode / forward on raw activations equal ours within 1e-5 (skipped with a reason when
  ``sae_lens`` is not importable: ``pip install -e '.[saelens]'``);
- ``sae-report export`` writes any checkpoint, replaces an earlier export, refuses in one line;
- round trip: ``init_from`` the exported folder loads our weights back (to float32 rounding), and
  a run started from it sees the same first loss as one started from our checkpoint;
- a foreign SAELens folder (no b_dec on the input, free decoder norms, raw units) starts a run
  with the same reconstruction; corrupt or mismatched folders are one line naming the file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from sae_report.cli import main  # noqa: E402
from sae_report.runlog import read_run  # noqa: E402
from trainer import TrainConfig, train  # noqa: E402
from trainer.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from trainer.export import (  # noqa: E402
    ARCHITECTURES,
    _readable_architectures,
    export_saelens,
    prepare_init,
    tl_hook_name,
    trainable_variants,
)
from trainer.sae import SparseAutoencoder  # noqa: E402

TINY = dict(d_in=16, d_sae=64, batch_size=128, threads=1, total_steps=60)
#: Keys a variant needs beyond TINY (k for the top-k variants).
NEEDS = {"topk": {"k": 4}, "batchtopk": {"k": 4}}
VARIANTS = [v for v in trainable_variants() if v in ARCHITECTURES]
TOL = 1e-5


def tiny(variant: str = "standard", **kw: object) -> TrainConfig:
    return TrainConfig(**{**TINY, "sae_variant": variant, **NEEDS.get(variant, {}), **kw})  # type: ignore[arg-type]


def saelens():
    try:
        import sae_lens
    except Exception as exc:  # ImportError, or a broken install
        pytest.skip(f"sae_lens is not importable ({type(exc).__name__}: {exc}); pip install -e '.[saelens]'")
    return sae_lens


def cli(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished tiny run per variant (60 steps, checkpoint at 30 and at the end)."""
    out = tmp_path_factory.mktemp("runs")
    done = {}
    for variant in VARIANTS:
        result = train(tiny(variant, checkpoint_every=30), run_dir=out / variant)
        assert result.status == "completed"
        done[variant] = out / variant
    return done


def ours(run: Path, x_raw: torch.Tensor, ckpt: str = "final") -> tuple[torch.Tensor, torch.Tensor]:
    """Our feature activations and reconstruction (raw units) for raw inputs, from the checkpoint."""
    folder = run / "checkpoints" / ckpt
    meta = json.loads((folder / "config.json").read_text())
    weights = load_file(str(folder / "sae.safetensors"))
    sae = SparseAutoencoder(meta["d_in"], meta["d_sae"], variant=meta["sae_variant"])
    sae.load_tensors(weights, str(folder))
    s = meta["input_scale"]
    f = sae.encode(x_raw * s, k=meta.get("k")) if meta["sae_variant"] == "topk" else sae.encode(x_raw * s)
    return f, sae.decode(f) / s


def raw_sample(run: Path) -> torch.Tensor:
    """The run's own input sample (stats/, normalised) back in raw units, plus off-distribution rows."""
    s = json.loads((run / "checkpoints" / "final" / "config.json").read_text())["input_scale"]
    x = torch.from_numpy(np.load(run / "stats" / "input_sample.npy")) / s
    g = torch.Generator().manual_seed(0)
    return torch.cat([x, x.mean(0) + x.std(0) * torch.randn(256, x.shape[1], generator=g)])


# ------------------------------------------------------------------------------------------------
# Export: loaded by real SAELens, same reconstruction
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_final_export_loads_in_saelens_with_our_reconstruction(runs: dict[str, Path], variant: str) -> None:
    run = runs[variant]
    folder = run / "checkpoints" / "final" / "saelens"
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    cfg = json.loads((folder / "cfg.json").read_text())
    meta = json.loads((run / "checkpoints" / "final" / "config.json").read_text())
    assert cfg["architecture"] == ARCHITECTURES[variant].saelens
    assert (cfg["d_in"], cfg["d_sae"], cfg["dtype"], cfg["normalize_activations"]) == (16, 64, "float32", "none")
    assert cfg["metadata"]["sae_report"]["input_scale"] == meta["input_scale"] != 1.0
    assert cfg["metadata"]["sae_report"]["sae_variant"] == variant and cfg["metadata"]["sae_report"]["step"] == 60
    sae_lens = saelens()
    sae = sae_lens.SAE.load_from_disk(folder)
    assert sae.cfg.architecture() == cfg["architecture"] and sae.cfg.d_in == 16 and sae.cfg.d_sae == 64
    x = raw_sample(run)
    f_ours, x_hat_ours = ours(run, x)
    with torch.no_grad():
        f_theirs = sae.encode(x)
        decoded = sae.decode(f_theirs)
        forward = sae(x)
    assert torch.equal(f_theirs > 0, f_ours > 0)  # the same latents fire
    assert float((f_theirs - f_ours).abs().max()) <= TOL
    assert float((decoded - x_hat_ours).abs().max()) <= TOL
    assert float((forward - x_hat_ours).abs().max()) <= TOL


def test_export_command_writes_any_checkpoint_and_replaces_only_its_own(runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs["standard"]
    res = cli("export", run, "--checkpoint", "step_30", "--out", tmp_path / "s30")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == (f"wrote {tmp_path / 's30'} (SAELens standard SAE from sae_variant standard, d_in 16, "
                        "d_sae 64, float32)")
    assert lines[1].startswith("input scale ") and lines[1].endswith("folded into the weights: it reads raw activations")
    assert lines[-1] == f'load with: sae_lens.SAE.load_from_disk("{tmp_path / "s30"}")'
    cfg = json.loads((tmp_path / "s30" / "cfg.json").read_text())
    assert cfg["metadata"]["sae_report"]["step"] == 30
    # the same step by number, again into the same folder: replaced whole
    before = (tmp_path / "s30" / "sae_weights.safetensors").stat().st_ino
    assert cli("export", run, "--checkpoint", "30", "--out", tmp_path / "s30").exit_code == 0
    assert (tmp_path / "s30" / "sae_weights.safetensors").stat().st_ino != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s30"]  # no temporary folder left
    # default: the final checkpoint, into CHECKPOINT/saelens (what training wrote, rewritten the same)
    final = run / "checkpoints" / "final" / "saelens"
    expected = load_file(str(final / "sae_weights.safetensors"))
    assert cli("export", run).exit_code == 0
    got = load_file(str(final / "sae_weights.safetensors"))
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    # a checkpoint folder itself
    res = cli("export", run / "checkpoints" / "step_000000030", "--out", tmp_path / "direct")
    assert res.exit_code == 0, res.output
    assert load_file(str(tmp_path / "direct" / "sae_weights.safetensors"))["W_enc"].equal(
        load_file(str(tmp_path / "s30" / "sae_weights.safetensors"))["W_enc"])


def test_export_command_errors_are_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs["standard"]

    def err(*args: object) -> tuple[int, str]:
        res = cli("export", *args)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        return res.exit_code, res.stderr.strip()

    assert err(run, "--checkpoint", "step_7") == (
        2, f"Error: {run / 'checkpoints' / 'step_000000007'}: no such checkpoint "
           "(there: final, step_000000030, step_000000060)")
    assert err(tmp_path / "nowhere") == (2, f"Error: {tmp_path / 'nowhere'}: no such run directory or checkpoint")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    code, msg = err(run, "--out", busy)
    assert code == 2 and msg == (f"Error: {busy}: holds other files (notes.txt); only an empty folder or an "
                                 "earlier SAELens export is replaced")
    assert (busy / "notes.txt").read_text() == "mine"
    folder = run / "checkpoints" / "final" / "saelens"
    assert err(folder) == (2, f"Error: {folder}: already a SAELens SAE folder (export reads a run directory or "
                              "one of its checkpoints)")
    # a run another process writes: refused when the export would go into it, fine elsewhere
    from sae_report.runlog import lock_folder

    with lock_folder(run, command="sae-report train"):
        code, msg = err(run)
        assert code == 1 and msg.startswith(f"Error: {run}: in use by pid ") and msg.endswith(
            "try again when it has finished; or write elsewhere with --out DIR")
        assert cli("export", run, "--out", tmp_path / "elsewhere").exit_code == 0
    res = cli("export", "--format", "onnx", run)
    assert res.exit_code == 2 and "Invalid value for '--format': 'onnx'" in res.output


# ------------------------------------------------------------------------------------------------
# Import: init_from a SAELens folder
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_export_then_init_from_gives_our_weights_back(runs: dict[str, Path], variant: str) -> None:
    run = runs[variant]
    folder = run / "checkpoints" / "final" / "saelens"
    meta = json.loads((run / "checkpoints" / "final" / "config.json").read_text())
    init = prepare_init(load_checkpoint(folder), tiny(variant, init_from=str(folder)), meta["input_scale"])
    original = load_file(str(run / "checkpoints" / "final" / "sae.safetensors"))
    assert set(init.weights) == set(original)
    for name, w in original.items():
        w = w.expand(init.weights[name].shape) if w.dim() == 0 else w
        # equal to float32 rounding: x * s / s is within one unit in the last place
        assert torch.allclose(init.weights[name], w, rtol=2.5e-7, atol=1e-30), (name, (init.weights[name] - w).abs().max())


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_run_started_from_the_export_matches_one_started_from_our_checkpoint(runs: dict[str, Path], tmp_path: Path,
                                                                               variant: str) -> None:
    run = runs[variant]
    a = train(tiny(variant, total_steps=3, init_from=str(run / "checkpoints" / "final")), run_dir=tmp_path / "a")
    b = train(tiny(variant, total_steps=3, init_from=str(run / "checkpoints" / "final" / "saelens")),
              run_dir=tmp_path / "b")
    assert a.status == b.status == "completed"
    la, lb = read_run(tmp_path / "a").metrics["loss"].to_numpy(), read_run(tmp_path / "b").metrics["loss"].to_numpy()
    assert np.allclose(la, lb, rtol=1e-5), (la, lb)
    config = read_run(tmp_path / "b").config
    assert config["init_from"] == str(run / "checkpoints" / "final" / "saelens") and config["init_from_step"] == 60


def _foreign_folder(root: Path, *, d_in: int = 16, d_sae: int = 64, apply_b_dec: bool = False, **cfg: object) -> Path:
    """A SAELens-style standard SAE in raw units that no trainer of ours wrote: encoder without b_dec
    on the input, decoder rows of norms 0.5-2, bfloat16 on disk."""
    g = torch.Generator().manual_seed(1)
    w_dec = torch.randn(d_sae, d_in, generator=g)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * torch.linspace(0.5, 2.0, d_sae)[:, None]
    tensors = {"W_enc": torch.randn(d_in, d_sae, generator=g) * 0.3, "b_enc": torch.randn(d_sae, generator=g) * 0.1,
               "W_dec": w_dec, "b_dec": torch.randn(d_in, generator=g)}
    root.mkdir(parents=True)
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, str(root / "sae_weights.safetensors"))
    doc = {"architecture": "standard", "d_in": d_in, "d_sae": d_sae, "dtype": "bfloat16", "device": "cpu",
           "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": {"sae_lens_version": "6.54.12", "model_name": "gpt2", "hook_name": "blocks.8.hook_resid_post"},
           **cfg}
    (root / "cfg.json").write_text(json.dumps(doc))
    return root


def _reference(folder: Path, x: torch.Tensor) -> torch.Tensor:
    """SAELens' standard SAE forward, written out in float64 from its cfg.json and weights."""
    cfg = json.loads((folder / "cfg.json").read_text())
    w = {k: v.double() for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
    x = x.double()
    f = torch.relu((x - w["b_dec"] * cfg["apply_b_dec_to_input"]) @ w["W_enc"] + w["b_enc"])
    return f @ w["W_dec"] + w["b_dec"]


@pytest.mark.parametrize("variant", ["standard", "april2024"])
@pytest.mark.parametrize("apply_b_dec", [False, True])
def test_a_foreign_saelens_sae_starts_a_run_with_its_reconstruction(tmp_path: Path, variant: str,
                                                                    apply_b_dec: bool) -> None:
    folder = _foreign_folder(tmp_path / "theirs", apply_b_dec=apply_b_dec)
    scale = 0.37
    init = prepare_init(load_checkpoint(folder), tiny(variant, init_from=str(folder)), scale)
    sae = SparseAutoencoder(16, 64, variant=variant)
    sae.load_tensors(init.weights, "init")
    if variant == "standard":  # our standard variant keeps unit decoder rows: the norms went into the encoder
        assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)
    x = torch.randn(512, 16, generator=torch.Generator().manual_seed(2)) * 2 + 0.5
    x_hat = sae.decode(sae.encode(x * scale)) / scale
    assert float((x_hat.double() - _reference(folder, x)).abs().max()) <= TOL
    # the trainer takes it end to end: d_sae from the folder, training runs
    result = train(tiny(variant, d_sae=None, total_steps=5, init_from=str(folder)), run_dir=tmp_path / "run")
    assert result.status == "completed" and read_run(tmp_path / "run").config["d_sae"] == 64


def test_older_and_normalised_folders_are_read_as_saelens_reads_them(tmp_path: Path) -> None:
    # before SAELens 6: no version, hook_point, a boolean normalize_activations, no architecture
    old = _foreign_folder(tmp_path / "v5", apply_b_dec=True)
    doc = json.loads((old / "cfg.json").read_text())
    for key in ("architecture", "metadata", "normalize_activations"):
        doc.pop(key)
    doc.update(hook_point="blocks.8.hook_resid_post", activation_fn_str="relu", normalize_activations=False)
    (old / "cfg.json").write_text(json.dumps(doc))
    init = prepare_init(load_checkpoint(old / "cfg.json"), tiny("april2024"), 0.5)  # the file's path works too
    sae = SparseAutoencoder(16, 64, variant="april2024")
    sae.load_tensors(init.weights, "init")
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(5))
    assert float((sae.decode(sae.encode(x * 0.5)) / 0.5 - _reference(old, x)).abs().max()) <= TOL
    # still in SAELens' normalised units (E||x|| = sqrt(d_in), as ours): taken as it is, whatever our scale
    norm = _foreign_folder(tmp_path / "normalised", apply_b_dec=True, normalize_activations="expected_average_only_in")
    init = prepare_init(load_checkpoint(norm), tiny("april2024"), 0.5)
    sae.load_tensors(init.weights, "init")
    assert float((sae.decode(sae.encode(x)) - _reference(norm, x)).abs().max()) <= TOL


SAVED_BY_SAELENS = [a for a in ("standard", "topk", "jumprelu") if a in VARIANTS]


@pytest.mark.parametrize("arch", SAVED_BY_SAELENS)
def test_a_folder_saved_by_saelens_itself_starts_a_run(tmp_path: Path, arch: str) -> None:
    sae_lens = saelens()
    if arch == "standard":
        sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=16, d_sae=64))
    elif arch == "topk":  # chosen by pre * ||W_dec||: exact with our unit decoder rows
        sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(d_in=16, d_sae=64, k=4, rescale_acts_by_decoder_norm=True))
    else:
        sae = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(d_in=16, d_sae=64))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # SAELens' own init leaves decoder rows of unequal norms: ours are unit norm
        sae.b_enc.copy_(torch.randn(64, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(16, generator=g))
        if arch == "jumprelu":
            sae.threshold.copy_(torch.rand(64, generator=g) * 0.2)
    sae.save_model(tmp_path / "theirs")
    variant = "april2024" if arch == "standard" else arch
    init = prepare_init(load_checkpoint(tmp_path / "theirs"), tiny(variant), 2.0)
    ours_ = SparseAutoencoder(16, 64, variant=variant)
    ours_.load_tensors(init.weights, "init")
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        f = ours_.encode(x * 2.0, k=4) if arch == "topk" else ours_.encode(x * 2.0)
        assert torch.equal(f > 0, sae.encode(x) > 0)
        assert float((ours_.decode(f) / 2.0 - sae(x)).abs().max()) <= TOL
    assert train(tiny(variant, total_steps=5, init_from=str(tmp_path / "theirs")),
                 run_dir=tmp_path / "run").status == "completed"


def _train_cli(*sets: str, out: Path):
    args: list[str] = []
    for item in (*[f"{k}={v}" for k, v in TINY.items() if k != "d_sae"], "total_steps=5", *sets):
        args += ["--set", item]
    return cli("train", "-q", *args, "--out", out)


def test_unusable_folders_are_one_line_naming_the_file(runs: dict[str, Path], tmp_path: Path) -> None:
    good = _foreign_folder(tmp_path / "good")

    def variant_of(name: str, edit) -> Path:  # type: ignore[no-untyped-def]
        folder = tmp_path / name
        shutil.copytree(good, folder)
        edit(folder)
        return folder

    def cfg_edit(**changes: object):  # type: ignore[no-untyped-def]
        def edit(folder: Path) -> None:
            doc = json.loads((folder / "cfg.json").read_text())
            doc.update(changes)
            (folder / "cfg.json").write_text(json.dumps(doc))
        return edit

    def truncate(folder: Path) -> None:
        data = (folder / "sae_weights.safetensors").read_bytes()
        (folder / "sae_weights.safetensors").write_bytes(data[: len(data) // 2])

    cases = {
        variant_of("bad_json", lambda f: (f / "cfg.json").write_text("{not json")):
            "cfg.json: unreadable SAELens cfg.json (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        variant_of("no_weights", lambda f: (f / "sae_weights.safetensors").unlink()):
            "sae_weights.safetensors: missing (a SAELens SAE folder holds cfg.json and sae_weights.safetensors)",
        variant_of("truncated", truncate): "sae_weights.safetensors: unreadable SAE weights file (",
        variant_of("cfg_says_32", cfg_edit(d_in=32)):
            "sae_weights.safetensors: W_enc has shape [16, 64], cfg.json says [32, 64] (d_in 32, d_sae 64)",
        variant_of("gated", cfg_edit(architecture="gated")): "cfg.json: architecture 'gated' cannot be trained here "
            f"(init_from takes SAELens {', '.join(_readable_architectures())} SAEs)",
        variant_of("layer_norm", cfg_edit(normalize_activations="layer_norm")):
            "cfg.json: normalize_activations 'layer_norm' cannot be trained here (init_from takes none or "
            "expected_average_only_in)",
        variant_of("no_d_sae", cfg_edit(d_sae=None)): "cfg.json: d_sae must be a positive integer, got None",
    }
    for folder, expected in cases.items():
        res = _train_cli(f"init_from={folder}", out=tmp_path / "out")
        assert res.exit_code == 2, (folder.name, res.output)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, (folder.name, res.stderr)
        assert lines[0].startswith(f"Error: {folder}/" + expected), (folder.name, lines[0], expected)
    # a folder of another width than the run's data
    res = _train_cli(f"init_from={good}", "d_in=32", out=tmp_path / "out")
    assert (res.exit_code, res.stderr.strip()) == (
        2, f"Error: {good / 'sae_weights.safetensors'}: W_enc has shape [16, 64], this SAE needs [32, 64]")
    # no Adam state in a SAELens folder
    res = _train_cli(f"init_from={good}", "init_optimizer=true", out=tmp_path / "out")
    assert (res.exit_code, res.stderr.strip()) == (
        2, f"Error: {good}: a SAELens SAE folder holds no optimizer state; init_optimizer needs a checkpoint of "
           "sae-report")
    # an architecture this run's variant cannot start from
    if "topk" in VARIANTS:
        res = _train_cli(f"init_from={runs['topk'] / 'checkpoints' / 'final' / 'saelens'}", out=tmp_path / "out")
        assert (res.exit_code, res.stderr.strip()) == (
            2, f"Error: {runs['topk'] / 'checkpoints' / 'final' / 'saelens' / 'cfg.json'}: a SAELens topk SAE cannot "
               "start an sae_variant standard run; set sae_variant to topk")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written


def test_print_config_takes_d_sae_from_a_saelens_folder(tmp_path: Path) -> None:
    folder = _foreign_folder(tmp_path / "theirs", d_sae=48)
    res = cli("train", "--set", "d_in=16", "--set", f"init_from={folder}", "--print-config")
    assert res.exit_code == 0, res.output
    assert "\nd_sae: 48\n" in res.output


def test_hookpoints_become_transformerlens_hook_names() -> None:
    assert tl_hook_name("transformer.h.8") == "blocks.8.hook_resid_post"
    assert tl_hook_name("model.layers.3.mlp") == "blocks.3.hook_mlp_out"
    assert tl_hook_name("model.layers.3.self_attn") == "blocks.3.hook_attn_out"
    assert tl_hook_name("gpt_neox.layers.2") == "blocks.2.hook_resid_post"
    assert tl_hook_name("encoder.layer.3") == "encoder.layer.3"  # not a decoder block: kept as given


def test_model_and_hookpoint_are_recorded_the_way_saelens_reads_them(runs: dict[str, Path], tmp_path: Path) -> None:
    ckpt = load_checkpoint(runs["standard"] / "checkpoints" / "final", optimizer=False)
    meta = {**ckpt.meta, "model": "gpt2", "hookpoint": "transformer.h.8", "context_size": 128, "prepend_bos": True}
    done = export_saelens(Checkpoint(ckpt.path, ckpt.weights, {}, {}, meta), tmp_path / "gpt2")
    assert (done.model_name, done.hook_name) == ("gpt2", "blocks.8.hook_resid_post")
    md = json.loads((tmp_path / "gpt2" / "cfg.json").read_text())["metadata"]
    assert (md["model_name"], md["hook_name"], md["hf_hook_name"], md["context_size"], md["prepend_bos"]) == (
        "gpt2", "blocks.8.hook_resid_post", "transformer.h.8", 128, True)
    sae_lens = saelens()
    sae = sae_lens.SAE.load_from_disk(tmp_path / "gpt2")
    assert (sae.cfg.metadata.model_name, sae.cfg.metadata.hook_name) == ("gpt2", "blocks.8.hook_resid_post")
    assert sae.cfg.metadata.hf_hook_name == "transformer.h.8"


def test_a_resumed_run_rewrites_the_final_export(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["standard"], run)
    assert train(tiny("standard", total_steps=70, checkpoint_every=30), resume=run).status == "completed"
    cfg = json.loads((run / "checkpoints" / "final" / "saelens" / "cfg.json").read_text())
    assert cfg["metadata"]["sae_report"]["step"] == 70
