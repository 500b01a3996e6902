"""data_source: model and `sae-report harvest`: tiny random GPT-2, Llama and BERT models with real
tokenizers, built offline (tests/harvest_support.py). Harvested activations equal the hidden states
transformers gives; special tokens and padding are left out; the shuffle buffer mixes documents;
a killed run resumes exactly; errors are one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from harvest_support import build_tiny_model  # noqa: E402

from sae_report.cli import main  # noqa: E402
from sae_report.runlog import read_run  # noqa: E402
from trainer import ConfigError, DataError, TrainConfig  # noqa: E402
from trainer.harvest import Cursor, Harvester, ModelData, TokenRows  # noqa: E402
from trainer.models import HookedForward, load_model, locate_model, resolve_hookpoint  # noqa: E402
from trainer.texts import TextDataset  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: build_tiny_model(kind, root / kind) for kind in ("gpt2", "llama", "bert")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A text file of pydoc paragraphs (one document per paragraph)."""
    from trainer.texts import pydoc_paragraphs

    path = tmp_path_factory.mktemp("text") / "pydoc.txt"
    path.write_text("\n\n".join(pydoc_paragraphs()[:400]) + "\n", encoding="utf-8")
    return path


def model_config(model: Path, corpus: Path, **kw) -> TrainConfig:
    base = dict(data_source="model", model=str(model), hookpoint="layers.0", dataset=str(corpus), context_size=32,
                model_batch_size=4, shuffle_buffer_tokens=1000, batch_size=64, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def parts(model: Path, corpus: Path, hookpoint: str = "layers.0", **kw):
    cfg = model_config(model, corpus, hookpoint=hookpoint, **kw)
    loaded = load_model(locate_model(cfg.model), cfg.model_dtype, "cpu")
    fwd = HookedForward(loaded, resolve_hookpoint(loaded.model, hookpoint))
    rows = TokenRows(TextDataset(cfg.dataset, cfg.text_column), loaded.tokenizer, causal=loaded.causal,
                     context_size=cfg.context_size, model_batch_size=cfg.model_batch_size, prepend_bos=cfg.prepend_bos,
                     exclude_special_tokens=cfg.exclude_special_tokens, track_docs=True)
    return loaded, fwd, rows


def reference(model: Path, kind: str):
    """The full model as transformers builds it, for ``output_hidden_states=True``."""
    import transformers

    cls = {"gpt2": transformers.GPT2LMHeadModel, "llama": transformers.LlamaForCausalLM,
           "bert": transformers.BertModel}[kind]
    return cls.from_pretrained(str(model), local_files_only=True).eval()


# ------------------------------------------------------------------------------------------------
# activations equal the hidden states; special tokens and padding left out
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "hookpoints"), [
    ("gpt2", ["layers.0", "h.0", "transformer.h.0", "blocks.0.hook_resid_post"]),
    ("llama", ["layers.0", "model.layers.0"]),
    ("bert", ["layers.0", "encoder.layer.0", "bert.encoder.layer.0"]),
])
def test_harvested_activations_equal_the_hidden_states(models, corpus, kind, hookpoints) -> None:
    model = models[kind]
    ref = reference(model, kind)
    for hp in hookpoints:
        loaded, fwd, rows = parts(model, corpus, hp)
        assert fwd.hookpoint.block == 0, hp
        batches = rows.batches(Cursor(0, 0, 0))
        for _ in range(2):
            b = next(batches)
            ours = Harvester(rows, fwd, buffer_tokens=10, seed=0, out_device=torch.device("cpu")).acts(b)
            with torch.no_grad():
                out = ref(input_ids=b.ids, attention_mask=b.mask if b.mask is not None else torch.ones_like(b.ids),
                          output_hidden_states=True)
            want = out.hidden_states[1][b.keep]  # hidden_states[0] is the embeddings: [1] is block 0's output
            assert ours.shape == want.shape and ours.shape[0] == b.n_keep > 0
            torch.testing.assert_close(ours, want, rtol=0, atol=1e-5)
            # only real text tokens: no BOS/EOS/CLS/SEP, no padding
            special = set(rows.special_ids)
            assert not any(int(t) in special for t in b.ids[b.keep])
            n_real = sum(int(t) not in special for t, m in zip(b.ids.flatten(), (b.mask if b.mask is not None
                                                                                  else torch.ones_like(b.ids)).flatten()) if m)
            assert b.n_keep == n_real
        fwd.close()


def test_the_forward_stops_at_the_hookpoint(models, corpus) -> None:
    loaded, fwd, rows = parts(models["gpt2"], corpus, "layers.0")
    ran = []
    handle = loaded.model.h[1].register_forward_hook(lambda *a: ran.append(1))
    fwd.run(torch.zeros((2, 8), dtype=torch.long), None)
    handle.remove()
    assert ran == []  # block 1 never ran


def test_rows_are_packed_with_bos_or_padded_per_document(models, corpus) -> None:
    _, _, rows = parts(models["gpt2"], corpus, context_size=16)
    b = next(rows.batches(Cursor(0, 0, 0)))
    assert rows.layout == "packed" and b.mask is None and b.ids.shape == (4, 16)
    assert (b.ids[:, 0] == rows.bos).all()  # every row starts with BOS (SAELens' prepend_bos)
    assert b.n_keep == int((b.ids != rows.bos).sum())
    _, _, keep_bos = parts(models["gpt2"], corpus, context_size=16, exclude_special_tokens=False)
    assert next(keep_bos.batches(Cursor(0, 0, 0))).n_keep == 64  # BOS kept, nothing to pad
    _, _, bert = parts(models["bert"], corpus, context_size=16)
    b = next(bert.batches(Cursor(0, 0, 0)))
    assert bert.layout == "padded" and b.mask is not None
    cls, sep = bert.tok.cls_token_id, bert.tok.sep_token_id
    assert (b.ids[:, 0] == cls).all() and int((b.ids == sep).sum()) == 4
    assert b.n_keep == int(b.mask.sum()) - 8  # padding, [CLS] and [SEP] left out


def test_the_shuffle_buffer_mixes_documents(models, corpus) -> None:
    cfg = model_config(models["gpt2"], corpus, normalize_input=False, shuffle_buffer_tokens=5000)
    data = ModelData(cfg, seed=0, batch_size=64, device=torch.device("cpu"), prefetch=False)
    _, _, rows = parts(models["gpt2"], corpus)
    doc_stream = torch.cat([b.docs[b.keep] for b, _ in zip(rows.batches(Cursor(0, 0, 0)), range(60))])
    stream = data.harvester.stream(0)  # buffer 0 in stream order
    index = {row.numpy().tobytes(): i for i, row in enumerate(stream)}
    batch = data.batch(1)
    where = np.array([index[row.numpy().tobytes()] for row in batch])  # every token comes from buffer 0
    docs = doc_stream[torch.from_numpy(where)]
    in_buffer = len(set(doc_stream[:5000].tolist()))
    assert in_buffer >= 30 and len(set(docs.tolist())) >= 0.6 * min(64, in_buffer)
    assert len(set(doc_stream[:64].tolist())) <= 3  # unshuffled, 64 tokens span one or two documents
    assert where.max() - where.min() > 4000  # drawn from across the buffer


def test_a_buffer_found_by_tokenising_equals_the_one_harvested_in_sequence(models, corpus) -> None:
    cfg = model_config(models["llama"], corpus)
    seq = ModelData(cfg, seed=3, batch_size=64, device=torch.device("cpu"), prefetch=False)
    want = [seq.harvester.buffer(k) for k in range(4)]
    jump = ModelData(cfg, seed=3, batch_size=64, device=torch.device("cpu"), prefetch=True)
    assert torch.equal(jump.rows(3 * 1000, 1000), want[3])  # no data_state: fast-forward by tokenising
    assert jump.harvester.starts[3] == seq.harvester.starts[3]
    assert torch.equal(jump.rows(1000, 1000), want[1])


# ------------------------------------------------------------------------------------------------
# training: config.yaml records the model; a killed run resumes exactly
# ------------------------------------------------------------------------------------------------


def _sets(model: Path, corpus: Path, *extra: str) -> list[str]:
    items = ["data_source=model", f"model={model}", "hookpoint=transformer.h.0", f"dataset={corpus}", "context_size=32",
             "model_batch_size=4", "shuffle_buffer_tokens=1000", "batch_size=64", "d_sae=128", "threads=1",
             "dead_window=20", *extra]
    out: list[str] = []
    for item in items:
        out += ["--set", item]
    return out


def _metric_rows(run: Path) -> int:
    parts_ = list((run / "metrics").glob("part-*.csv"))
    return sum(p.read_bytes().count(b"\n") - 1 for p in parts_) if parts_ else 0


def test_a_killed_run_resumes_with_the_same_data_order(models, corpus, tmp_path: Path) -> None:
    common = _sets(models["gpt2"], corpus, "total_steps=160", "checkpoint_every=35", "flush_every=5",
                   "resample_interval=50")
    res = CliRunner().invoke(main, ["train", "-q", *common, "--out", str(tmp_path / "ref")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (ref_dir,) = (tmp_path / "ref").iterdir()
    ref = read_run(ref_dir)
    cfg = __import__("yaml").safe_load((ref_dir / "config.yaml").read_text())
    data = cfg["data"]
    assert (cfg["data_source"], cfg["hookpoint"], data["kind"], data["hookpoint_module"]) == \
        ("model", "transformer.h.0", "model", "h.0")
    assert len(data["model_config_sha256"]) == 64 and data["model_weights"][0]["file"] == "model.safetensors"
    assert data["normalisation"]["input_scale"] == cfg["input_scale"] and data["d_in"] == 64
    assert data["exclude_special_tokens"] is True and data["layout"] == "packed"

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sae_report", "train", "-q", *common, "--out", str(tmp_path / "k")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    t0 = time.monotonic()
    run = None
    while True:  # kill -9 once the checkpoint at step 70 is there and more rows were logged after it
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() - t0 < 120
        if (tmp_path / "k").exists() and any((tmp_path / "k").iterdir()):
            (run,) = (tmp_path / "k").iterdir()
            if (run / "checkpoints" / "step_000000070").exists() and _metric_rows(run) >= 75:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((run / "checkpoints" / "step_000000070" / "state.json").read_text())["data_state"]
    assert state["buffer"] == 70 * 64 // 1000 and state["skip"] >= 0  # the model batch the next step starts in
    res = CliRunner().invoke(main, ["train", "-q", "--resume", str(run)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    resumed = read_run(run)
    cols = [c for c in ref.metrics.columns if c != "elapsed_s"]
    assert resumed.metrics["step"].to_list() == list(range(1, 161))
    assert resumed.metrics.select(cols).equals(ref.metrics.select(cols))  # bit for bit the same run
    assert [e.step for e in resumed.events if e.kind == "resume"][0] >= 70

    # a resume cannot change what is harvested
    res = CliRunner().invoke(main, ["train", "--resume", str(run), "--set", "hookpoint=transformer.h.1",
                                    "--set", "total_steps=170"])
    assert res.exit_code == 2
    assert res.stderr.strip() == (f"Error: --set hookpoint=transformer.h.1: hookpoint: cannot change when resuming {run} "
                                  "('transformer.h.0' in its checkpoint, 'transformer.h.1' asked; it fixes which "
                                  "activations are read); train a new run instead")


def test_two_torchrun_ranks_harvesting_equal_one_process(models, corpus, tmp_path: Path) -> None:
    """Every rank harvests the whole stream (one process's order) and trains on its slice of each
    global batch: the SAE and every logged metric equal one process's."""
    pytest.importorskip("torch.distributed")
    common = _sets(models["gpt2"], corpus, "total_steps=40", "checkpoint_every=20", "resample_interval=0")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "SAE_REPORT_DIST_TIMEOUT_S": "60"})
    runs = {}
    for ranks in (1, 2):
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] \
            if ranks == 2 else [sys.executable]
        res = subprocess.run([*launch, "-m", "sae_report", "train", "-q", *common, "--out", str(tmp_path / f"r{ranks}")],
                             capture_output=True, text=True, env=env, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        (runs[ranks],) = (tmp_path / f"r{ranks}").iterdir()
    from safetensors.torch import load_file

    a, b = (load_file(str(runs[r] / "checkpoints" / "final" / "sae.safetensors")) for r in (2, 1))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5, msg=name)
    ma, mb = read_run(runs[2]).metrics, read_run(runs[1]).metrics
    assert ma["step"].to_list() == mb["step"].to_list() == list(range(1, 41))
    for col in ("loss", "mse", "l0", "explained_variance"):
        assert np.allclose(ma[col].to_numpy(), mb[col].to_numpy(), atol=1e-5, rtol=1e-5), col
    assert "world_size: 2\n" in (runs[2] / "config.yaml").read_text()


# ------------------------------------------------------------------------------------------------
# errors: one line
# ------------------------------------------------------------------------------------------------


def test_hookpoint_errors_list_close_names(models) -> None:
    loaded = load_model(locate_model(str(models["gpt2"])), "float32", "cpu")
    with pytest.raises(ConfigError) as err:
        resolve_hookpoint(loaded.model, "transformer.h.0.mlpp")
    assert str(err.value) == ("hookpoint: 'transformer.h.0.mlpp' is not a module of GPT2Model (did you mean "
                              "transformer.h.0.mlp, transformer.h.1.mlp, transformer.h.0.mlp.act, "
                              "transformer.h.0.mlp.c_proj, transformer.h.0.mlp.c_fc?); its blocks are h.0 to h.1")
    with pytest.raises(ConfigError) as err:
        resolve_hookpoint(loaded.model, "layers.6")
    assert str(err.value) == "hookpoint: 'layers.6': the model has 2 blocks (h.0 to h.1; also written layers.N)"
    assert resolve_hookpoint(loaded.model, "layers.1.mlp").module_name == "h.1.mlp"
    llama = load_model(locate_model(str(models["llama"])), "float32", "cpu")
    with pytest.raises(ConfigError, match=r"did you mean .*layers\.1\.mlp"):
        resolve_hookpoint(llama.model, "model.layers.1.mpl")


def test_a_model_that_is_not_local_is_one_line(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConfigError) as err:
        locate_model("no-such-org/no-such-model")
    assert str(err.value) == (f"model: 'no-such-org/no-such-model' is not a folder and not in the local Hugging Face "
                              f"cache ({tmp_path / 'hub'}); nothing is downloaded here: give the model's folder, or "
                              "fetch it into the cache first (hf download no-such-org/no-such-model)")
    with pytest.raises(ConfigError, match=r"^model: .*/nope: no such folder$"):
        locate_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no config.json \(not a transformers model folder\)$"):
        locate_model(str(tmp_path / "empty"))


def test_a_model_in_the_hugging_face_cache_is_found_with_its_revision(models, tmp_path, monkeypatch) -> None:
    import shutil

    import huggingface_hub.constants as hc

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-gpt2"
    shutil.copytree(models["gpt2"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    found = locate_model("tiny-org/tiny-gpt2")
    assert (found.origin, found.revision, found.path) == ("hf-cache", commit, repo / "snapshots" / commit)
    assert locate_model("tiny-org/tiny-gpt2", commit).path == found.path
    with pytest.raises(ConfigError, match="at revision v2 is not a folder"):
        locate_model("tiny-org/tiny-gpt2", "v2")


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "data_source=model"], "Error: --set data_source=model: model: is required when data_source is model"),
    (["--set", "model=gpt2"], "Error: --set model=gpt2: model: is only used with data_source: model"),
    (["--set", "data_source=model", "--set", "model=m", "--set", "dataset=d"],
     "Error: --set dataset=d: hookpoint: is required when data_source is model"),
    (["--set", "model_device=gpu"], "Error: --set model_device=gpu: model_device: must be auto, cpu, cuda or cuda:N, "
                                    "got 'gpu'"),
    (["--set", "context_size=0"], "Error: --set context_size=0: context_size: must be > 0, got 0"),
])
def test_config_errors_are_one_line(args, message) -> None:
    res = CliRunner().invoke(main, ["train", *args])
    assert res.exit_code == 2 and res.stderr.strip() == message


def test_dataset_formats_and_their_errors(tmp_path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("one\nstill one\n\n\ntwo\n", encoding="utf-8")
    (tmp_path / "d" / "b.jsonl").write_text('{"text": "three"}\n\n{"text": "four", "id": 4}\n', encoding="utf-8")
    pq.write_table(pa.table({"text": ["five", "six"], "n": [5, 6]}), tmp_path / "d" / "c.parquet", row_group_size=1)
    (tmp_path / "d" / ".hidden.txt").write_text("never\n")
    ds = TextDataset(tmp_path / "d")
    assert list(ds.documents()) == [(0, "one\nstill one"), (1, "two"), (2, "three"), (3, "four"), (4, "five"), (5, "six")]
    assert list(ds.documents(5)) == [(5, "six")] and list(ds.documents(3))[0] == (3, "four")
    assert ds.describe()["n_files"] == 3
    with pytest.raises(DataError) as err:
        TextDataset(tmp_path / "d", "content")
    assert str(err.value) == f"dataset: {tmp_path / 'd' / 'b.jsonl'} line 1: no 'content' field (fields: text); set text_column"
    with pytest.raises(DataError) as err:
        TextDataset(tmp_path / "d" / "c.parquet", "body")
    assert str(err.value) == f"dataset: {tmp_path / 'd' / 'c.parquet'}: no column 'body' (columns: text, n); set text_column"
    with pytest.raises(DataError, match="no such file or directory"):
        TextDataset(tmp_path / "missing")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(DataError, match=r"not a text, JSONL or Parquet file"):
        TextDataset(tmp_path / "x.csv")
    assert TextDataset("builtin:pydoc").describe()["documents"] > 1000


# ------------------------------------------------------------------------------------------------
# sae-report harvest: shards that data_source: files reads
# ------------------------------------------------------------------------------------------------


def test_harvest_writes_shards_that_files_training_reads(models, corpus, tmp_path) -> None:
    from trainer.data import FileData

    out = tmp_path / "acts"
    args = ["harvest", *_sets(models["llama"], corpus)[:-4], "--set", "hookpoint=model.layers.1", "--out", str(out),
            "--tokens", "2500", "--shard-tokens", "1K"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["acts_000000.safetensors", "acts_000001.safetensors",
                                                     "acts_000002.safetensors", "harvest.json"]
    assert res.stdout.splitlines()[0] == f"2,500 vectors of width 64 in 3 shards: {out}"
    assert len([line for line in res.stderr.splitlines() if line.startswith("shard ")]) == 3
    manifest = json.loads((out / "harvest.json").read_text())
    assert manifest["complete"] and manifest["tokens"] == 2500 and manifest["data"]["hookpoint_module"] == "layers.1"
    files = FileData(out, seed=0, batch_size=64, buffer_tokens=1000, block_tokens=100, device=torch.device("cpu"))
    assert (files.n_tokens, files.d_in) == (2500, 64)
    # the shards hold the stream training would read, in the same order
    cfg = model_config(models["llama"], corpus, hookpoint="model.layers.1", d_sae=128, dead_window=20)
    want = ModelData(cfg, seed=0, batch_size=64, device=torch.device("cpu"), prefetch=False).rows(0, 2500)
    got = torch.cat([files.shards[i].read(0, files.shards[i].n) for i in range(3)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # a second call with the same settings continues (nothing to do); other settings are refused
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0 and "(3 were there already)" in res.stdout
    res = CliRunner().invoke(main, [*args[:-4], "--out", str(out), "--tokens", "2500", "--shard-tokens", "2K"])
    assert res.exit_code == 2
    assert res.stderr.strip() == f"Error: {out}: holds a harvest with other settings (shard_tokens: 1000 there, 2000 now); choose another --out"
    train = CliRunner().invoke(main, ["train", "-q", "--set", "data_source=files", "--set", f"data_path={out}",
                                      "--set", "total_steps=20", "--set", "batch_size=64", "--set", "d_sae=128",
                                      "--set", "threads=1", "--out", str(tmp_path / "runs")], catch_exceptions=False)
    assert train.exit_code == 0, train.output


def test_the_gpt2_example_runs_on_a_gpt2_shaped_model(tmp_path, corpus) -> None:
    """examples/gpt2_small.yaml with the model and text swapped for a 9-block GPT-2 of width 32."""
    from trainer import train

    model = build_tiny_model("gpt2", tmp_path / "gpt2_9", n_layer=9, d_model=32)
    cfg = TrainConfig.from_yaml(Path(__file__).resolve().parents[1] / "examples" / "gpt2_small.yaml",
                                [f"model={model}", f"dataset={corpus}", "d_sae=128", "batch_size=64", "total_steps=15",
                                 "shuffle_buffer_tokens=2048", "checkpoint_every=0", "threads=1", "lr_warmup_steps=0",
                                 "resample_tokens=256", "stats_sample=64"])
    assert cfg.hookpoint == "transformer.h.8" and cfg.prepend_bos is True
    result = train(cfg, tmp_path / "runs")
    assert result.status == "completed"
    data = __import__("yaml").safe_load((result.run_dir / "config.yaml").read_text())["data"]
    assert (data["hookpoint_module"], data["d_in"], data["bos_token"]) == ("h.8", 32, "<|endoftext|>")
