"""Training loop: outputs, determinism, exact resume (in process and after SIGKILL), export, fine-tuning, DDP."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datagen
import numpy as np
import pytest
import torch
import yaml
from conftest import bench_model
from safetensors.torch import load_file

from sarcolor import cli
from sarcolor.errors import SarColorError
from sarcolor.models import load_model, read_metadata
from sarcolor.train import (
    DIGEST_ENV,
    export_checkpoint,
    load_checkpoint,
    resolve_config,
    train,
    weights_digest,
)

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {"arch": "sarcolornet", "width": 8, "enc_depths": [1, 1], "name": "tiny"}
# The prototype's loss and input (3 equal channels, 8-bit / 127.5 - 1) on a tiny generator: the pix2pix
# path (seed discriminator, BCE + 100 L1, Adam 0.5/0.999) in milliseconds.
TINY_PIX2PIX = {**TINY_MODEL, "in_channels": 3, "input_norm": "seed"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    groups = {f"{i:03d}": ("B" if i == 5 else "A" if i < 3 else "C") for i in range(6)}
    datagen.make_folders(root / "pairs", n=6, size=(32, 32), groups=groups)
    return root / "pairs"


def make_config(tmp: Path, data_dir: Path, name: str = "cfg.yaml", **train_over) -> Path:
    cfg = {
        "run_dir": "run", "seed": 1, "model": TINY_MODEL,
        "data": {"sources": [{"root": str(data_dir), "layout": "folders", "groups_csv": "groups.csv",
                              "group_column": "tile"}],
                 "val": {"groups": ["B"]}},
        "train": {"loss": "sarcolor", "steps": 10, "batch_size": 2, "crop": 16, "samples_per_epoch": 8, "lr": 1e-2,
                  "warmup": 2, "ckpt_every": 3, "val_every": 5, "val_crop": 32, "log_every": 1,
                  "threads": 1} | train_over,
    }
    tmp.mkdir(parents=True, exist_ok=True)
    return datagen.write_config(tmp / name, cfg)


def run(cfg_path: Path, *overrides: str, resume: bool = False, init: str | None = None) -> Path:
    return train(resolve_config(cfg_path, list(overrides)), resume=resume, init=init, quiet=True)


def read_log(run_dir: Path) -> list[dict]:
    with open(run_dir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint except the RNG snapshot (modules and optimiser state)."""
    return {k: v for k, v in load_file(str(run_dir / "checkpoint.safetensors")).items() if not k.startswith("rng/")}


def assert_same_state(a: Path, b: Path) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_run_writes_everything(tmp_path: Path, data_dir: Path) -> None:
    run_dir = run(make_config(tmp_path, data_dir))
    assert run_dir == tmp_path / "run"
    for f in ("checkpoint.safetensors", "model.safetensors", "split.json", "log.csv", "config.json"):
        assert (run_dir / f).is_file(), f
    assert list((run_dir / "tb").glob("events.*"))  # TensorBoard is installed here
    assert not list(run_dir.glob("*.tmp"))
    split = json.loads((run_dir / "split.json").read_text())
    assert [e["name"] for e in split["val"]] == ["pairs/005"]
    assert not {e["group"] for e in split["train"]} & {e["group"] for e in split["val"]}
    rows = read_log(run_dir)
    assert [int(r["step"]) for r in rows if r["loss"]] == list(range(1, 11))
    val = [r for r in rows if r["val_psnr"]]
    assert [int(r["step"]) for r in val] == [5, 10]
    assert float(val[-1]["val_psnr"]) > float(val[0]["val_psnr"])  # validation improves...
    assert float(val[-1]["val_ciede2000"]) < float(val[0]["val_ciede2000"])
    assert float(rows[9]["loss"]) < float(rows[0]["loss"])  # ...and the training loss falls
    _, meta = load_checkpoint(run_dir / "checkpoint.safetensors")
    assert meta["step"] == 10 and meta["config"]["seed"] == 1
    model, mcfg = load_model(run_dir / "model.safetensors")
    assert mcfg.width == 8 and mcfg.name == "tiny"


def test_best_validation_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    run_dir = run(make_config(tmp_path, data_dir, steps=15))
    rows = [r for r in read_log(run_dir) if r["val_ciede2000"]]
    best_row = min(rows, key=lambda r: float(r["val_ciede2000"]))
    tensors, meta = load_checkpoint(run_dir / "best.safetensors")
    assert meta["step"] == int(best_row["step"])
    assert round(meta["val"]["ciede2000"], 4) == float(best_row["val_ciede2000"])
    assert {k.split("/")[0] for k in tensors} == {"ema", "rng"}  # weights only, no optimiser state
    out = tmp_path / "best-model.safetensors"
    export_checkpoint(run_dir / "best.safetensors", out)
    card = read_metadata(out)["model_card"]
    assert f"Validation at step {best_row['step']} " in card
    load_model(out)


def test_loss_weights_are_configurable(tmp_path: Path, data_dir: Path) -> None:
    a = run(make_config(tmp_path / "a", data_dir, steps=3))
    b = run(make_config(tmp_path / "b", data_dir, steps=3, loss_weights={"ssim": 0.5, "lab": 1.0, "chroma": 0.0}))
    assert float(read_log(a)[0]["loss"]) != float(read_log(b)[0]["loss"])
    with pytest.raises(SarColorError, match="train.loss_weights .*give ssim, lab and chroma"):
        run(make_config(tmp_path / "c", data_dir, steps=3, loss_weights={"colour": 1.0}))


def test_same_seed_same_run(tmp_path: Path, data_dir: Path) -> None:
    a = run(make_config(tmp_path / "a", data_dir, steps=4))
    b = run(make_config(tmp_path / "b", data_dir, steps=4))
    assert_same_state(a, b)
    c = run(make_config(tmp_path / "c", data_dir, steps=4), "seed=2")
    assert not torch.equal(state(a)["gen/head.0.weight"], state(c)["gen/head.0.weight"])
    # Reading the pairs at each sample instead of holding them in memory changes nothing but memory.
    assert_same_state(a, run(make_config(tmp_path / "d", data_dir, steps=4), "train.preload=false"))


@pytest.mark.parametrize("model", [TINY_MODEL, TINY_PIX2PIX], ids=["sarcolor", "pix2pix"])
def test_resume_equals_uninterrupted(tmp_path: Path, data_dir: Path, model: dict) -> None:
    """Stopped at step 6 (mid-epoch: 4 batches per epoch) and resumed == run straight through to 10."""
    loss = "pix2pix" if model is TINY_PIX2PIX else "sarcolor"
    over = [f"model={json.dumps(model)}", f"train.loss={loss}"]
    full = run(make_config(tmp_path / "full", data_dir), *over)
    part_cfg = make_config(tmp_path / "part", data_dir)
    part = run(part_cfg, *over, "train.stop_at=6")
    assert load_checkpoint(part / "checkpoint.safetensors")[1]["step"] == 6
    run(part_cfg, *over, resume=True)
    assert_same_state(full, part)
    if loss == "pix2pix":
        assert any(k.startswith("disc/") for k in state(part)) and any(k.startswith("opt:d.") for k in state(part))
    # the log continues where it stopped, without repeated steps
    assert [int(r["step"]) for r in read_log(part) if r["loss"]] == list(range(1, 11))


def test_sigkill_then_resume(tmp_path: Path, data_dir: Path) -> None:
    """A subprocess run killed with SIGKILL mid-run resumes from its last checkpoint and then matches a run
    that was never interrupted."""
    cfg = make_config(tmp_path / "killed", data_dir, steps=100000, ckpt_every=4, val_every=1000, crop=24)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "sarcolor", "train", "--config", str(cfg), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    ck = tmp_path / "killed" / "run" / "checkpoint.safetensors"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if ck.is_file() and json.loads(read_metadata(ck)["sarcolor_checkpoint"])["step"] >= 8:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended by itself: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _, meta = load_checkpoint(ck)  # the checkpoint survived the kill intact
    k = meta["step"]
    logged = max(int(r["step"]) for r in read_log(ck.parent) if r["loss"])
    assert k % 4 == 0 and k >= 8 and logged >= k  # lost at most the steps since the last checkpoint

    run(cfg, f"train.stop_at={k + 5}", resume=True)
    assert load_checkpoint(ck)[1]["step"] == k + 5
    assert [int(r["step"]) for r in read_log(ck.parent) if r["loss"]] == list(range(1, k + 6))
    straight = run(make_config(tmp_path / "straight", data_dir, steps=100000, ckpt_every=4, val_every=1000,
                               crop=24), f"train.stop_at={k + 5}")
    assert_same_state(straight, ck.parent)


def test_sigterm_stops_at_once_with_a_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    """SIGTERM (a scheduler's preemption) ends the run at the end of the step, with a checkpoint and a one-line
    message, and without the final validation (which could outlast the grace period); --resume continues."""
    cfg = make_config(tmp_path, data_dir, steps=100000, ckpt_every=1000, val_every=1000, crop=24)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "sarcolor", "train", "--config", str(cfg), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    log_csv = tmp_path / "run" / "log.csv"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if log_csv.is_file() and len(log_csv.read_text().splitlines()) > 4:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended by itself: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGTERM)
        t0 = time.time()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and time.time() - t0 < 10
    assert "stopped by SIGTERM at step" in err.decode() and "Traceback" not in err.decode()
    _, meta = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    rows = read_log(tmp_path / "run")
    assert meta["step"] == max(int(r["step"]) for r in rows) and not any(r.get("val_psnr") for r in rows)
    run(cfg, f"train.stop_at={meta['step'] + 2}", resume=True)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")[1]["step"] == meta["step"] + 2


def test_export_then_load(tmp_path: Path, data_dir: Path) -> None:
    run_dir = run(make_config(tmp_path, data_dir, steps=3))
    out = tmp_path / "exported.safetensors"
    assert cli.main(["export", str(run_dir), "-o", str(out)]) == 0
    model, mcfg = load_model(out)
    assert mcfg.name == "tiny"
    ema = {k[4:]: v for k, v in load_file(str(run_dir / "checkpoint.safetensors")).items() if k.startswith("ema/")}
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())  # the EMA is what ships
    card = read_metadata(out)["model_card"]
    assert "# tiny" in card and "3 steps" in card and "EMA" in card
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 20, 20)).shape == (1, 3, 20, 20)
    export_checkpoint(run_dir / "checkpoint.safetensors", tmp_path / "again.safetensors")
    assert cli.main(["export", str(run_dir), "-o", str(tmp_path / "t.safetensors"), "--tile", "256"]) == 0
    assert load_model(tmp_path / "t.safetensors")[1].tile == 256 and mcfg.tile != 256
    (tmp_path / "card.md").write_text("# my card\n")
    card = str(tmp_path / "card.md")
    assert cli.main(["export", str(run_dir), "-o", str(tmp_path / "c.safetensors"), "--card", card]) == 0
    assert read_metadata(tmp_path / "c.safetensors")["model_card"] == "# my card\n"
    assert cli.main(["export", str(run_dir), "-o", str(tmp_path / "d.safetensors"), "--card", "nope.md"]) == 2
    assert not (tmp_path / "d.safetensors").exists()
    with pytest.raises(SarColorError, match=r"--tile 8: use \d+ to 4096 px"):
        export_checkpoint(run_dir, tmp_path / "t2.safetensors", tile=8)
    with pytest.raises(SarColorError, match="no checkpoint found"):
        export_checkpoint(tmp_path / "nowhere", out)
    with pytest.raises(SarColorError, match="output folder does not exist"):
        export_checkpoint(run_dir, tmp_path / "no" / "m.safetensors")


@pytest.mark.parametrize("source", ["model", "checkpoint", "run_dir"])
def test_init_starts_from_a_model(tmp_path: Path, data_dir: Path, source: str) -> None:
    base = run(make_config(tmp_path / "base", data_dir, steps=3))
    init = {"model": base / "model.safetensors", "checkpoint": base / "checkpoint.safetensors",
            "run_dir": base}[source]
    # lr 0: the fine-tuned generator's weights must still be the EMA it started from
    tuned = run(make_config(tmp_path / "tuned", data_dir, steps=2, lr=0.0), init=str(init))
    start, end = state(base), state(tuned)
    params = [k[4:] for k in end if k.startswith("gen/") and "running_" not in k and "num_batches" not in k]
    assert params and all(torch.equal(end[f"gen/{k}"], start[f"ema/{k}"]) for k in params)


def test_init_from_sarcolornet(tmp_path: Path, data_dir: Path) -> None:
    former = bench_model("sarcolornet")
    shipped, scfg = load_model(former)
    # the config names no architecture: the init model's is used, and only its name comes from the config
    tuned = run(make_config(tmp_path, data_dir, steps=1, lr=0.0), "model={}", init=str(former))
    model, mcfg = load_model(tuned / "model.safetensors")
    assert (mcfg.arch, mcfg.width, mcfg.enc_depths) == (scfg.arch, scfg.width, scfg.enc_depths)
    end = state(tuned)
    assert all(torch.equal(end[f"gen/{k}"], v) for k, v in shipped.state_dict().items() if "running_" not in k
               and "num_batches" not in k)


def test_init_with_another_architecture_fails(tmp_path: Path, data_dir: Path) -> None:
    base = run(make_config(tmp_path / "base", data_dir, steps=1))
    cfg = make_config(tmp_path / "other", data_dir, steps=1)
    with pytest.raises(SarColorError, match="architecture sarcolornet differs from the config's pix2pix-seed"):
        run(cfg, "model.arch=pix2pix-seed", init=str(base / "model.safetensors"))


def test_run_folder_rules(tmp_path: Path, data_dir: Path) -> None:
    cfg = make_config(tmp_path, data_dir, steps=1)
    with pytest.raises(SarColorError, match="nothing to resume"):
        run(cfg, resume=True)
    run(cfg)
    with pytest.raises(SarColorError, match="a run exists already"):
        run(cfg)
    with pytest.raises(SarColorError, match="unknown train option"):
        resolve_config(cfg, ["train.stepz=3"])
    with pytest.raises(SarColorError, match="train.preload must be true, false or auto, not 'yes please'"):
        resolve_config(cfg, ["train.preload=yes please"])
    with pytest.raises(SarColorError, match="unknown model option"):
        run(make_config(tmp_path / "m", data_dir), "model.depth=3")


def test_cli_train(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = make_config(tmp_path, data_dir)
    assert cli.main(["train", "--config", str(cfg), "train.steps=2", "-q"]) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert cli.main(["train", "--config", str(cfg), "-q", "train.steps"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    assert cli.main(["train", "--config", str(cfg), "--device", "cpu", "run_dir=run-cpu", "train.steps=1", "-q"]) == 0
    assert (tmp_path / "run-cpu" / "model.safetensors").is_file()
    if not torch.cuda.is_available():
        assert cli.main(["train", "--config", str(cfg), "--device", "cuda", "run_dir=run-gpu", "-q"]) == 2
        assert "--device cuda: no CUDA GPU is available to PyTorch here" in capsys.readouterr().err


@pytest.mark.slow
def test_pix2pix_seed_few_steps_and_exact_resume(tmp_path: Path) -> None:
    """The real prototype network (41.8M parameters, 128 px crops, dropout) for 3 steps with validation;
    stopped after 2 (mid-epoch) and resumed, it ends bitwise where the straight run ends (dropout masks included)."""
    root = datagen.make_folders(tmp_path / "d", n=3, size=(160, 160), groups={"000": "A", "001": "A", "002": "B"})
    over = ['model={"arch": "pix2pix-seed"}', "train.loss=pix2pix", "train.betas=[0.5, 0.999]"]
    kw = {"steps": 3, "batch_size": 2, "crop": 128, "samples_per_epoch": 8, "val_every": 3, "val_crop": 128,
          "lr": 2e-4}
    run_dir = run(make_config(tmp_path / "full", root, **kw), *over)
    model, mcfg = load_model(run_dir / "model.safetensors")
    assert mcfg.arch == "pix2pix-seed" and mcfg.in_channels == 3
    assert [int(r["step"]) for r in read_log(run_dir) if r["val_psnr"]] == [3]
    part_cfg = make_config(tmp_path / "part", root, **kw)
    part = run(part_cfg, *over, "train.stop_at=2")
    run(part_cfg, *over, resume=True)
    assert_same_state(run_dir, part)


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path: Path, data_dir: Path) -> None:
    """DDP over gloo with 2 CPU processes: both ranks end with identical weights, the loss falls, rank 0 writes."""
    cfg = make_config(tmp_path, data_dir, steps=20, ckpt_every=10, val_every=10, samples_per_epoch=16)
    digest = tmp_path / "digest"
    env = dict(os.environ, OMP_NUM_THREADS="1", **{DIGEST_ENV: str(digest)})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sarcolor", "train", "--config", str(cfg), "-q"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((digest / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [20, 20]
    assert ranks[0]["gen"] == ranks[1]["gen"] and ranks[0]["ema"] == ranks[1]["ema"]
    assert ranks[0]["losses"] != ranks[1]["losses"]  # each rank saw its own shard of the data
    for r in ranks:
        first, last = sum(r["losses"][:5]) / 5, sum(r["losses"][-5:]) / 5
        assert last < first, (r["rank"], r["losses"])
    run_dir = tmp_path / "run"
    _, meta = load_checkpoint(run_dir / "checkpoint.safetensors")
    assert meta["step"] == 20
    model, _ = load_model(run_dir / "model.safetensors")
    ema = {k[4:]: v for k, v in load_file(str(run_dir / "checkpoint.safetensors")).items() if k.startswith("ema/")}
    assert weights_digest(model) == ranks[0]["ema"] == weights_digest_from(ema)
    steps = [int(r["step"]) for r in read_log(run_dir) if r["loss"]]
    assert steps == list(range(1, 21))  # one writer: each step logged once
    first = [round(sum(r["losses"][:5]) / 5, 4) for r in ranks]
    last = [round(sum(r["losses"][-5:]) / 5, 4) for r in ranks]
    print(f"\nDDP 2x gloo: gen sha256 {ranks[0]['gen'][:16]}.. on both ranks; mean loss of steps 1-5 per rank "
          f"{first} -> steps 16-20 {last}")


def weights_digest_from(tensors: dict[str, torch.Tensor]) -> str:
    class _Holder(torch.nn.Module):
        def state_dict(self, *a, **k):  # noqa: D102 - the digest only needs state_dict()
            return tensors

    return weights_digest(_Holder())


def test_colour_model_trains_on_sources_with_renderings(tmp_path: Path, data_dir: Path) -> None:
    """colournet + the colour loss: two sources with their own renderings (one with pairs smaller than the crop,
    padded), per-source balanced draws; the loss falls, the best weights are kept by the colour error alone,
    and the exported model gives both looks for each rendering."""
    small = tmp_path / "small"
    datagen.make_folders(small, n=4, size=(24, 24), groups={f"{i:03d}": "S" for i in range(4)})
    cfg = {
        "run_dir": "run", "seed": 1,
        "model": {"arch": "colournet", "width": 8, "enc_depths": [1, 1], "renders": ["r1", "r2"], "render": "r1",
                  "name": "tiny-colour"},
        "data": {"sources": [{"root": str(data_dir), "layout": "folders", "groups_csv": "groups.csv",
                              "group_column": "tile", "render": "r1"},
                             {"name": "small", "root": str(small), "render": "r2"}],
                 "val": {"groups": ["B"]}},
        "train": {"loss": "colour", "steps": 30, "batch_size": 4, "crop": 32, "samples_per_epoch": 16, "lr": 1e-2,
                  "warmup": 2, "ckpt_every": 10, "val_every": 10, "val_crop": 32, "log_every": 1, "threads": 1,
                  "balance_sources": True},
    }
    path = datagen.write_config(tmp_path / "colour.yaml", cfg)
    run_dir = run(path)
    rows = read_log(run_dir)
    losses_ = [float(r["loss"]) for r in rows if r.get("loss")]
    assert losses_[-1] < losses_[0]
    vals = [float(r["val_colour_error"]) for r in rows if r.get("val_colour_error")]
    assert len(vals) == 3
    _, meta = load_checkpoint(run_dir / "best.safetensors")
    assert round(meta["val"]["colour_error"], 4) == pytest.approx(min(vals), abs=1e-4)
    model, mcfg = load_model(run_dir / "model.safetensors")
    assert mcfg.arch == "colournet" and mcfg.renders == ("r1", "r2")
    from sarcolor.engine import colorize_array

    sar = datagen.sar_image(40, 40, seed=3).astype("float32")
    looks = {(look, r): colorize_array(model, mcfg, sar, scale="8bit", look=look, render=r)
             for look in ("sar", "optical") for r in ("r1", "r2")}
    assert all(v.shape == (40, 40, 3) for v in looks.values())
    assert not (looks["sar", "r1"] == looks["optical", "r1"]).all()


def test_colour_loss_needs_the_colour_model(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(SarColorError, match="train.loss 'colour' does not fit model.arch 'sarcolornet' "
                                            r"\(it trains with sarcolor or pix2pix\)"):
        run(make_config(tmp_path, data_dir, loss="colour"))
    with pytest.raises(SarColorError, match="train.loss 'regress' does not fit model.arch 'sarcolornet'"):
        run(make_config(tmp_path, data_dir, loss="regress"))
    with pytest.raises(SarColorError, match="train.loss 'hinge': use sarcolor, pix2pix, colour, regress"):
        run(make_config(tmp_path, data_dir, loss="hinge"))


def test_context_model_trains_by_regression_and_keeps_the_best(tmp_path: Path, data_dir: Path) -> None:
    """contextnet + the regress loss: the loss falls, validation selects by the colour error alone, and the
    exported model colours in both looks."""
    cfg = {
        "run_dir": "run", "seed": 1,
        "model": {"arch": "contextnet", "width": 8, "windows": [3, 5], "renders": ["r1"], "render": "r1",
                  "name": "tiny-context"},
        "data": {"sources": [{"root": str(data_dir), "layout": "folders", "groups_csv": "groups.csv",
                              "group_column": "tile", "render": "r1"}], "val": {"groups": ["B"]}},
        "train": {"loss": "regress", "steps": 30, "batch_size": 4, "crop": 32, "samples_per_epoch": 16,
                  "lr": 1e-2, "warmup": 2, "ckpt_every": 10, "val_every": 10, "val_crop": 32, "log_every": 1,
                  "threads": 1},
    }
    run_dir = run(datagen.write_config(tmp_path / "ctx.yaml", cfg))
    rows = read_log(run_dir)
    losses_ = [float(r["loss"]) for r in rows if r.get("loss")]
    assert np.mean(losses_[-5:]) < np.mean(losses_[:5])
    vals = [float(r["val_colour_error"]) for r in rows if r.get("val_colour_error")]
    _, meta = load_checkpoint(run_dir / "best.safetensors")
    assert len(vals) == 3 and round(meta["val"]["colour_error"], 4) == pytest.approx(min(vals), abs=1e-4)
    model, mcfg = load_model(run_dir / "model.safetensors")
    from sarcolor.engine import colorize_array

    sar = datagen.sar_image(40, 40, seed=3).astype("float32")
    sar_look, optical = (colorize_array(model, mcfg, sar, scale="8bit", look=k) for k in ("sar", "optical"))
    assert sar_look.shape == optical.shape == (40, 40, 3) and not (sar_look == optical).all()


def test_regress_loss_takes_a_known_ab_loss(tmp_path: Path, data_dir: Path) -> None:
    cfg = yaml.safe_load(make_config(tmp_path, data_dir).read_text())
    cfg["model"] = {"arch": "contextnet", "width": 8, "windows": [3, 5], "name": "tiny-context"}
    cfg["train"] |= {"loss": "regress", "ab_loss": "l3"}
    with pytest.raises(SarColorError, match="train.ab_loss 'l3': use squared or ciede2000"):
        run(datagen.write_config(tmp_path / "ab.yaml", cfg))
