"""Distillation (kinema.train_distill): a teacher's two guided Euler steps become one student step."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kinema import flow, recipe, sampling, train
from kinema.checkpoint import load_model, load_tensors
from kinema.conditioning import FrameCondition
from kinema.data import load_cache
from kinema.errors import KinemaError
from kinema.parallel import ONE_CPU
from kinema.pipeline import Pipeline, Request
from kinema.train_distill import DistillStage

DEBUG = Path(__file__).parents[1] / "configs" / "debug.toml"


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A debug run with VAE, cache and a 6-step DiT exported to model/: the teacher."""
    out = tmp_path_factory.mktemp("teacher")
    train.run(DEBUG, out=out, progress=False)
    return out


def _distill_overrides(teacher_run, **dit) -> dict:
    return {"model.init": str(teacher_run / "model"), "vae.steps": 0, "dit.distill_steps": 2, "dit.bf16": False,
            **{f"dit.{k}": v for k, v in dit.items()}}


def _stage(teacher_run, tmp_path, guidance: float) -> DistillStage:
    r = recipe.load(DEBUG, _distill_overrides(teacher_run))
    cfg = train.trained_config(r, teacher_run)
    student = dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, steps=2, guidance=1.0))
    cache = load_cache(teacher_run / "cache", train._buckets(r), train._counts(r))
    return DistillStage(r, student, tmp_path / "dit", cache, train._source(r), train.load_trained_vae(cfg, teacher_run),
                        resume=False, teacher_state=load_tensors(teacher_run / "model" / "dit.safetensors"),
                        guidance=guidance)


def test_student_steps_are_pairs_of_teacher_steps(teacher_run, tmp_path):
    stage = _stage(teacher_run, tmp_path, guidance=3.0)
    grid = sampling.schedule(4, 2.0)  # the teacher's 4 steps; the student takes every other time
    triples = {tuple(grid[k:k + 3].tolist()) for k in (0, 2)}
    path = stage.draw_times(64, 2.0)
    assert path.shape == (64, 3)
    assert {tuple(row) for row in path.tolist()} == triples  # both student steps drawn, nothing else


def test_target_lands_where_two_guided_sampler_steps_land(teacher_run, tmp_path):
    """One student step with the target velocity = the teacher's guided Euler sampler over the same two steps,
    given frames kept clean: what the student learns is exactly what sampling the teacher does."""
    stage = _stage(teacher_run, tmp_path, guidance=3.0)
    _, x0, _ = stage.next_batch()
    x0 = x0[:2]  # (2, C, T, h, w)
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(x0.shape, generator=gen)
    given = torch.zeros(2, x0.shape[2], dtype=torch.bool)
    given[0, 0] = True  # clip 0 starts on a given frame (image-to-video)
    path = stage.draw_times(2, 2.0)
    context, mask = stage.text(["a red circle moves left", "two blue squares"])
    x_t = flow.interpolate(x0, eps, torch.where(given, 0.0, path[:, :1]))
    target = stage.velocity_target(x0, eps, x_t, path, FrameCondition(x0, given), context, mask)

    for i in range(2):
        fn = sampling.guided(stage.teacher, context[i:i + 1], mask[i:i + 1], stage.uncond, stage.uncond_mask, 3.0)
        cond = FrameCondition(x0[i:i + 1], given[i:i + 1])
        teacher = sampling.sample(fn, x_t[i:i + 1], path[i], cond)
        student = x_t[i:i + 1] + (path[i, 2] - path[i, 0]) * target[i:i + 1]
        student = cond.apply(student)
        assert torch.allclose(student, teacher, atol=1e-5), (student - teacher).abs().max()
    assert (target[0, :, 0] == 0).all() and target[1].abs().mean() > 1e-3  # given frames: no motion asked


def test_distilled_model_samples_in_n_steps_without_cfg(teacher_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(teacher_run, run, ignore=shutil.ignore_patterns("dit", "model"))
    train.run(DEBUG, stage="dit", out=run, progress=False, overrides=_distill_overrides(teacher_run))
    train.export(run, run / "model")
    student, teacher = load_model(run / "model"), load_model(teacher_run / "model")
    assert dataclasses.asdict(student.cfg.sampler) == {**dataclasses.asdict(teacher.cfg.sampler), "steps": 2,
                                                       "guidance": 1.0, "method": "euler"}
    moved = [(student.dit.state_dict()[k] - v).abs().max() for k, v in teacher.dit.state_dict().items()]
    assert max(moved) > 0  # the student trained
    rows = [json.loads(line) for line in (run / "dit" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(r["loss"] > 0 for r in rows)

    batches = []
    student.dit.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    video = Pipeline(student).generate(Request("a red circle moves left", width=32, height=32, frames=5))
    assert batches == [1, 1] and torch.isfinite(video.latents).all()  # 2 steps, no unconditional pass


def test_a_student_can_start_from_another_model_of_the_teachers_shape(teacher_run, tmp_path):
    """[dit] student_init: e.g. an earlier student continues towards a better teacher, instead of starting over."""
    other = tmp_path / "other"
    shutil.copytree(teacher_run / "model", other)
    state = {k: v + 0.01 for k, v in load_tensors(other / "dit.safetensors").items()}
    save_file(state, str(other / "dit.safetensors"))
    r = recipe.load(DEBUG, _distill_overrides(teacher_run, student_init=str(other)))
    run = tmp_path / "run"
    shutil.copytree(teacher_run, run, ignore=shutil.ignore_patterns("dit", "model"))
    stage = train._dit_stage(r, train.dit_config(r, run), run, run / "dit", False, ONE_CPU)
    teacher = load_tensors(teacher_run / "model" / "dit.safetensors")
    assert all(torch.equal(stage.dit.state_dict()[k], v) for k, v in state.items())
    assert all(torch.equal(stage.teacher.state_dict()[k], v) for k, v in teacher.items())

    config = json.loads((other / "config.json").read_text())
    config["text"]["max_length"] += 8  # the text's padding is not part of the weights
    (other / "config.json").write_text(json.dumps(config))
    assert recipe.load(DEBUG, _distill_overrides(teacher_run, student_init=str(other))).dit.student_init == str(other)
    config["dit"]["num_layers"] += 1
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(KinemaError, match="student_init=.* has another DiT"):
        recipe.load(DEBUG, _distill_overrides(teacher_run, student_init=str(other)))
    with pytest.raises(KinemaError, match="set \\[dit\\] distill_steps"):
        recipe.load(DEBUG, {"model.init": str(teacher_run / "model"), "dit.student_init": str(teacher_run / "model")})


def test_distillation_needs_a_teacher():
    with pytest.raises(KinemaError, match="set \\[model\\] init"):
        recipe.load(DEBUG, {"dit.distill_steps": 4})


def test_the_committed_distill_recipe_halves_the_bundled_models_steps():
    r = recipe.load(Path(__file__).parents[1] / "configs" / "small_distill.toml")
    assert r.init == "default" and r.vae.steps == 0 and r.model.name == "kinema-small-fast"
    assert r.dit.distill_steps * 2 == r.model.sampler.steps and r.model.sampler.guidance > 1  # the teacher's
    weights = Path(__file__).parents[1] / "src" / "kinema" / "weights"
    teacher, student = (json.loads((weights / name / "config.json").read_text())["sampler"]
                        for name in ("small", "small-fast"))
    assert teacher.get("noise_drift", 0) == 0  # so the recipe is what gives a new student the default's drifting noise
    assert r.model.sampler.noise_drift == student["noise_drift"] > 0


def test_time_dit_steps_probes_either_stage_without_touching_the_run(teacher_run):
    """What scripts/offline_gpu/train_timeboxed.py divides its budget by, for training and for distillation."""
    before = sorted(p.relative_to(teacher_run) for p in teacher_run.rglob("*"))
    assert train.time_dit_steps(DEBUG, teacher_run, "cpu", steps=2, warmup=1) > 0
    assert train.time_dit_steps(DEBUG, teacher_run, "cpu", steps=2, warmup=1,
                                overrides=_distill_overrides(teacher_run)) > 0
    assert sorted(p.relative_to(teacher_run) for p in teacher_run.rglob("*")) == before
