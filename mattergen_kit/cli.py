"""``mattergen-kit``: the command line.

    mattergen-kit generate --num 16 --out out/demo --seed 0 [--steps K] [--model PATH]
    mattergen-kit train --config configs/bundled_cpu.yaml
    mattergen-kit evaluate DIR --out OUT [--no-relax] [--reference NAME]
    mattergen-kit fetch-data mp20 [--root DIR]
    mattergen-kit info
"""

from __future__ import annotations

import argparse
import sys
import time


def _generate(argv: list[str]) -> int:
    from mattergen_kit.generation import BUNDLED_CHECKPOINT, load_model, write_samples

    p = argparse.ArgumentParser(prog="mattergen-kit generate",
                                description="Generate crystals and write one CIF each, summary.csv and grid.png.")
    p.add_argument("--num", type=int, default=16, help="number of crystals (default 16)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same crystals)")
    p.add_argument("--steps", type=int, default=None,
                   help="predictor-corrector steps (default: the model's recommended CPU setting; 1000 = reference)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", default=None, help=f"checkpoint path (default: the bundled {BUNDLED_CHECKPOINT.name})")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--elements", default=None, help="restrict elements, e.g. 'Li,Fe,P,O'")
    p.add_argument("--no-picture", action="store_true", help="skip grid.png")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; use 1 when other jobs share the cores)")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        model = load_model(args.model, device=args.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    steps = args.steps if args.steps is not None else int(model.meta.get("recommended_steps", 1000))
    allowed = [e.strip() for e in args.elements.split(",")] if args.elements else None
    print(f"generating {args.num} crystals with {model.path.name} ({steps} steps, seed {args.seed})")
    start = time.perf_counter()
    try:
        structures = model.generate(args.num, seed=args.seed, steps=steps, batch_size=args.batch_size,
                                    allowed_elements=allowed)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    written = write_samples(structures, args.out, picture=not args.no_picture)
    print(f"wrote {len(written['cifs'])} CIFs, {written['summary'].name}"
          + (f" and {written['picture'].name}" if "picture" in written else "") + f" to {args.out} "
          f"in {seconds:.1f} s ({args.num / seconds:.2f} crystals/s)")
    return 0


def _fetch_data(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mattergen-kit fetch-data",
                                description="Download a dataset and verify it against its published fingerprint.")
    p.add_argument("name", choices=["mp20"], help="mp20: CDVAE's MP-20 CSVs (train/val/test)")
    p.add_argument("--root", default=None, help="destination folder (default: datasets/mp20 in the data root)")
    p.add_argument("--base-url", default=None, help="mirror to download from")
    args = p.parse_args(argv)
    from mattergen_kit.datasets import DataIntegrityError, fetch_mp20

    try:
        paths = fetch_mp20(root=args.root, base_url=args.base_url)
    except (OSError, ValueError, DataIntegrityError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split, path in paths.items():
        print(f"verified MP-20 {split}: {path}")
    return 0


def _info(argv: list[str]) -> int:
    import mattergen_kit
    from mattergen_kit.generation import BUNDLED_CHECKPOINT

    print(f"mattergen_kit {mattergen_kit.__version__}")
    print(f"bundled model: {BUNDLED_CHECKPOINT} ({'present' if BUNDLED_CHECKPOINT.is_file() else 'missing'})")
    from mattergen_kit.datasets import data_root

    print(f"data root: {data_root()}")
    return 0


COMMANDS = {
    "generate": _generate,
    "train": lambda argv: __import__("mattergen_kit.training.fit", fromlist=["train_cli"]).train_cli(argv),
    "evaluate": lambda argv: __import__("mattergen_kit.evaluation", fromlist=["evaluate_cli"]).evaluate_cli(argv),
    "fetch-data": _fetch_data,
    "info": _info,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return int(COMMANDS[command](rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
