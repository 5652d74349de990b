import json
import math
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from kinema import accel, recipe, train
from kinema.checkpoint import load_model, load_tensors
from kinema.config import ModelConfig
from kinema.errors import KinemaError
from kinema.pipeline import Pipeline, Request
from kinema.train_loop import load_state
from test_train_vae import patch_vae_model

DEBUG = Path(__file__).parents[1] / "configs" / "debug.toml"


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    """A debug run with its VAE trained and its latent cache built (shared, read-only)."""
    out = tmp_path_factory.mktemp("run")
    train.run(DEBUG, stage="vae", out=out, progress=False)
    train.run(DEBUG, stage="cache", out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def dit_run(vae_run, tmp_path_factory) -> Path:
    """The same run with its DiT trained straight through (6 steps) and exported to model/."""
    out = _copy(vae_run, tmp_path_factory.mktemp("dit") / "run")
    train.run(DEBUG, stage="dit", out=out, progress=False)
    train.export(out, out / "model")
    return out


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def test_vae_stage_writes_checkpoint_metrics_and_plots(vae_run):
    vae = vae_run / "vae"
    for name in ("checkpoint.pt", "metrics.jsonl", "loss.png", "reconstructions.png", "vae.safetensors"):
        assert (vae / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (vae / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"loss", "l1", "edge", "kl", "lr", "grad_norm", "s_per_step"} <= set(rows[0])
    assert "psnr" in rows[-1] and rows[-1]["block_jump"] > 0  # the eval clips hold 2 latent frames
    assert all(0 <= rows[-1][f"judge_{name}"] <= 1 for name in ("colour", "shape", "motion", "count", "overall"))
    result = json.loads((vae / "result.json").read_text())
    assert result["judge_overall"] == rows[-1]["judge_overall"]  # the last eval's round trips, judged once
    assert result["psnr_clips"] == "held-out"  # the world's eval split
    assert result["steps"] == 4 and len(result["latents_std"]) == 8 and min(result["latents_std"]) > 0
    assert len(list((vae_run / "cache").glob("*/shard_*.safetensors"))) == 3


def _dit_stage(vae_run, overrides: dict | None = None):
    """A fresh DiT stage of the debug recipe on the shared run's cache (never saved)."""
    from kinema.data import load_cache
    from kinema.train_dit import DiTStage

    r = recipe.load(DEBUG, overrides)
    cfg = train.trained_config(r, vae_run)
    cache = load_cache(vae_run / "cache", train._buckets(r), train._counts(r))
    return DiTStage(r, cfg, vae_run / "scratch", cache, train._source(r), train.load_trained_vae(cfg, vae_run),
                    resume=False)


def test_the_dit_learns_from_noise_as_correlated_as_the_recipe_says(vae_run, monkeypatch):
    from kinema import train_dit

    drawn: list[torch.Tensor] = []
    real = train_dit.sampling.initial_noise
    monkeypatch.setattr(train_dit.sampling, "initial_noise", lambda *a: drawn.append(real(*a)) or drawn[-1])
    rho = 0.9
    stage = _dit_stage(vae_run, {"dit.noise_correlation": rho, "model.sampler.noise_correlation": rho})
    for _ in range(10):  # until a batch of clips (stills have one latent frame)
        assert math.isfinite(stage.train_step()["loss"])
        if any(eps.shape[2] > 1 for eps in drawn):
            break
    eps = next(eps for eps in drawn if eps.shape[2] > 1)
    neighbours = torch.corrcoef(torch.stack([eps[:, :, :-1].flatten(), eps[:, :, 1:].flatten()]))[0, 1]
    assert abs(neighbours - rho) < 0.05, neighbours


def test_the_dit_learns_to_draw_around_frames_given_in_part(vae_run, monkeypatch):
    """With `outpaint_share` the DiT gets a time per token: 0 on the given box, which stays clean in its input and
    out of the loss, as image to video and extensions give frames when the camera crosses a larger scene."""
    from kinema.models.dit import DiT

    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    forward = DiT.forward
    monkeypatch.setattr(DiT, "forward", lambda self, x, t, *a, **k: seen.append((x, t)) or forward(self, x, t, *a, **k))
    stage = _dit_stage(vae_run, {"dit.outpaint_share": 1.0})
    cond = stage.draw_condition(torch.zeros(3, 4, 5, 16, 16))  # an 8x8 token grid (2x2 patches)
    assert not cond.mask.any() and cond.region[:, 0].any(dim=(1, 2)).all()  # every clip: the first frame in part
    assert (~cond.region).any(dim=(1, 2, 3)).all()  # and tokens left to draw
    for _ in range(3):
        assert math.isfinite(stage.train_step()["loss"])
    x, t = seen[-1]
    assert t.dim() == 4 and (t == 0).any() and (t > 0).any()  # (b, T, h', w'): some tokens clean, some noised
    with pytest.raises(KinemaError, match="outpaint_share"):
        _dit_stage(vae_run, {"dit.outpaint_share": 1.5})


def test_dit_batches_come_from_one_bucket(vae_run):
    stage = _dit_stage(vae_run)
    r, cfg = stage.recipe, stage.model_cfg
    seen = set()
    for _ in range(8):
        cached, x0, captions = stage.next_batch()
        assert x0.shape[1:] == cached.latents.shape[1:] and len(captions) == len(x0)
        assert len(x0) == cached.bucket.batch_size(cfg, r.dit.batch_tokens, r.dit.max_batch)
        seen.add(cached.bucket.name)
    assert len(seen) > 1


def test_a_resumed_cursor_past_a_shrunk_cache_starts_the_next_epoch(vae_run):
    """Resuming after the recipe's clips (or bucket weights) changed: a cursor past the cache's end must not hang."""
    stage = _dit_stage(vae_run)
    size = len(stage.cache[0].latents)
    stage.cursor[0] = [3, size + 5]  # saved when this bucket held more clips
    picked = stage._indices(0, 2)
    assert len(picked) == 2 and max(picked) < size and stage.cursor[0] == [4, 2]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_waits_for_the_step_to_end(signum):
    """Ctrl-C, or the SIGTERM that torchrun, SLURM and Kubernetes send, only sets the flag the loop reads between
    steps (which then saves); the handlers before are back afterwards."""
    from kinema.train_loop import deferred_interrupt

    before = signal.getsignal(signum)
    with deferred_interrupt() as interrupted:
        assert not interrupted()
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # the handler runs at the next bytecode; the process lives on
        assert interrupted()
        assert signal.getsignal(signum) is before  # a second one acts at once
    assert signal.getsignal(signum) is before


def test_resume_is_bit_exact_and_ctrl_c_saves(vae_run, dit_run, tmp_path):
    resumed = _copy(vae_run, tmp_path / "resumed")

    def ctrl_c(stage, step):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KinemaError, match="interrupted at dit step 3.*--resume"):
        train.run(DEBUG, stage="dit", out=resumed, progress=False, on_step=ctrl_c)
    assert load_state(resumed / "dit" / "checkpoint.pt")["step"] == 3
    with pytest.raises(KinemaError, match="--resume"):
        train.run(DEBUG, stage="dit", out=resumed, progress=False)  # would overwrite: refused
    with pytest.raises(KinemaError, match="holds no training run to continue; check --out"):
        train.run(DEBUG, stage="dit", out=tmp_path / "typo", resume=True, progress=False)
    assert not (tmp_path / "typo").exists()
    train.run(DEBUG, stage="dit", out=resumed, resume=True, progress=False)

    a, b = (load_state(run / "dit" / "checkpoint.pt") for run in (dit_run, resumed))
    assert a["step"] == b["step"] == 6 and a["cursor"] == b["cursor"]
    for key in ("dit", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    opt_a, opt_b = a["opt"]["state"], b["opt"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)
    losses = [[json.loads(line)["loss"] for line in (run / "dit" / "metrics.jsonl").read_text().splitlines()]
              for run in (dit_run, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    last = json.loads((dit_run / "dit" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= last["prefers colour"] <= 1  # the word probe runs with the samples, on the world
    assert (dit_run / "dit" / "loss.png").exists() and list((dit_run / "dit" / "samples").glob("*.png"))
    sparse = _copy(vae_run, tmp_path / "sparse")  # logs every 4 steps: a stop at 3 still writes steps 1-3
    with pytest.raises(KinemaError, match="interrupted at dit step 3"):
        train.run(DEBUG, stage="dit", out=sparse, progress=False, on_step=ctrl_c, overrides={"dit.log_every": 4})
    assert [json.loads(line)["step"] for line in (sparse / "dit" / "metrics.jsonl").read_text().splitlines()] == [3]


def test_a_second_ctrl_c_mid_step_keeps_the_last_whole_checkpoint(vae_run, tmp_path, monkeypatch):
    from kinema.train_dit import DiTStage

    run, real, calls = _copy(vae_run, tmp_path / "run"), DiTStage.train_step, []

    def half_step(self):
        calls.append(1)
        row = real(self)  # the update is applied ...
        if len(calls) == 5:
            raise KeyboardInterrupt  # ... and Ctrl-C lands before the step is done with
        return row

    monkeypatch.setattr(DiTStage, "train_step", half_step)
    with pytest.raises(KinemaError, match="stopped mid-step in dit; the last saved checkpoint is kept"):
        train.run(DEBUG, stage="dit", out=run, progress=False)
    assert load_state(run / "dit" / "checkpoint.pt")["step"] == 3  # saved at checkpoint_every, not at 4 or 5


def test_export_loads_and_samples(dit_run):
    model = load_model(dit_run / "model")
    assert model.dit.patch_embedding.weight.dtype == torch.float32  # load_model's dtype, from fp16 files
    stats = json.loads((dit_run / "vae" / "result.json").read_text())["latents_std"]
    assert model.cfg.vae.latents_std == tuple(stats)
    ema = load_state(dit_run / "dit" / "checkpoint.pt")["ema"]
    assert torch.equal(model.dit.proj_out.weight, ema["proj_out.weight"].half().float())  # EMA weights
    video = Pipeline(model).generate(Request("a red circle moves left", width=32, height=32, frames=5, steps=2))
    assert video.latents.shape == (1, 8, 2, 4, 4) and torch.isfinite(video.latents).all()


def test_fine_tunes_a_model_on_a_folder_of_videos(dit_run, tmp_path, capsys):
    import numpy as np

    from kinema.io import write_video

    base = dit_run / "model"
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        frames = np.zeros((9, 36, 40, 3), np.uint8)
        frames[:, 10:20, 4 * i:4 * i + 10] = 255
        write_video(videos / f"v{i}.mp4", frames, fps=8)
    (videos / "captions.csv").write_text("path,caption\nv0.mp4,a white box\n")
    overrides = {"data.source": str(videos), "model.init": str(base), "vae.steps": 0, "dit.steps": 2}
    train.run(DEBUG, out=tmp_path / "one", progress=False, overrides={**overrides, "dit.steps": 0})
    # One short video gives both of the VAE's measuring clips (different windows of it), and the summary says so.
    assert "VAE: PSNR" in (out := capsys.readouterr().out) and "on 2 training clips of 1 video after" in out
    (videos / "captions.csv").write_text("path,caption\nv0.mp4,a white box\nv1.mp4,a white box on the right\n")
    tuned = train.run(DEBUG, out=tmp_path / "tuned", progress=False, overrides=overrides)
    assert "on 2 training clips after" in capsys.readouterr().out
    # The VAE was not trained, so the latent statistics the base DiT learned with are kept.
    assert load_model(tuned / "model").cfg.vae.latents_std == load_model(base).cfg.vae.latents_std
    with Image.open(tuned / "dit" / "samples" / "step_000002.png") as grid:  # sampled with its captions
        assert "a white box" in grid.text["labels"]
    # Trained on your videos, an export is named after its folder, not the recipe's own model.
    assert load_model(train.export(tuned, tmp_path / "my-boxes")).cfg.name == "my-boxes"
    assert load_model(tuned / "model").cfg.name == "tuned"  # the run's own export: after the run


def test_corrupt_checkpoint_is_a_clear_error(vae_run, tmp_path):
    run = _copy(vae_run, tmp_path / "run")
    (run / "dit").mkdir()
    (run / "dit" / "checkpoint.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(KinemaError, match="corrupt"):
        train.run(DEBUG, stage="dit", out=run, resume=True, progress=False)
    (run / "dit" / "checkpoint.pt").write_bytes(b"")  # a disk that filled up: torch's EOFError says nothing
    with pytest.raises(KinemaError, match=r"checkpoint .* is corrupt \(EOFError\)"):
        train.run(DEBUG, stage="dit", out=run, resume=True, progress=False)
    with pytest.raises(KinemaError, match="no trained DiT|corrupt"):
        train.export(run, tmp_path / "model")


def test_a_refused_run_leaves_the_run_folder_as_it_was(vae_run, tmp_path):
    run = _copy(vae_run, tmp_path / "run")
    before = (run / "recipe.json").read_text()
    with pytest.raises(KinemaError, match="already holds a checkpoint; pass --resume"):
        train.run(DEBUG, stage="vae", out=run, overrides={"vae.lr": 0.5}, progress=False)
    for change, says in (({"model.dit.num_layers": 3}, "model.dit.num_layers is 3 here but unset in the run"),
                         ({"data.buckets": [[32, 32, 5]], "data.bucket_weights": [1.0]}, "data.buckets is")):
        with pytest.raises(KinemaError, match=says):
            train.run(DEBUG, stage="dit", out=run, resume=True, overrides=change, progress=False)
    with pytest.raises(KinemaError, match=r"VAE is finished and its latents are cached, and the recipe changes it: "
                       r"vae.steps 999 \(was \d+\); repeat the run's values \(--set vae.steps=\d+\)"):
        train.run(DEBUG, stage="all", out=run, resume=True, overrides={"vae.steps": 999}, progress=False)
    assert (run / "recipe.json").read_text() == before
    import fcntl

    with open(run / ".lock", "w") as other:  # another process training this folder
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(KinemaError, match="is being trained by another process"):
            train.run(DEBUG, stage="vae", out=run, resume=True, progress=False)


@pytest.mark.parametrize("stage", ["cache", "dit"])
def test_the_cache_and_dit_stages_need_a_trained_vae(tmp_path, stage):
    with pytest.raises(KinemaError, match="has no trained VAE yet; run the vae stage first"):
        train.run(DEBUG, stage=stage, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run folder (or its recipe.json) was made


def test_a_patch_vae_recipe_trains_and_learns(tmp_path):
    """vae.kind = "patch" (the bundled model's VAE) through the same recipe and stage: PSNR climbs fast."""
    overrides = {"model.vae": {"kind": "patch", "base_dim": 32, "num_res_blocks": 1},
                 "model.dit": {"patch_size": [1, 4, 4]},
                 "vae": {"steps": 60, "lr": 3e-3, "batch": 4, "eval_every": 20, "warmup": 5}}
    train.run(DEBUG, stage="vae", out=tmp_path, progress=False, overrides=overrides)
    rows = [json.loads(line) for line in (tmp_path / "vae" / "metrics.jsonl").read_text().splitlines()]
    psnr = [r["psnr"] for r in rows if "psnr" in r]
    assert len(psnr) == 3 and psnr[-1] >= psnr[0] + 2.5 and psnr[-1] >= 14.0, psnr
    assert json.loads((tmp_path / "recipe.json").read_text())["recipe"]["model"]["vae"]["kind"] == "patch"


def test_device_choice_is_checked():
    assert accel.resolve_device("cpu") == torch.device("cpu")
    assert accel.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(KinemaError, match="unknown device 'gpu0'"):
        accel.resolve_device("gpu0")
    with pytest.raises(KinemaError, match="is not supported; use cpu or cuda"):
        accel.resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(KinemaError, match="no GPU here; use cpu"):
            train.run(DEBUG, stage="dit", device="cuda", progress=False)


WIDE_TEXT = {"model.text.layers": [-1, 0], "model.text.dim": 768, "model.dit.text_dim": 768}


def test_a_fine_tune_may_only_append_text_layers(dit_run):
    init = {"model.init": str(dit_run / "model")}  # the debug model reads MiniLM's last states only
    wide = recipe.load(DEBUG, {**init, **WIDE_TEXT}).model
    assert wide.text.layers == (-1, 0) and wide.dit.text_dim == 768
    with pytest.raises(KinemaError, match=r"layers = \[0, -1\] must begin with the init model's \[-1\]"):
        recipe.load(DEBUG, {**init, **WIDE_TEXT, "model.text.layers": [0, -1]})
    with pytest.raises(KinemaError, match="dit.text_dim=768 must equal text.dim=384"):
        recipe.load(DEBUG, {**init, "model.dit.text_dim": 768})  # a wider DiT input alone
    assert recipe.load(DEBUG, {**init, "model.text.max_length": 16}).model.text.max_length == 16
    with pytest.raises(KinemaError, match="text_dim .* not when distilling"):
        recipe.load(DEBUG, {**init, **WIDE_TEXT, "dit.distill_steps": 2})
    # The bundled model reads both since session 20; a fine-tune of it keeps them.
    gpu = Path(__file__).parents[1] / "configs" / "small_gpu.toml"
    assert recipe.load(gpu).model.text.layers == (-1, 0)
    with pytest.raises(KinemaError, match=r"layers = \[-1\] must begin with the init model's \[-1, 0\]"):
        recipe.load(gpu, {"model.text.layers": [-1], "model.text.dim": 384, "model.dit.text_dim": 384})


def test_finetune_share_exports_the_fine_tune_moved_back_towards_its_init(dit_run, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "wise"
    overrides = {"model.init": str(dit_run / "model"), "vae.steps": 0, "dit.steps": 3, "dit.probe_clips": 0,
                 "dit.lr": 0.01, "dit.warmup": 0, "dit.ema_decay": 0.01, "dit.finetune_share": 0.25}
    train.run(DEBUG, out=out, overrides=overrides, progress=False)
    exported = load_file(train.export(out, out / "model") / "dit.safetensors")
    init = load_file(dit_run / "model" / "dit.safetensors")
    trained = load_state(out / "dit" / "checkpoint.pt")["ema"]
    name = "blocks.0.self_attn.qkv.weight"
    assert (trained[name] - init[name].float()).abs().max() > 0.01  # the fine-tune moved it
    expected = init[name].float() + 0.25 * (trained[name] - init[name].float())
    torch.testing.assert_close(exported[name].float(), expected, atol=2e-4, rtol=2e-3)  # fp16 files
    for bad in ({"dit.finetune_share": 0.5}, {"dit.finetune_share": 0.0, "model.init": str(dit_run / "model")},
                {"dit.finetune_share": 0.5, "model.init": str(dit_run / "model"), "dit.distill_steps": 2}):
        with pytest.raises(KinemaError, match="finetune_share .* below 1 only for a fine-tune"):
            recipe.load(DEBUG, bad)


def test_a_fine_tune_with_more_text_layers_trains(dit_run, tmp_path):
    """The debug model fine-tuned on MiniLM's last states and token embeddings: its text input is widened with
    zero columns, then trained."""
    out = tmp_path / "wide"
    overrides = {"model.init": str(dit_run / "model"), "vae.steps": 0, "dit.steps": 2, "dit.probe_clips": 0,
                 **WIDE_TEXT}
    train.run(DEBUG, out=out, overrides=overrides, progress=False)
    state = load_state(out / "dit" / "checkpoint.pt")["dit"]
    init = load_state(dit_run / "dit" / "checkpoint.pt")["dit"]["text_embedding.0.weight"]
    weight = state["text_embedding.0.weight"]
    assert weight.shape == (init.shape[0], 768) and weight[:, 384:].abs().sum() > 0  # the new columns learn
    assert ModelConfig.from_dict(json.loads((out / "model_config.json").read_text())).text.layers == (-1, 0)
    pipe = Pipeline.load(train.export(out, out / "model"))  # the exported model reads both layers when it samples
    assert pipe.cfg.text.layers == (-1, 0) and pipe.model.text(["a red circle"])[0].shape[-1] == 768
    video = pipe.generate(Request("a red circle moves to the left", frames=1, steps=2, seed=0))
    assert torch.isfinite(video.latents).all()


def test_a_fine_tune_to_finer_patches_trains(dit_run, tmp_path):
    """The debug model (1x2x2) fine-tuned at 1x1x1: its weights are resized from the init, then trained."""
    out = tmp_path / "finer"
    overrides = {"model.init": str(dit_run / "model"), "vae.steps": 0, "model.dit.patch_size": [1, 1, 1],
                 "dit.steps": 2, "dit.probe_clips": 0}
    train.run(DEBUG, out=out, overrides=overrides, progress=False)
    state = load_state(out / "dit" / "checkpoint.pt")["dit"]
    channels = state["patch_embedding.weight"].shape[1]  # the VAE's latent channels, in and out
    assert state["patch_embedding.weight"].shape[-2:] == (1, 1) and state["proj_out.weight"].shape[0] == channels
    rows = [json.loads(line) for line in (out / "dit" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(row["loss"]) for row in rows)


def _stop_at_3(stage: str, step: int) -> None:
    if step == 3:
        raise KeyboardInterrupt  # as Ctrl-C: every rank sees it (torchrun forwards SIGINT to all)


def _dit_rank(rank: int, port: int, run: str, resume: bool) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train.run(DEBUG, stage="dit", out=run, progress=False, resume=resume, device="cpu", overrides=FP32,
                  on_step=None if resume else _stop_at_3)
    except KinemaError as err:
        assert not resume and "interrupted at dit step 3" in str(err)


def _fail_on_rank_0(stage: str, step: int) -> None:
    if step == 2 and os.environ["RANK"] == "0":  # e.g. its sample grid's disk filled up
        raise KinemaError("rank 0 failed alone")


def _failing_rank(rank: int, port: int, run: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train.run(DEBUG, stage="dit", out=run, progress=False, device="cpu", on_step=_fail_on_rank_0)


def test_a_rank_failing_alone_ends_the_launch_instead_of_hanging(vae_run, tmp_path):
    """Its peer waits in the next step's collectives; the failed rank must leave (torchrun then stops the peer)
    rather than wait for it in a barrier it will never reach."""
    launch = mp.spawn(_failing_rank, args=(_free_port(), str(_copy(vae_run, tmp_path / "run"))), nprocs=2,
                      join=False)
    deadline = time.monotonic() + 300
    with pytest.raises(mp.ProcessRaisedException, match="rank 0 failed alone"):
        while not launch.join(timeout=2):  # a failure raises here, and the other process is terminated
            if time.monotonic() > deadline:
                for process in launch.processes:
                    process.kill()
                raise AssertionError("the launch hung after rank 0 failed")


FP32 = {"dit.bf16": False}  # so that one process and two ranks differ only in the order of float sums


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_train_like_one_process_and_resume(vae_run, tmp_path):
    """torchrun-style: 2 gloo ranks, each half of every batch, the DiT sharded by FSDP2; stopped at step 3
    and resumed, they end where one process with whole batches ends."""
    one, two = _copy(vae_run, tmp_path / "one"), _copy(vae_run, tmp_path / "two")
    train.run(DEBUG, stage="dit", out=one, progress=False, overrides=FP32)
    mp.spawn(_dit_rank, args=(_free_port(), str(two), False), nprocs=2, join=True)
    assert load_state(two / "dit" / "checkpoint.pt")["step"] == 3
    mp.spawn(_dit_rank, args=(_free_port(), str(two), True), nprocs=2, join=True)
    a, b = (load_state(run / "dit" / "checkpoint.pt") for run in (one, two))
    assert b["step"] == 6 and b["cursor"] == a["cursor"]
    for key in ("dit", "ema"):
        for name, tensor in a[key].items():
            torch.testing.assert_close(b[key][name], tensor, rtol=1e-4, atol=1e-6, msg=f"{key} {name}")
    rows = [[json.loads(line) for line in (run / "dit" / "metrics.jsonl").read_text().splitlines()]
            for run in (one, two)]
    assert [r["step"] for r in rows[1]] == [1, 2, 3, 4, 5, 6]  # one writer: no duplicates from rank 1
    assert [r["loss"] for r in rows[1]] == pytest.approx([r["loss"] for r in rows[0]], rel=1e-4)
    train.export(two, tmp_path / "model")  # a checkpoint of sharded training exports like any other
    exported = load_model(str(tmp_path / "model")).dit.state_dict()
    torch.testing.assert_close(exported["head_modulation"].float(), b["ema"]["head_modulation"], rtol=1e-3, atol=1e-5)


def test_torchrun_trains_only_the_dit_stage(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for stage in ("vae", "cache", "all"):
        with pytest.raises(KinemaError, match=f"--stage {stage} runs in one process.*--stage dit"):
            train.run(DEBUG, stage=stage, out=tmp_path, progress=False)


def test_a_trained_fine_tune_exports_after_its_init_folder_is_gone(dit_run, tmp_path):
    """Export reads the run's own checkpoint; only a VAE fine-tune (dit.steps = 0) needs its init's DiT."""
    init = _copy(dit_run / "model", tmp_path / "init")
    overrides = {"model.init": str(init), "vae.steps": 0, "dit.steps": 1, "dit.probe_clips": 0}
    run = train.run(DEBUG, out=tmp_path / "run", overrides=overrides, progress=False)
    shutil.rmtree(init)
    exported = load_model(train.export(run, tmp_path / "again"))
    assert torch.equal(exported.dit.proj_out.weight, load_model(run / "model").dit.proj_out.weight)


def test_a_dit_fine_tune_moves_to_another_trained_vae(dit_run, tmp_path):
    """[vae] init swaps in another trained VAE: the init's DiT then learns that VAE's latents, with its statistics."""
    other = train.run(DEBUG, stage="vae", out=tmp_path / "other", progress=False,
                      overrides={"vae.steps": 2, "data.seed": 5})
    overrides = {"model.init": str(dit_run / "model"), "vae.init": str(other), "vae.steps": 0, "dit.steps": 1,
                 "dit.probe_clips": 0}
    run = train.run(DEBUG, out=tmp_path / "run", overrides=overrides, progress=False)
    init, moved = load_model(dit_run / "model"), load_model(run / "model")
    stats = json.loads((other / "vae" / "result.json").read_text())
    assert list(moved.cfg.vae.latents_std) == pytest.approx(stats["latents_std"])
    assert list(moved.cfg.vae.latents_std) != pytest.approx(list(init.cfg.vae.latents_std))
    trained_vae = load_tensors(other / "vae" / "vae.safetensors")
    assert all(torch.equal(v.half().float(), moved.vae.state_dict()[k]) for k, v in trained_vae.items())
    step = (moved.dit.proj_out.weight - init.dit.proj_out.weight).abs().max()
    assert 0 < step < 0.01  # one step on from the init's DiT, not a new one
    # a new DiT on a trained VAE takes that VAE's config; latents of another shape or a student are refused
    assert recipe.load(DEBUG, {"vae.init": str(dit_run / "model")}).model.vae == init.cfg.vae
    with pytest.raises(KinemaError, match="gives 8-channel latents of 4x4x4 patches, but the init model's DiT reads"):
        recipe.load(DEBUG, {**overrides, "vae.init": str(patch_vae_model(tmp_path / "patch"))})
    with pytest.raises(KinemaError, match="is neither a model folder .* nor a run folder"):
        recipe.load(DEBUG, {**overrides, "vae.init": str(tmp_path / "missing")})
    with pytest.raises(KinemaError, match="a distilled student keeps its teacher's"):
        recipe.load(DEBUG, {**overrides, "dit.distill_steps": 2})
