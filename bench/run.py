"""Run `kinema bench` from a checkout (the same flags the CLI's `kinema bench` takes).

    python bench/run.py [--out bench/results] [--model SPEC] [--quick] [--sections dit,e2e,...] [--repeat N]

OMP_WAIT_POLICY=PASSIVE is set before torch is imported (see kinema.accel) unless the environment
already sets a policy; the `threads` section measures both in fresh processes either way.
"""

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kinema import bench  # noqa: E402  (torch must not be imported before the line above)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results", help="folder for bench.json and bench.md")
    parser.add_argument("--model", default=None, help="model folder or preset (default: the bundled model)")
    parser.add_argument("--quick", action="store_true", help="tiny debug shapes, one repetition")
    parser.add_argument("--sections", default=None, help=f"comma-separated subset of {','.join(bench.SECTIONS)}")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per timed call (default 5, quick 1)")
    args = parser.parse_args()
    results = bench.run(args.out, model=args.model, quick=args.quick, sections=args.sections, repeat=args.repeat,
                        log=print)
    print(f"wrote {args.out}/bench{'-quick' if args.quick else ''}.md in {results['meta']['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
