"""Data command line: ``python -m neuroimagen.data {stimuli,simulate,simulate-things,captions} --help``."""

from __future__ import annotations

import argparse
import sys
import time

from .simulate import add_simulate_arguments, run_simulate_cli
from .stimuli import make_stimulus_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuroimagen.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stimuli", help="render the OpenMoji stimulus set (40 classes x per-class images)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default: 64)")
    p.add_argument("--per-class", type=int, default=50, help="images per class (default: 50, as EEG-ImageNet)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the set is a function of it (default: 0)")

    add_simulate_arguments(sub.add_parser("simulate", help="simulate EEG-ImageNet-format EEG for a stimulus set"))

    from .things_sim import add_simulate_things_arguments

    add_simulate_things_arguments(sub.add_parser("simulate-things", help="simulate a THINGS-EEG2-layout data set "
                                                 "(17 channels, 100 Hz, a zero-shot split of OpenMoji concepts)"))

    from .image_captions import add_captions_arguments

    add_captions_arguments(sub.add_parser("captions", help="caption a folder of images with BLIP (the paper's "
                                          "detailed captions) into a JSON captions file"))

    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.command == "stimuli":
        recs = make_stimulus_set(args.out, size=args.size, per_class=args.per_class, seed=args.seed)
        print(f"wrote {len(recs)} stimuli to {args.out} in {time.perf_counter() - t0:.1f} s")
    elif args.command == "captions":
        from .image_captions import caption_images

        caps = caption_images(args.images, args.captioner, args.out, batch_size=args.batch_size,
                              max_new_tokens=args.max_new_tokens, num_beams=args.num_beams, device=args.device,
                              log=print)
        print(f"wrote {len(caps)} captions to {args.out} in {time.perf_counter() - t0:.1f} s")
    elif args.command == "simulate-things":
        from .things_sim import run_simulate_things_cli

        print(run_simulate_things_cli(args))
        print(f"simulated in {time.perf_counter() - t0:.1f} s")
    else:
        run_simulate_cli(args)
        print(f"simulated in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
