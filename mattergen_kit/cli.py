"""``mattergen-kit``: the command line.

    mattergen-kit generate --num 16 --out out/demo --seed 0 [--steps K] [--model PATH]
    mattergen-kit train --config configs/bundled_cpu.yaml
    mattergen-kit finetune --base bundled --table my.csv --property my_prop [--kind scalar|categorical]
    mattergen-kit evaluate DIR --out OUT [--no-relax] [--reference NAME]
    mattergen-kit fetch-data mp20 [--root DIR]
    mattergen-kit fetch-data sources [--from DIR]
    mattergen-kit fetch-model NAME [--dest DIR]      (MatterGen's released models; then --model mattergen:NAME)
    mattergen-kit info
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path


def _fail(message: str, code: int = 2) -> int:
    """Print a one-line error to stderr and return the exit code."""
    print(f"error: {message}", file=sys.stderr)
    return code


def _check_device(device: str) -> str | None:
    """Why ``device`` cannot be used here (None when it can)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a device name (use cpu or cuda)"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: CUDA is not available on this machine (use --device cpu)"
    if dev.type not in ("cpu", "cuda"):
        return f"--device {device}: only cpu and cuda are supported"
    return None


def _generate(argv: list[str]) -> int:
    from mattergen_kit.generation import BUNDLED_CHECKPOINT

    p = argparse.ArgumentParser(prog="mattergen-kit generate",
                                description="Generate crystals into a folder: one CIF each (written batch by batch), "
                                            "generated_crystals.extxyz, generated_crystals_cif.zip, summary.csv, "
                                            "grid.png and manifest.json.")
    p.add_argument("--num", type=int, default=16, help="number of crystals (default 16)")
    p.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite or --resume)")
    p.add_argument("--overwrite", action="store_true", help="clear a non-empty output folder first")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in --out (same settings); finished batches are kept")
    p.add_argument("--seed", type=int, default=None, help="random seed, 0 <= seed < 2**63 (same seed, same crystals)")
    p.add_argument("--steps", type=int, default=None,
                   help="predictor-corrector steps, >= 2 (default: the model's recommended CPU setting; "
                        "1000 = reference)")
    p.add_argument("--sampler", choices=("fast", "reference"), default=None,
                   help="fast: the few-step sampler (100 steps, 200 network calls per crystal, twice that with "
                        "guidance); reference: MatterGen's predictor-corrector sampler (default: fast without --steps, "
                        "else reference: --steps 1000 alone is the reference sampler exactly)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", default=None, help=f"checkpoint path (default: the bundled {BUNDLED_CHECKPOINT.name})")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--elements", default=None, help="restrict elements, e.g. 'Li,Fe,P,O'")
    p.add_argument("--condition", action="append", default=[], metavar="NAME=VALUE",
                   help="condition on a property, repeatable: band_gap=3.0, space_group=225, chemical_system=Li-Fe-P-O, "
                        "... (needs a conditioned model; without --model the conditioned bundled model is used)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale γ >= 0 (default 2.0 with --condition, MatterGen's advice; 0 = "
                        "unconditional)")
    p.add_argument("--enforce-symmetry", action="store_true",
                   help="with --condition space_group=N: keep every crystal exactly in space group N (a Wyckoff "
                        "template of N from the bundled train split per crystal; elements, lattice and free "
                        "coordinates generated)")
    p.add_argument("--remask-rate", type=float, default=None,
                   help="re-draw early atom-type reveals at this rate (ReMDM-style; default 0 = MatterGen's sampler; "
                        "measured in checkpoints/MODEL_CARD.md)")
    p.add_argument("--formula", default=None, help="fixed formula for every crystal, taken as written (e.g. Li4Fe4P4O16)")
    p.add_argument("--num-atoms", type=int, default=None, help="fixed number of atoms for every crystal")
    p.add_argument("--no-picture", action="store_true", help="skip grid.png")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: 1, the fastest on a shared or small machine)")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="sample one batch per task on a Dask distributed cluster, e.g. tcp://10.0.0.5:8786 (same "
                        "crystals and folder as a local run with the same --seed and --batch-size; "
                        "mattergen_kit/cluster.py)")
    args = p.parse_args(argv)
    problem = _generate_argument_problem(args)
    if problem:
        return _fail(problem)
    from mattergen_kit.outputs import OutputError, check_out_dir

    try:
        check_out_dir(args.out, overwrite=args.overwrite, resume=args.resume)
    except OutputError as err:
        return _fail(str(err))
    return _run_generation(args)


def _generate_argument_problem(args) -> str | None:
    """The first user mistake in the generate arguments (checked before loading anything), or None."""
    from mattergen_kit.mattergen_models import is_mattergen_reference  # also registers them with load_model
    from mattergen_kit.sampling.request import MAX_REQUEST_ATOMS, resolve_guidance_scale

    if args.num < 1:
        return f"--num must be at least 1, got {args.num}"
    if args.steps is not None and args.steps < 2:
        return f"--steps must be at least 2, got {args.steps}"
    if args.batch_size < 1:
        return f"--batch-size must be at least 1, got {args.batch_size}"
    if args.threads is not None and args.threads < 1:
        return f"--threads must be at least 1, got {args.threads}"
    if args.seed is not None and not 0 <= args.seed < 2**63:
        return f"--seed must be between 0 and 2**63 - 1, got {args.seed}"
    if args.model is not None and not Path(args.model).is_file() and not is_mattergen_reference(args.model):
        return f"--model {args.model}: no such checkpoint file"
    try:
        args.conditions = parse_conditions(args.condition)
    except ValueError as err:
        return str(err)
    try:  # the request's γ rule (sampling/request.py), checked before a model is loaded
        resolve_guidance_scale(args.guidance, args.conditions)
    except (TypeError, ValueError):
        return f"--guidance must be >= 0 and finite (0 = unconditional), got {args.guidance}"
    if args.remask_rate is not None and not args.remask_rate >= 0:
        return f"--remask-rate must be >= 0, got {args.remask_rate}"
    if args.num_atoms is not None and not 1 <= args.num_atoms <= MAX_REQUEST_ATOMS:
        return f"--num-atoms must be between 1 and {MAX_REQUEST_ATOMS}, got {args.num_atoms}"
    if args.dask_scheduler is not None and not args.dask_scheduler.strip():
        return "--dask-scheduler needs an address, e.g. tcp://10.0.0.5:8786 (leave it out to sample here)"
    if args.elements is not None:
        from mattergen_kit.generation import check_allowed_elements

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                check_allowed_elements([e for e in args.elements.split(",") if e.strip()])
        except ValueError as err:
            return f"--elements {args.elements}: {err}"
    return _check_device(args.device)


def parse_conditions(items: list[str]) -> dict:
    """``["band_gap=3.0", "space_group=225", "chemical_system=Li-O"]`` → {name: int | float | str}."""
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name or not text:
            raise ValueError(f"--condition expects NAME=VALUE, got {item!r}")
        if name in out:
            raise ValueError(f"--condition {name} is given twice")
        for cast in (int, float):
            try:
                out[name] = cast(text)
                break
            except ValueError:
                continue
        else:
            out[name] = text
    return out


def _run_generation(args) -> int:
    from mattergen_kit.generation import default_checkpoint, load_model
    from mattergen_kit.outputs import OutputError, generate_to_folder
    from mattergen_kit.sampling.request import DEFAULT_THREADS, SamplingRequest

    conditions = getattr(args, "conditions", None) or {}
    if args.enforce_symmetry and "space_group" not in conditions:
        return _fail("--enforce-symmetry needs --condition space_group=N (the space group to keep)")
    if "space_group" in conditions and not args.enforce_symmetry:
        print("note: guidance alone puts few crystals exactly in the space group (bundled model: 0-9 % of 256 at "
              "gamma 2, benchmarks/results/conditioning/summary.md); add --enforce-symmetry to keep every crystal in "
              "it (Wyckoff templates: 56-100 % hit the group exactly, the rest a supergroup)", file=sys.stderr)
    request = SamplingRequest(
        args.num, seed=args.seed, steps=args.steps, batch_size=args.batch_size, conditions=conditions or None,
        guidance_scale=args.guidance, formula=args.formula, num_atoms=args.num_atoms,
        allowed_elements=[e.strip() for e in args.elements.split(",") if e.strip()] if args.elements else None,
        remask_rate=args.remask_rate, enforce_symmetry=bool(args.enforce_symmetry),
        threads=args.threads or DEFAULT_THREADS, sampler=args.sampler)
    try:
        model = load_model(args.model or default_checkpoint(request), device=args.device)
    except (FileNotFoundError, ValueError) as err:
        return _fail(str(err))
    try:  # the whole request against the model, before anything is written (resolved again in the run: cheap)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resolved = request.resolve(model)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    except (ValueError, TypeError) as err:
        return _fail(str(err))
    steps = resolved.steps
    sampled = [0]

    def on_batch(start, stop, num):
        sampled[0] += stop - start
        print(f"  wrote crystals {start}..{stop - 1} of {num}", flush=True)

    print(f"generating {args.num} crystals with {model.path.name} ({resolved.request.sampler} sampler, {steps} steps, "
          f"seed "
          f"{'random' if args.seed is None else args.seed}, {args.batch_size} per batch) into {args.out}", flush=True)
    start = time.perf_counter()
    try:
        if args.dask_scheduler:  # one batch per Dask task; the same folder as a local run
            from mattergen_kit.cluster import generate_on_cluster

            written = generate_on_cluster(args.dask_scheduler, args.out, request, model=model.path,
                                          overwrite=args.overwrite, resume=args.resume, picture=not args.no_picture,
                                          on_batch=on_batch)
        else:
            with warnings.catch_warnings():  # the request's warnings were printed above, once
                warnings.simplefilter("ignore", UserWarning)
                written = generate_to_folder(model, args.out, request, overwrite=args.overwrite, resume=args.resume,
                                             picture=not args.no_picture, on_batch=on_batch)
    except KeyboardInterrupt:
        from mattergen_kit.outputs import RunManifest

        try:
            done = sum(len(v) for v in RunManifest.load(Path(args.out)).batches.values())
        except OutputError:
            done = 0
        print(f"interrupted: kept {done} finished crystal(s) of {args.num} in {args.out} (CIFs and manifest.json); "
              f"run the same command with --resume to finish", file=sys.stderr)
        return 130
    except (OutputError, ValueError, TypeError, RuntimeError, ConnectionError) as err:
        return _fail(str(err))
    except OSError as err:  # a full disk, a folder made read-only during the run: the finished batches are kept
        return _fail(f"cannot write the run in {args.out} ({err.strerror or err}); free space or fix the folder, "
                     "then rerun with --resume to continue where it stopped")
    seconds = time.perf_counter() - start
    print(f"wrote {len(written['cifs'])} CIFs, summary.csv, {written['extxyz'].name}, {written['cif_zip'].name}"
          + (" and grid.png" if "picture" in written else "") + f" to {args.out} (seed {written['seed']}) "
          f"in {seconds:.1f} s ({sampled[0] / seconds:.2f} crystals/s sampled)")
    if written.get("rejected"):  # failed the kit's validity check: not written as crystals (outputs.crystal_cif)
        from mattergen_kit.outputs import rejected_message

        print(rejected_message(written["rejected"], args.num), file=sys.stderr)
    return 0


def _fetch_data(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mattergen-kit fetch-data",
                                description="Download a dataset and verify it against its published fingerprint.")
    p.add_argument("name", choices=["mp20", "sources"],
                   help="mp20: CDVAE's MP-20 CSVs (train/val/test); sources: the raw CSVs the bundled sets are built "
                        "from (MP-20 binary/ternary and MPTS-52 val/test, 8 MB; needed to rebuild the bundled set, "
                        "for load_bundled(max_atoms=52) and calibrate)")
    p.add_argument("--root", default=None, help="mp20: destination folder (default: datasets/mp20 in the data root)")
    p.add_argument("--base-url", default=None, help="mp20: mirror to download from")
    p.add_argument("--from", dest="from_dir", default=None,
                   help="sources: copy from this folder (same layout, e.g. ../shared/data) instead of downloading")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="give up when the whole download has not finished after this many seconds (default 600)")
    p.add_argument("--idle-timeout", type=float, default=30.0,
                   help="give up when the mirror sends no byte for this many seconds (default 30)")
    args = p.parse_args(argv)
    if not args.timeout > 0:
        return _fail(f"--timeout must be > 0 seconds, got {args.timeout}")
    if not args.idle_timeout > 0:
        return _fail(f"--idle-timeout must be > 0 seconds, got {args.idle_timeout}")
    from mattergen_kit.datasets import DataIntegrityError, fetch_mp20

    if args.name == "sources":
        if args.root is not None or args.base_url is not None:
            return _fail("--root and --base-url are for mp20; sources go to the data folder (use --from DIR to copy)")
        from mattergen_kit.data.sources import fetch_sources

        try:
            fetch_sources(args.from_dir, timeout=min(args.idle_timeout, args.timeout), total_timeout=args.timeout)
        except (OSError, ValueError, DataIntegrityError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print("source files in place and verified")
        return 0
    if args.from_dir is not None:
        return _fail("--from is for `fetch-data sources`")
    try:
        paths = fetch_mp20(root=args.root, base_url=args.base_url, timeout=min(args.idle_timeout, args.timeout),
                           total_timeout=args.timeout)
    except (OSError, ValueError, DataIntegrityError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for split, path in paths.items():
        print(f"verified MP-20 {split}: {path}")
    return 0


def _info(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="mattergen-kit info",
                            description="Print the version, the bundled models and the data root.").parse_args(argv)
    from mattergen_kit.constants import VERSION
    from mattergen_kit.generation import BUNDLED_CHECKPOINT, BUNDLED_CONDITIONED_CHECKPOINT

    print(f"mattergen_kit {VERSION}")
    print(f"bundled model: {BUNDLED_CHECKPOINT} ({'present' if BUNDLED_CHECKPOINT.is_file() else 'missing'})")
    built = BUNDLED_CONDITIONED_CHECKPOINT.is_file()
    print(f"conditioned bundled model: {BUNDLED_CONDITIONED_CHECKPOINT} "
          f"({'present' if built else 'not built: python tools/build_conditioned_model.py'})")
    from mattergen_kit.data.paths import SOURCE_FILES, missing_sources
    from mattergen_kit.datasets import data_root

    print(f"data root: {data_root()}")
    missing = missing_sources()
    print(f"source CSVs (rebuilds, max_atoms=52, calibrate): "
          + (f"{len(SOURCE_FILES) - len(missing)} of {len(SOURCE_FILES)} fetched; `mattergen-kit fetch-data sources`"
             if missing else "all fetched"))
    return 0


def _train(argv: list[str]) -> int:
    """``mattergen-kit train``: the training CLI, with unreadable checkpoints reported in one line."""
    import pickle

    from mattergen_kit.data.paths import DataIntegrityError
    from mattergen_kit.model.checkpoint import CheckpointError
    from mattergen_kit.training.fit import train_cli

    try:
        return train_cli(argv)
    except CheckpointError as err:
        return _fail(str(err))
    except (FileNotFoundError, ValueError, DataIntegrityError) as err:  # the training data: missing, empty, corrupt
        return _fail(str(err))
    except (EOFError, pickle.UnpicklingError, RuntimeError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, RuntimeError) and not any(k in text for k in ("PytorchStreamReader", "zip archive",
                                                                          "unpickl", "checkpoint")):
            raise
        return _fail(f"a checkpoint could not be read ({text}); if it is <run_dir>/checkpoints/last.ckpt of an "
                     "interrupted run, it is truncated: delete it to start again from the last good state")


COMMANDS = {
    "generate": _generate,
    "train": _train,
    "evaluate": lambda argv: __import__("mattergen_kit.evaluation", fromlist=["evaluate_cli"]).evaluate_cli(argv),
    "fetch-data": _fetch_data,
    "fetch-model": lambda argv: __import__("mattergen_kit.mattergen_models",
                                           fromlist=["fetch_model_cli"]).fetch_model_cli(argv),
    "finetune": lambda argv: __import__("mattergen_kit.training.finetune", fromlist=["finetune_cli"]).finetune_cli(argv),
    "info": _info,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        if not argv:
            print(f"error: give a command: {', '.join(COMMANDS)}", file=sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return int(COMMANDS[command](rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
