"""`kinema bench`: how fast Kinema runs here, written to bench/results as JSON and a Markdown table.

    run(out_dir="bench/results", model=None, quick=False, sections=None) -> results dict

Sections (all by default, in this order):
    threads  one DiT step under thread settings, each in a fresh process (wait policy, thread count)
    dit      Kinema's DiT against diffusers' WanTransformer3DModel: fp32/bf16, per-frame/scalar t
    e2e      the pipeline, prompt to MP4: s per s of video, frames/s, each stage's share; as shipped and
             with and without the step cache (--cache), with PSNR against as shipped
    vae      VAE encode/decode frames/s at 128x128
    memory   peak RSS of 5, 20 and 60 s generations, each in a fresh process
    train    DiT training tokens/s and FLOPs utilisation against the matmul peak measured in the run
    cache    latent cache building, clips/s: world renders encoded by the model's VAE, rendered ahead by workers
    gpu      dit, e2e, vae, memory, train and cache on CUDA plus a Wan2.1-1.3B-shaped step ("skipped: no GPU"
             without one)
`quick` uses tiny debug shapes and one repetition, for tests. The measurement code lives in
kinema.bench_sections and kinema.bench_system.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

import torch

from kinema import accel
from kinema.bench_sections import Setup, dit_section, e2e_section, round_floats, vae_section
from kinema.bench_system import cache_section, gpu_section, memory_section, threads_section, train_section
from kinema.checkpoint import atomic_write, locate_model
from kinema.errors import KinemaError

SECTIONS: dict[str, Callable[[Setup], dict]] = {
    "threads": threads_section, "dit": dit_section, "e2e": e2e_section, "vae": vae_section,
    "memory": memory_section, "train": train_section, "cache": cache_section, "gpu": gpu_section,
}


def run(out_dir: str | Path = "bench/results", model: str | None = None, quick: bool = False,
        sections: Iterable[str] | None = None, repeat: int | None = None,
        log: Callable[[str], None] | None = None) -> dict:
    """Run the chosen sections, write `bench.json` + `bench.md` (`bench-quick.*` in quick mode) to
    `out_dir`, and return the results. The files are rewritten after every section (meta.complete
    says whether all ran), so an interrupted run keeps what it measured; the sections this run does not
    measure are kept from the files' last run, each with its own date. `repeat` sets the repetitions of
    each timed call (default 5, quick 1; whole generations run twice from 3 up, else once). `log` gets a
    line per section."""
    names = _check_sections(sections)
    if repeat is not None and repeat < 1:
        raise KinemaError(f"repeat must be at least 1, got {repeat}")
    if quick and model is not None:
        raise KinemaError("--quick measures the tiny debug model at debug shapes; leave out --model or --quick")
    if model is not None:
        locate_model(model)  # a typo fails now, not after minutes of other sections (or never, if none loads it)
    stem, out = "bench-quick" if quick else "bench", Path(out_dir)
    earlier = _earlier_sections(out / f"{stem}.json", names)  # read (and the folder checked) before any work
    setup = Setup(model, quick, repeat=repeat)
    meta = _machine(quick) | {"threads_config": accel.configure_threads(), "model_arg": model, "repeat": setup.reps,
                             "complete": False, "kept_from_earlier_runs": sorted(earlier)}
    results: dict = {"meta": meta, **earlier}
    start = time.perf_counter()
    for name in names:
        began, load_before = time.perf_counter(), os.getloadavg()[0]
        section = SECTIONS[name](setup)
        section["seconds"] = time.perf_counter() - began
        section["load_1min"] = [load_before, os.getloadavg()[0]]
        section["date"] = meta["date"]
        results[name] = section
        meta["wall_s"] = time.perf_counter() - start
        meta["complete"] = name == names[-1]
        write(round_floats(results), out, stem)
        if log:
            log(f"{name}: {section['seconds']:.0f} s")
    return round_floats(results)


def _check_sections(sections: Iterable[str] | None) -> list[str]:
    if sections is None:
        return list(SECTIONS)
    given = sections.split(",") if isinstance(sections, str) else sections
    names = list(dict.fromkeys(s.strip() for s in given if s.strip()))  # each once, in the order first given
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise KinemaError(f"unknown bench section {unknown[0] if unknown else '(none given)'!r}; "
                          f"choose from {', '.join(SECTIONS)}")
    return names


def _earlier_sections(path: Path, names: list[str]) -> dict:
    """The sections of the results file at `path` that this run will not measure (none if it is missing or
    unreadable); checks first that its folder can be written, so a bad --out fails before any work."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".probe-"):
            pass
    except OSError as err:
        raise KinemaError(f"cannot write bench results in {path.parent} ({err.strerror or err}); choose another "
                          "--out") from None
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {name: section for name, section in earlier.items() if name in SECTIONS and name not in names
            and isinstance(section, dict)}


def _machine(quick: bool) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "quick": quick, "cpu": cpu,
            "physical_cores": accel.physical_cores(), "torch": torch.__version__, "kinema": str(Path(__file__).parent),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (spin)"),
            "load_1min_at_start": os.getloadavg()[0]}


def write(results: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """`<stem>.json` (everything) and `<stem>.md` (a table per section), each written atomically."""
    paths = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    try:
        with atomic_write(paths[0]) as tmp:
            tmp.write_text(json.dumps(results, indent=1) + "\n")
        with atomic_write(paths[1]) as tmp:
            tmp.write_text(markdown(results))
    except OSError as err:
        raise KinemaError(f"cannot write bench results in {out_dir} ({err.strerror or err}); free some space or "
                          "choose another --out") from None
    return paths


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = ["# kinema bench", "", f"{meta['date']} · {meta['cpu']} · {meta['physical_cores']} cores · "
             f"torch {meta['torch']} · threads {meta['threads_config']['threads']} · OMP_WAIT_POLICY "
             f"{meta['omp_wait_policy']} · load (1 min) at start {meta['load_1min_at_start']}"
             f"{' · QUICK (debug shapes)' if meta['quick'] else ''}", ""]
    if not meta["complete"]:
        lines += ["**Incomplete:** this run stopped before measuring every section it was asked for.", ""]
    if meta.get("kept_from_earlier_runs"):
        lines += [f"Kept from earlier runs (each dated below): {', '.join(meta['kept_from_earlier_runs'])}.", ""]
    for name in SECTIONS:
        if name in results:
            lines += _section_md(name, results[name])
    return "\n".join(lines) + "\n"


def _section_md(name: str, section: dict) -> list[str]:
    load = section.get("load_1min", [None, None])
    lines = [f"## {name}", "", *(f"- {note}" for note in section["notes"] if note),
             f"- took {_cell(section.get('seconds'))} s; load (1 min) {load[0]} -> {load[1]}"
             + (f"; measured {section['date']}" if "date" in section else ""), ""]
    rows = section["rows"]
    if rows:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
        lines.append("")
    return lines


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "/")
