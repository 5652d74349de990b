"""`kinema bench` in quick mode: every section runs, results are complete and written as JSON + Markdown."""

import json
import warnings

import pytest
import torch

from kinema import bench, bench_sections, bench_system
from kinema.errors import KinemaError


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    with warnings.catch_warnings():  # a bench prints its tables, not library warnings (diffusers' under bf16)
        warnings.simplefilter("error", UserWarning)
        return out, bench.run(out, quick=True, sections=["dit", "e2e", "vae", "train", "cache", "gpu"])


def test_quick_run_writes_json_and_markdown(quick):
    out, results = quick
    assert json.loads((out / "bench-quick.json").read_text()) == results
    md = (out / "bench-quick.md").read_text()
    for name in ("dit", "e2e", "vae", "train", "cache", "gpu"):
        assert f"## {name}" in md
    assert "| precision | t | kinema_ms |" in md
    assert results["meta"]["quick"] and results["meta"]["threads_config"]["threads"] >= 1


def test_dit_section_compares_with_diffusers(quick):
    rows = quick[1]["dit"]["rows"]
    expected = {(p, t) for p in ("fp32", "bf16") for t in ("per-frame", "scalar")}
    assert {(r["precision"], r["t"]) for r in rows} == expected
    assert all(r["speedup"] > 0 and r["kinema_ms"] > 0 for r in rows)
    parity = next(n for n in quick[1]["dit"]["notes"] if n.startswith("max |kinema - diffusers|"))
    assert float(parity.rsplit(" ", 1)[1]) < 1e-4


def test_e2e_section_reports_stages_and_speedups(quick):
    rows = {r["variant"]: r for r in quick[1]["e2e"]["rows"]}
    shipped = rows["as shipped"]
    shares = sum(v for k, v in shipped.items() if k.endswith("_share"))
    assert shares == pytest.approx(1.0, abs=0.01)
    assert shipped["psnr_db"] == "inf" and shipped["dit_calls"] == 2  # 2 quick steps, one CFG batch each
    cached = rows["step cache 0.1 (--cache)"]
    assert cached["dit_calls"] in (1, 2)
    assert (cached["psnr_db"] == "inf") == (cached["dit_calls"] == 2)  # a skipped call changes the video
    assert shipped["frames_per_s"] > 0 and shipped["s_per_video_s"] > 0 and shipped["cpu_s"] > 0
    for move in ("pan", "zoom"):
        moved = rows[f"a camera {move} (window_camera)"]
        assert moved["dit_calls"] == 2 and moved["psnr_db"] is None and moved["wall_s"] > 0
    edited = rows["video to video (FlowEdit)"]  # the prompt's pass and the clip's each step
    assert edited["dit_calls"] == 4 and edited["psnr_db"] is None and edited["denoise_share"] > 0  # timed as sampling


def hide_pyav(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else find_spec(name, *a))


def test_e2e_without_pyav_times_decoding_only(monkeypatch):
    """A bare GPU host has no PyAV: the e2e row still comes, without the MP4 stage, and says so."""
    hide_pyav(monkeypatch)
    result = bench_sections.e2e_section(bench_sections.Setup(model=None, quick=True))
    shipped = result["rows"][0]
    assert shipped["mp4_share"] == 0 and shipped["decode_share"] > 0 and shipped["dit_calls"] == 2
    assert any(note.startswith("no MP4 written: PyAV") for note in result["notes"])


def test_memory_probe_without_pyav_decodes_instead(monkeypatch):
    """The gpu section's memory rows on a host without PyAV: the video is decoded, not written."""
    from kinema import bench_system
    from kinema.pipeline import Pipeline

    hide_pyav(monkeypatch)
    monkeypatch.setattr(Pipeline, "save", lambda *a, **k: pytest.fail("wrote an MP4 without PyAV"))
    row = bench_system._memory_probe(None, quick=True, seconds=1.0, steps=1, device="cpu")
    assert row["frames"] == 8 and row["peak_rss_mb"] >= row["rss_after_load_mb"] > 0 and row["load_s"] > 0
    assert "peak_gpu_memory_mb" not in row  # only on CUDA


def test_train_and_gpu_sections(quick):
    train = quick[1]["train"]["rows"][0]
    assert train["tokens_per_s"] > 0 and 0 < train["mfu_vs_bf16_peak"] < 1
    gpu = quick[1]["gpu"]
    assert gpu["rows"] or gpu["notes"] == ["skipped: no GPU"]


def test_cache_section_builds_with_and_without_workers(quick):
    rows = quick[1]["cache"]["rows"]
    assert [row["workers"] for row in rows][0] == 0 and len(rows) == 2 and rows[1]["workers"] >= 1
    assert all(row["clips"] == 8 and row["clip"] == "5x32x32" and row["clips_per_s"] > 0 for row in rows)


def test_wan_step_runs_on_cpu_at_debug_size():
    row = bench_system.wan_step("cpu", quick=True)
    assert row["step_s"] > 0 and row["tokens"] == 2 * 2 * 3


@pytest.mark.slow
def test_subprocess_sections(tmp_path):
    results = bench.run(tmp_path, quick=True, sections="threads,memory")
    assert all(r["dit_step_s"] > 0 and r["error"] is None for r in results["threads"]["rows"])
    memory = results["memory"]["rows"][0]
    assert memory["peak_rss_mb"] >= memory["rss_after_load_mb"] > 0 and memory["frames"] == 8


@pytest.mark.parametrize("sections", ["dit,nope", [], " "])
def test_unknown_sections_raise(sections, tmp_path):
    with pytest.raises(KinemaError, match="bench section"):
        bench.run(tmp_path, quick=True, sections=sections)


def test_a_run_of_some_sections_keeps_the_others(quick, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "bench-quick.json").write_text((quick[0] / "bench-quick.json").read_text())
    again = bench.run(out, quick=True, sections="vae,vae")  # each section once
    assert again["meta"]["complete"] and again["meta"]["kept_from_earlier_runs"] == ["cache", "dit", "e2e", "gpu",
                                                                                     "train"]
    assert again["dit"] == quick[1]["dit"] and again["vae"] != quick[1]["vae"]  # the others as they were
    md = (out / "bench-quick.md").read_text()
    assert md.count("## vae") == 1 and "## dit" in md and f"measured {again['meta']['date']}" in md
    assert "Kept from earlier runs (each dated below): cache, dit, e2e, gpu, train." in md


def test_bad_bench_options_fail_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(KinemaError, match="cannot write bench results in .*file.*; choose another --out"):
        bench.run(tmp_path / "file" / "results", quick=True, sections="vae")
    with pytest.raises(KinemaError, match="--quick measures the tiny debug model"):
        bench.run(tmp_path, quick=True, model="kinema-small", sections="vae")
    with pytest.raises(KinemaError, match="model folder md/nosuch not found"):
        bench.run(tmp_path, model="md/nosuch", sections="threads")
    assert not list(tmp_path.glob("bench*"))


def test_time_alternating_interleaves_and_takes_medians():
    order = []
    times = bench_sections.time_alternating({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 3)
    assert order == ["a", "b"] * 4 and set(times) == {"a", "b"}


def test_stage_clock_restores_the_pipeline(debug_pipe, tmp_path):
    from kinema.pipeline import Request

    methods = (debug_pipe.encode_text, debug_pipe.denoise, debug_pipe.model.vae.decode_stream)
    stages, video = bench_sections.timed_generation(debug_pipe, Request("a ball", frames=5, steps=1),
                                                    tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").stat().st_size > 0 and video.frames == 5
    assert stages["denoise"] > 0 and stages["decode"] > 0 and stages["total"] >= stages["denoise"]
    assert (debug_pipe.encode_text, debug_pipe.denoise, debug_pipe.model.vae.decode_stream) == methods
    assert "encode_text" not in vars(debug_pipe)


def test_randomize_only_fills_zero_parameters():
    linear = torch.nn.Linear(4, 3)
    torch.nn.init.zeros_(linear.bias)
    weight = linear.weight.detach().clone()
    bench_sections.randomize(linear)
    assert torch.equal(linear.weight, weight) and linear.bias.abs().sum() > 0


def test_round_floats_makes_json_safe():
    values = {"a": [1.23456789, float("inf"), float("nan")], "b": "x"}
    assert bench_sections.round_floats(values) == {"a": [1.235, "inf", None], "b": "x"}
