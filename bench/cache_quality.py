"""What the step cache costs in quality: judge scores and DiT evaluations per cache threshold.

    python bench/cache_quality.py [--model SPEC] [--prompts 8] [--thresholds 0,0.1,0.2,0.3] [--seed 1]

Generates each of `--prompts` training-distribution captions (kinema.world) at every threshold with the
same seed, judges every video (kinema.judge), and writes bench/results/cache_quality.{json,md}: per
threshold the judge's mean scores, the share of DiT evaluations skipped, wall and CPU seconds.
"""

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kinema import judge, world  # noqa: E402  (torch must not be imported before the line above)
from kinema.bench_sections import count_calls, load, round_floats  # noqa: E402
from kinema.checkpoint import atomic_write  # noqa: E402
from kinema.pipeline import Pipeline, Request  # noqa: E402

COLUMNS = ("threshold", "dit_calls", "wall_s", "cpu_s", "judge_failed", "overall", *judge.ATTRIBUTES, "flicker",
           "sharpness")


def measure(pipe: Pipeline, prompts: list[str], threshold: float, seed: int) -> dict:
    scores, failed, wall, cpu = [], 0, time.perf_counter(), time.process_time()
    with count_calls(pipe.model.dit) as calls:
        for prompt in prompts:
            video = pipe.generate(Request(prompt, seconds=2, seed=seed, expand=False, cache=threshold))
            try:
                scores.append(judge.judge(prompt, pipe.decode(video), video.fps))
            except ZeroDivisionError:  # judge_measure's sharpness on a video without edges (reported)
                failed += 1
    return {"threshold": threshold, "dit_calls": calls[0], "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu, "judge_failed": failed, **judge.score_many(scores)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder or preset (default: the bundled model)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--thresholds", default="0,0.1,0.2,0.3")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    loaded, note = load(args.model, quick=False)
    pipe = Pipeline(loaded, device="cpu")
    prompts = [caption for caption, _ in world.train_prompts(args.prompts, args.seed)]
    rows = [measure(pipe, prompts, float(t), args.seed) for t in args.thresholds.split(",")]
    results = round_floats({"model": note, "prompts": prompts, "rows": rows})
    with atomic_write(f"{args.out}/cache_quality.json") as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n")
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    table += ["| " + " | ".join(f"{row.get(c)}" for c in COLUMNS) + " |" for row in results["rows"]]
    with atomic_write(f"{args.out}/cache_quality.md") as tmp:
        tmp.write_text(f"# Step cache: quality per threshold\n\n{note}; {len(prompts)} world captions, 2 s at the "
                       f"model's default size and steps, seed {args.seed}; judge scores are means (1 = all right)"
                       "\n\n" + "\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
