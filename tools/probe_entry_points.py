"""Adversarial sweep of every public entry point (issue 24: "validate every argument of every entry point").

Every ``mattergen-kit`` subcommand and every public function of ``mattergen_kit`` (``mk.generate``,
``mk.load_model``, ``mk.evaluate``, ``mk.finetune``, the loaders of ``mk.datasets``, ``SamplingRequest``, the
presampled store, the guidance panel's inputs, MatterGen's model loaders) gets wrong types, negative / zero / huge /
NaN / inf numbers, empty strings and lists, unknown names, bad paths (missing, a folder, empty, binary garbage) and
contradictory options. One line per probe::

    <verdict>  <area>  <probe>: <what came back>

Verdicts: ``clear-error`` (an error the kit raised on purpose, or on the CLI an ``error:`` line and a non-zero exit),
``correct`` (a valid but odd input that works, checked), ``TRACEBACK`` (an exception from deep inside: a library's
own error, a Python ``TypeError``, or any exception escaping ``cli.main``), ``SILENT-WRONG`` (a bad input accepted
without a word, or a wrong result), ``HANG`` (more than 60 s). The CLI runs in-process through ``cli.main`` (what the
``mattergen-kit`` script calls), so an exception escaping it is exactly the traceback a user would see.

    .venv/bin/python tools/probe_entry_points.py                 # all probes (~10 min on one core)
    .venv/bin/python tools/probe_entry_points.py --only generate  # probes whose area or name contains "generate"
    .venv/bin/python tools/probe_entry_points.py --json out.json  # also the verdicts as JSON

Sampling probes are tiny (2 crystals, 5 steps); relaxation probes relax one 2-atom cell for at most 2 steps.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import linecache
import math
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60
TINY = ["--num", "2", "--steps", "5", "--seed", "0", "--no-picture"]
KIT = str(REPO / "mattergen_kit")


class Hang(BaseException):
    """Raised by the alarm after TIMEOUT_S seconds."""


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


@dataclass
class Probe:
    area: str
    name: str
    call: Callable[[], Any]
    expect: Any = "error"   # "error", "ok" (any result), or check(result) -> None/True if right, else a reason


PROBES: list[Probe] = []


def probe(area: str, name: str, expect: Any = "error"):
    def register(fn):
        PROBES.append(Probe(area, name, fn, expect))
        return fn
    return register


def add(area: str, name: str, call: Callable[[], Any], expect: Any = "error") -> None:
    PROBES.append(Probe(area, name, call, expect))


# ============================================================================================== helpers
WORK = Path(tempfile.mkdtemp(prefix="mk_probe_"))


def tmp(name: str) -> Path:
    """A fresh path under the probe's scratch folder (not created)."""
    path = WORK / f"{len(list(WORK.iterdir()))}_{name}"
    return path


def cli(*argv) -> CliResult:
    from mattergen_kit import cli as kit_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            rc = kit_cli.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
    return CliResult(int(rc or 0), out.getvalue(), err.getvalue())


def fixture(name: str) -> Path:
    return REPO / "tests" / "data" / "bad" / name


def empty_file(suffix: str) -> Path:
    path = tmp(f"empty{suffix}")
    path.write_bytes(b"")
    return path


def garbage_file(suffix: str) -> Path:
    path = tmp(f"garbage{suffix}")
    path.write_bytes(bytes(range(256)) * 16)
    return path


def _garbage_folder() -> Path:
    path = folder("garbage")
    for k in range(2):
        (path / f"g{k}.cif").write_bytes(bytes(range(256)) * 16)
    return path


def folder(name: str = "dir") -> Path:
    path = tmp(name)
    path.mkdir()
    return path


def rocksalt():
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()


def cif_folder(n: int = 2) -> Path:
    path = folder("cifs")
    for k in range(n):
        rocksalt().to(filename=str(path / f"c{k}.cif"))
    return path


_MODELS: dict = {}


def base_model():
    if "base" not in _MODELS:
        import mattergen_kit as mk

        _MODELS["base"] = mk.load_model()
    return _MODELS["base"]


def conditioned_model():
    if "cond" not in _MODELS:
        import mattergen_kit as mk
        from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT

        _MODELS["cond"] = mk.load_model(BUNDLED_CONDITIONED_CHECKPOINT)
    return _MODELS["cond"]


def gen(model=None, num=2, **kw):
    kw.setdefault("steps", 5)
    kw.setdefault("seed", 0)
    kw.setdefault("progress", False)
    return (model or base_model()).generate(num, **kw)


def table_csv(rows: int = 40) -> Path:
    import pandas as pd

    rows_file = REPO / "tests/data/mp_rows/mp20_biternary_val_head120.csv.gz"
    frame = pd.read_csv(rows_file if rows_file.is_file() else REPO / "datasets/mp20_biternary/val.csv.gz", nrows=rows)
    frame["my_scalar"] = frame["band_gap"] * 2 + 1
    path = tmp("table.csv")
    frame.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------- checks
def cli_ok(result: CliResult):
    return True if result.rc == 0 else f"exit {result.rc}: {result.err.strip()[-200:]}"


def n_structures(n: int):
    def check(result):
        return True if isinstance(result, list) and len(result) == n else f"got {type(result).__name__} " \
            f"of {len(result) if hasattr(result, '__len__') else '?'}"
    return check


def only_elements(symbols: set[str]):
    def check(result):
        seen = {el.symbol for s in result for el in s.composition}
        return True if seen <= symbols else f"elements {sorted(seen)} outside {sorted(symbols)}"
    return check


def all_sizes(n: int):
    def check(result):
        sizes = [len(s) for s in result]
        return True if sizes and all(k == n for k in sizes) else f"cells of {sizes} atoms, asked {n}"
    return check


def no_blame_message(result: CliResult):
    """The misleading-message check: a refusal or a failure must name the request, not blame the model."""
    text = result.err + result.out
    if "untrained or diverged" in text:
        return "blames an 'untrained or diverged' model"
    if result.rc != 0 and "error:" not in result.err:
        return f"exit {result.rc} without an error line"
    if result.rc != 0:
        return "clear-error: " + next(line for line in result.err.splitlines() if "error:" in line)[:200]
    if result.rc == 0 and "trained on" not in text:
        return "ran without saying the cells are beyond the model's training"
    return True


# ============================================================================================== probes: CLI
def _generate_cli_probes() -> None:
    def g(*extra):
        return lambda: cli("generate", "--out", tmp("gen"), *TINY, *extra)

    bad = {
        "num text": ["--num", "abc"], "num zero": ["--num", "0"], "num negative": ["--num", "-1"],
        "num float text": ["--num", "2.5"], "num 1e3": ["--num", "1e3"],
        "steps zero": ["--steps", "0"], "steps one": ["--steps", "1"], "steps negative": ["--steps", "-5"],
        "steps text": ["--steps", "x"], "batch zero": ["--batch-size", "0"], "batch negative": ["--batch-size", "-3"],
        "seed negative": ["--seed", "-1"], "seed 2**63": ["--seed", str(2**63)], "seed text": ["--seed", "abc"],
        "threads zero": ["--threads", "0"], "threads negative": ["--threads", "-2"],
        "device tpu": ["--device", "tpu"], "device cuda": ["--device", "cuda"], "device cuda:7": ["--device", "cuda:7"],
        "device empty": ["--device", ""], "device meta": ["--device", "meta"],
        "elements empty string": ["--elements", ""], "elements only commas": ["--elements", ",,,"],
        "elements unknown": ["--elements", "Xx"], "elements noble only": ["--elements", "He,Ne"],
        "elements number 0": ["--elements", "0"], "elements number 200": ["--elements", "200"],
        "condition no =": ["--condition", "band_gap"], "condition no name": ["--condition", "=3"],
        "condition no value": ["--condition", "band_gap="], "condition nan": ["--condition", "band_gap=nan"],
        "condition inf": ["--condition", "band_gap=inf"], "condition negative gap": ["--condition", "band_gap=-1"],
        "condition 1e9 (refused, names the request)": ["--condition", "band_gap=1e9"],
        "condition text for scalar": ["--condition", "band_gap=abc"],
        "condition unknown property": ["--condition", "colour=3"],
        "space group 0": ["--condition", "space_group=0"], "space group 231": ["--condition", "space_group=231"],
        "space group 225.5": ["--condition", "space_group=225.5"], "space group text": ["--condition", "space_group=Fm-3m"],
        "chemical system unknown element": ["--condition", "chemical_system=Li-Xx"],
        "chemical system noble": ["--condition", "chemical_system=He-Ne"],
        "chemical system empty parts": ["--condition", "chemical_system=--"],
        "condition twice": ["--condition", "band_gap=1", "--condition", "band_gap=2"],
        "guidance negative": ["--guidance", "-1"], "guidance nan": ["--guidance", "nan"],
        "guidance inf": ["--guidance", "inf"], "guidance text": ["--guidance", "abc"],
        "guidance without condition": ["--guidance", "2"],
        "enforce-symmetry without space group": ["--enforce-symmetry"],
        "enforce-symmetry with formula": ["--enforce-symmetry", "--condition", "space_group=225", "--formula", "NaCl"],
        "remask negative": ["--remask-rate", "-1"], "remask nan": ["--remask-rate", "nan"],
        "remask inf": ["--remask-rate", "inf"],
        "formula empty": ["--formula", ""], "formula unknown element": ["--formula", "Xx2O"],
        "formula fractional": ["--formula", "Li0.5O"], "formula noble gas": ["--formula", "He2"],
        "formula 3000 atoms": ["--formula", "Li3000"], "formula garbage": ["--formula", "(((("],
        "formula vs num-atoms": ["--formula", "Li2O", "--num-atoms", "5"],
        "formula vs elements": ["--formula", "Li2O", "--elements", "Fe"],
        "formula vs chemical system": ["--formula", "Fe2O3", "--condition", "chemical_system=Li-O"],
        "num-atoms zero": ["--num-atoms", "0"], "num-atoms negative": ["--num-atoms", "-1"],
        "num-atoms 1001": ["--num-atoms", "1001"], "num-atoms 2.5": ["--num-atoms", "2.5"],
        "num-atoms 500": ["--num-atoms", "500"],
        "num-atoms without template": ["--num-atoms", "7", "--enforce-symmetry", "--condition", "space_group=225"],
        "elements vs chemical system": ["--elements", "Fe", "--condition", "chemical_system=Li-O"],
        "model missing": ["--model", "no/such.pt"], "model is a folder": None, "model empty file": None,
        "model garbage": None, "model a CIF": None,
        "out empty string": None, "out is a file": None, "out under a file": None,
        "overwrite and resume": ["--overwrite", "--resume"],
        "sampler unknown": ["--sampler", "turbo"],
        "dask scheduler garbage": ["--dask-scheduler", "not an address"],
        "dask scheduler empty": ["--dask-scheduler", ""],
        "unknown option": ["--temperature", "3"],
    }
    special = {
        "model is a folder": lambda: ["--model", folder()],
        "model empty file": lambda: ["--model", empty_file(".pt")],
        "model garbage": lambda: ["--model", garbage_file(".pt")],
        "model a CIF": lambda: ["--model", next(cif_folder(1).iterdir())],
    }
    for name, extra in bad.items():
        if name in special:
            add("generate-cli", name, lambda s=special[name]: cli("generate", "--out", tmp("gen"), *TINY, *s()))
        elif extra is not None:
            expect = no_blame_message if "names the request" in name else "error"
            add("generate-cli", name, g(*extra), expect)

    def out_probe(kind):
        def run():
            if kind == "out empty string":
                return cli("generate", "--out", "", *TINY)
            if kind == "out is a file":
                return cli("generate", "--out", empty_file(".txt"), *TINY)
            return cli("generate", "--out", empty_file(".txt") / "x", *TINY)
        return run

    for kind in ("out empty string", "out is a file", "out under a file"):
        add("generate-cli", kind, out_probe(kind))
    # the misleading-message case of issue 24: a cell larger than the prior (one crystal, 2 steps: 200-atom cells
    # take ~7 s per step on one core)
    add("generate-cli", "num-atoms 200 (names the request, not the model)",
        lambda: cli("generate", "--out", tmp("gen"), "--num", "1", "--steps", "2", "--seed", "0", "--no-picture",
                    "--num-atoms", "200"), no_blame_message)
    # valid, if unusual: an explicit sampler is the user's choice; --resume in an empty folder starts the run
    add("generate-cli", "sampler fast with condition", g("--sampler", "fast", "--condition", "band_gap=2"), cli_ok)
    add("generate-cli", "sampler fast with enforce-symmetry",
        g("--sampler", "fast", "--enforce-symmetry", "--condition", "space_group=225"), cli_ok)
    add("generate-cli", "resume in an empty folder starts the run",
        lambda: cli("generate", "--out", folder(), "--resume", *TINY), cli_ok)
    # valid but odd: must work
    add("generate-cli", "elements duplicated Li,Li,O", g("--elements", "Li,Li,O"), cli_ok)
    add("generate-cli", "elements with spaces ' Li , O '", g("--elements", " Li , O "), cli_ok)
    add("generate-cli", "batch size larger than num", g("--batch-size", "1000"), cli_ok)
    add("generate-cli", "formula as written", g("--formula", "NaCl"), cli_ok)


def _evaluate_cli_probes() -> None:
    base = ["--no-relax", "--reference", "none", "--no-distribution"]

    def e(*extra, src=None, out=None):
        return lambda: cli("evaluate", src() if callable(src) else (cif_folder() if src is None else src),
                           "--out", out() if callable(out) else (tmp("eval") if out is None else out), *extra)

    add("evaluate-cli", "input missing", e(*base, src="no/such/folder"))
    add("evaluate-cli", "input empty folder", e(*base, src=lambda: folder()))
    add("evaluate-cli", "input empty file", e(*base, src=lambda: empty_file(".cif")))
    add("evaluate-cli", "input binary garbage", e(*base, src=lambda: garbage_file(".cif")))
    add("evaluate-cli", "input a folder of garbage", e(*base, src=lambda: _garbage_folder()))
    add("evaluate-cli", "input an unknown suffix", e(*base, src=lambda: garbage_file(".bin")))
    add("evaluate-cli", "out is a file", e(*base, out=lambda: empty_file(".txt")))
    add("evaluate-cli", "out empty string", e(*base, out=""))
    add("evaluate-cli", "steps zero", e("--steps", "0", "--reference", "none"))
    add("evaluate-cli", "steps negative", e("--steps", "-3", "--reference", "none"))
    add("evaluate-cli", "steps text", e("--steps", "abc"))
    add("evaluate-cli", "fmax zero", e("--fmax", "0"))
    add("evaluate-cli", "fmax negative", e("--fmax", "-1"))
    add("evaluate-cli", "fmax nan", e("--fmax", "nan"))
    add("evaluate-cli", "fmax inf", e("--fmax", "inf", "--steps", "2", "--reference", "none", "--no-distribution"))
    add("evaluate-cli", "batch-size zero", e("--batch-size", "0"))
    add("evaluate-cli", "max-reference-fingerprints zero", e("--max-reference-fingerprints", "0"))
    add("evaluate-cli", "reference unknown name", e("--no-relax", "--no-distribution", "--reference", "bogus"))
    add("evaluate-cli", "reference bundled-typo", e("--no-relax", "--no-distribution", "--reference", "bundled-trian"))
    add("evaluate-cli", "reference empty folder",
        lambda: cli("evaluate", cif_folder(), "--out", tmp("eval"), "--no-relax", "--no-distribution",
                    "--reference", folder()))
    add("evaluate-cli", "reference a garbage file",
        lambda: cli("evaluate", cif_folder(), "--out", tmp("eval"), "--no-relax", "--no-distribution",
                    "--reference", garbage_file(".cif")))
    add("evaluate-cli", "hull unknown", e("--hull", "bogus"))
    add("evaluate-cli", "model unknown", e("--model", "bogus"))
    add("evaluate-cli", "device tpu", e("--device", "tpu", "--steps", "2", "--reference", "none", "--no-distribution"))
    add("evaluate-cli", "device cuda", e("--device", "cuda", "--steps", "2"))
    add("evaluate-cli", "device empty", e("--device", "", "--steps", "2", "--reference", "none", "--no-distribution"))
    add("evaluate-cli", "second opinion without relax", e("--second-opinion", "sevennet", "--no-relax"))
    add("evaluate-cli", "dask scheduler with --no-relax", e(*base, "--dask-scheduler", "tcp://127.0.0.1:9"))
    add("evaluate-cli", "unknown option", e(*base, "--bogus"))
    add("evaluate-cli", "no arguments", lambda: cli("evaluate"))
    add("evaluate-cli", "valid no-relax run", e(*base), cli_ok)


def _other_cli_probes() -> None:
    add("cli", "no command", lambda: cli())
    add("cli", "unknown command", lambda: cli("generat"))
    add("cli", "info with a stray argument", lambda: cli("info", "--bogus"))
    add("cli", "info", lambda: cli("info"), cli_ok)
    fd = "fetch-data"
    add(fd, "unknown dataset", lambda: cli(fd, "mp21"))
    add(fd, "timeout negative", lambda: cli(fd, "mp20", "--root", tmp("mp20"), "--timeout", "-1"))
    add(fd, "timeout nan", lambda: cli(fd, "mp20", "--root", tmp("mp20"), "--timeout", "nan"))
    add(fd, "timeout text", lambda: cli(fd, "mp20", "--root", tmp("mp20"), "--timeout", "soon"))
    add(fd, "idle-timeout inf", lambda: cli(fd, "mp20", "--root", tmp("mp20"), "--idle-timeout", "inf",
                                            "--base-url", "http://127.0.0.1:9"))
    add(fd, "root is a file", lambda: cli(fd, "mp20", "--root", empty_file(".txt"), "--base-url", "http://127.0.0.1:9"))
    add(fd, "base-url refused port", lambda: cli(fd, "mp20", "--root", tmp("mp20"), "--base-url", "http://127.0.0.1:9"))
    add(fd, "base-url not a url", lambda: cli(fd, "mp20", "--root", tmp("mp20"), "--base-url", "not a url"))
    add(fd, "base-url file://", lambda: cli(fd, "mp20", "--root", tmp("mp20"), "--base-url", "file:///no/such"))
    fm = "fetch-model"
    add(fm, "unknown model", lambda: cli(fm, "mattergen_bogus", "--dest", tmp("m")))
    add(fm, "timeout negative", lambda: cli(fm, "mattergen_base", "--dest", tmp("m"), "--timeout", "-1"))
    add(fm, "timeout nan", lambda: cli(fm, "mattergen_base", "--dest", tmp("m"), "--timeout", "nan"))
    add(fm, "timeout zero", lambda: cli(fm, "mattergen_base", "--dest", tmp("m"), "--timeout", "0"))
    add(fm, "dest is a file", lambda: cli(fm, "mattergen_base", "--dest", empty_file(".txt"),
                                         "--base-url", "http://127.0.0.1:9"))
    add(fm, "base-url refused port", lambda: cli(fm, "mattergen_base", "--dest", tmp("m"),
                                                "--base-url", "http://127.0.0.1:9", "--timeout", "3"))
    add(fm, "base-url not a url", lambda: cli(fm, "mattergen_base", "--dest", tmp("m"), "--base-url", "nonsense",
                                             "--timeout", "3"))
    tr = "train-cli"
    add(tr, "config missing", lambda: cli("train", "--config", "no/such.yaml"))
    add(tr, "config is a folder", lambda: cli("train", "--config", folder()))
    add(tr, "config empty file", lambda: cli("train", "--config", empty_file(".yaml")))
    add(tr, "config binary garbage", lambda: cli("train", "--config", garbage_file(".yaml")))

    def yaml_file(text):
        path = tmp("c.yaml")
        path.write_text(text)
        return path

    add(tr, "config a YAML list", lambda: cli("train", "--config", yaml_file("- 1\n- 2\n")))
    add(tr, "config unknown key", lambda: cli("train", "--config", yaml_file("bogus_key: 3\nmax_steps: 1\n")))
    add(tr, "no arguments", lambda: cli("train"))

    def ft(*extra, table=None):
        def run():
            path = table() if callable(table) else (table or table_csv())
            return cli("finetune", "--table", path, "--out", tmp("ft"), "--max-steps", "1", "--max-time", "0.2",
                       "--no-progress", *extra)
        return run

    fta = "finetune-cli"
    add(fta, "table missing", ft("--property", "my_scalar", table="no/such.csv"))
    add(fta, "table is a folder", ft("--property", "my_scalar", table=lambda: folder()))
    add(fta, "table empty file", ft("--property", "my_scalar", table=lambda: empty_file(".csv")))
    add(fta, "table binary garbage", ft("--property", "my_scalar", table=lambda: garbage_file(".csv")))
    add(fta, "property unknown column", ft("--property", "nope"))
    add(fta, "property empty", ft("--property", ""))
    add(fta, "property twice", ft("--property", "my_scalar", "--property", "my_scalar"))
    add(fta, "kind unknown", ft("--property", "my_scalar", "--kind", "ordinal"))
    add(fta, "lr negative", ft("--property", "my_scalar", "--lr", "-1"))
    add(fta, "lr zero", ft("--property", "my_scalar", "--lr", "0"))
    add(fta, "lr nan", ft("--property", "my_scalar", "--lr", "nan"))
    add(fta, "batch-size zero", ft("--property", "my_scalar", "--batch-size", "0"))
    add(fta, "dropout negative", ft("--property", "my_scalar", "--dropout", "-0.1"))
    add(fta, "dropout above one", ft("--property", "my_scalar", "--dropout", "1.5"))
    add(fta, "dropout nan", ft("--property", "my_scalar", "--dropout", "nan"))
    add(fta, "max-time negative", ft("--property", "my_scalar", "--max-time", "-1"))
    add(fta, "max-time nan", ft("--property", "my_scalar", "--max-time", "nan"))
    add(fta, "max-steps zero", ft("--property", "my_scalar", "--max-steps", "0"))
    add(fta, "max-steps -5", ft("--property", "my_scalar", "--max-steps", "-5"))
    add(fta, "val-fraction 1.5", ft("--property", "my_scalar", "--val-fraction", "1.5"))
    add(fta, "base missing", ft("--property", "my_scalar", "--base", "no/such.pt"))
    add(fta, "base is a folder", lambda: ft("--property", "my_scalar", "--base", folder())())
    add(fta, "base garbage", lambda: ft("--property", "my_scalar", "--base", garbage_file(".pt"))())
    fa = "finetune-api"

    def ft_api(**kw):
        def run():
            import mattergen_kit as mk

            kw.setdefault("table", table_csv())
            kw.setdefault("properties", "my_scalar")
            kw.setdefault("max_steps", 1)
            kw.setdefault("max_time_minutes", 0.2)
            return mk.finetune(out=tmp("fta"), progress=False, **kw)
        return run

    add(fa, "properties empty list", ft_api(properties=[]))
    add(fa, "table a number", ft_api(table=42))
    add(fa, "kind unknown", ft_api(kind="ordinal"))
    add(fa, "max_steps 2.5", ft_api(max_steps=2.5))
    add(fa, "max_time_minutes inf", ft_api(max_time_minutes=float("inf")))
    add(fa, "batch_size True", ft_api(batch_size=True))
    add(fa, "max_atoms 0", ft_api(max_atoms=0))
    add(fa, "val_fraction nan", ft_api(val_fraction=float("nan")))
    add(fa, "unknown keyword", ft_api(bogus_option=1))
    add(fta, "out is a file", lambda: cli("finetune", "--table", table_csv(), "--property", "my_scalar",
                                          "--out", empty_file(".txt"), "--max-steps", "1", "--no-progress"))


# ============================================================================================== probes: Python
def _generate_api_probes() -> None:
    import mattergen_kit as mk

    a = "generate-api"
    add(a, "num string '2'", lambda: mk.generate("2", steps=5, seed=0, progress=False))
    add(a, "num 2.5", lambda: gen(num=2.5))
    add(a, "num 0", lambda: gen(num=0))
    add(a, "num -1", lambda: gen(num=-1))
    add(a, "num True", lambda: gen(num=True))
    add(a, "num None", lambda: gen(num=None))
    add(a, "num list", lambda: gen(num=[2]))
    add(a, "seed string", lambda: gen(seed="0"))
    add(a, "seed float", lambda: gen(seed=1.5))
    add(a, "seed negative", lambda: gen(seed=-1))
    add(a, "steps string", lambda: gen(steps="5"))
    add(a, "steps 1", lambda: gen(steps=1))
    add(a, "steps nan", lambda: gen(steps=float("nan")))
    add(a, "batch_size 0", lambda: gen(batch_size=0))
    add(a, "batch_size 2.5", lambda: gen(batch_size=2.5))
    add(a, "batch_size string", lambda: gen(batch_size="2"))
    add(a, "num_atoms string", lambda: gen(num_atoms="5"))
    add(a, "num_atoms empty list", lambda: gen(num_atoms=[]))
    add(a, "num_atoms with a zero", lambda: gen(num_atoms=[3, 0]))
    add(a, "num_atoms nan", lambda: gen(num_atoms=float("nan")))
    add(a, "num_atoms 2.5", lambda: gen(num_atoms=2.5))
    add(a, "num_atoms dict", lambda: gen(num_atoms={"a": 3}))
    add(a, "num_atoms numpy int", lambda: gen(num_atoms=np.int64(4)), all_sizes(4))
    add(a, "num_atoms 0-d tensor", lambda: gen(num_atoms=torch.tensor(4)), all_sizes(4))
    add(a, "num_atoms 2-d list", lambda: gen(num_atoms=[[3], [4]]))
    add(a, "conditions a list", lambda: gen(conditioned_model(), conditions=["band_gap", 2.0]))
    add(a, "conditions a string", lambda: gen(conditioned_model(), conditions="band_gap=2"))
    add(a, "conditions empty dict with gamma 2", lambda: gen(conditioned_model(), conditions={}, guidance_scale=2.0))
    add(a, "condition text for a scalar", lambda: gen(conditioned_model(), conditions={"band_gap": "abc"}))
    add(a, "condition None value", lambda: gen(conditioned_model(), conditions={"band_gap": None}))
    add(a, "condition nan", lambda: gen(conditioned_model(), conditions={"band_gap": float("nan")}))
    add(a, "condition inf", lambda: gen(conditioned_model(), conditions={"band_gap": float("inf")}))
    add(a, "condition list shorter than num", lambda: gen(conditioned_model(), conditions={"band_gap": [1.0]}))
    add(a, "condition empty list", lambda: gen(conditioned_model(), conditions={"band_gap": []}))
    add(a, "condition dict value", lambda: gen(conditioned_model(), conditions={"band_gap": {"x": 1}}))
    add(a, "condition unknown name", lambda: gen(conditioned_model(), conditions={"colour": 1}))
    add(a, "condition name not a string", lambda: gen(conditioned_model(), conditions={3: 1}))
    add(a, "space group 0", lambda: gen(conditioned_model(), conditions={"space_group": 0}))
    add(a, "space group 231", lambda: gen(conditioned_model(), conditions={"space_group": 231}))
    add(a, "space group '225' text (read as 225)", lambda: gen(conditioned_model(), conditions={"space_group": "225"}),
        "ok")
    add(a, "space group 225.0 float", lambda: gen(conditioned_model(), conditions={"space_group": 225.0}), "ok")
    add(a, "space group 225.5", lambda: gen(conditioned_model(), conditions={"space_group": 225.5}))
    add(a, "space group True", lambda: gen(conditioned_model(), conditions={"space_group": True}))
    add(a, "chemical system empty", lambda: gen(conditioned_model(), conditions={"chemical_system": ""}))
    add(a, "chemical system unknown element", lambda: gen(conditioned_model(),
                                                          conditions={"chemical_system": "Li-Xx"}))
    add(a, "chemical system a number", lambda: gen(conditioned_model(), conditions={"chemical_system": 5}))
    add(a, "chemical system noble gases", lambda: gen(conditioned_model(), conditions={"chemical_system": "He-Ne"}))
    add(a, "chemical system lower case", lambda: gen(conditioned_model(), conditions={"chemical_system": "li-o"}))
    add(a, "chemical system with spaces", lambda: gen(conditioned_model(), conditions={"chemical_system": "Li - O"}),
        only_elements({"Li", "O"}))
    add(a, "chemical system vs formula", lambda: gen(conditioned_model(), conditions={"chemical_system": "Li-O"},
                                                     formula="Fe2O3"))
    add(a, "chemical system vs fixed_atom_types",
        lambda: gen(conditioned_model(), conditions={"chemical_system": "Li-O"}, fixed_atom_types=[["Fe", "O"]] * 2))
    add(a, "guidance string", lambda: gen(conditioned_model(), conditions={"band_gap": 2.0}, guidance_scale="2"))
    add(a, "guidance negative", lambda: gen(conditioned_model(), conditions={"band_gap": 2.0}, guidance_scale=-1))
    add(a, "guidance inf", lambda: gen(conditioned_model(), conditions={"band_gap": 2.0}, guidance_scale=math.inf))
    add(a, "guidance without conditions", lambda: gen(guidance_scale=2.0))
    add(a, "conditions on the base model", lambda: gen(conditions={"band_gap": 2.0}))
    add(a, "allowed_elements 'Li,O' one string", lambda: gen(allowed_elements="Li,O"))
    add(a, "allowed_elements float", lambda: gen(allowed_elements=[1.5]))
    add(a, "allowed_elements True", lambda: gen(allowed_elements=[True]))
    add(a, "allowed_elements dict", lambda: gen(allowed_elements={"Li": 1}))
    add(a, "allowed_elements Z 0", lambda: gen(allowed_elements=[0]))
    add(a, "allowed_elements empty", lambda: gen(allowed_elements=[]))
    add(a, "allowed_elements None inside", lambda: gen(allowed_elements=["Li", None]))
    add(a, "allowed_elements wrong-size tensor", lambda: gen(allowed_elements=torch.ones(3, dtype=torch.bool)))
    add(a, "allowed_elements all-false mask", lambda: gen(allowed_elements=torch.zeros(
        base_model().diffusion.atom_types.num_classes, dtype=torch.bool)))
    add(a, "allowed_elements numpy array", lambda: gen(allowed_elements=np.array([3, 8])), only_elements({"Li", "O"}))
    add(a, "allowed_elements lower case", lambda: gen(allowed_elements=["li", "o"]))
    add(a, "formula a number", lambda: gen(formula=123))
    add(a, "formula empty", lambda: gen(formula=""))
    add(a, "formula with fixed_atom_types", lambda: gen(formula="Li2O", fixed_atom_types=[["Li"]] * 2))
    add(a, "formula vs allowed_elements", lambda: gen(formula="Li2O", allowed_elements=["Fe"]))
    add(a, "fixed_atom_types unknown element", lambda: gen(fixed_atom_types=[["Xx"], ["Li"]]))
    add(a, "fixed_atom_types empty crystal", lambda: gen(fixed_atom_types=[[], ["Li"]]))
    add(a, "fixed_atom_types a string", lambda: gen(fixed_atom_types="LiO"))
    add(a, "fixed_atom_types a flat list", lambda: gen(fixed_atom_types=["Li", "O"]))
    add(a, "fixed_atom_types noble gas", lambda: gen(fixed_atom_types=[["He"], ["Li"]]))
    add(a, "fixed_atom_types 500 atoms", lambda: gen(fixed_atom_types=[["Li"] * 500] * 2))
    add(a, "fixed_atom_types vs num_atoms", lambda: gen(fixed_atom_types=[["Li", "O"]] * 2, num_atoms=5))
    add(a, "fixed_atom_types vs allowed_elements", lambda: gen(fixed_atom_types=[["Li", "O"]] * 2,
                                                               allowed_elements=["Fe"]))
    add(a, "type_temperature 0", lambda: gen(type_temperature=0))
    add(a, "type_temperature nan", lambda: gen(type_temperature=float("nan")))
    add(a, "type_temperature string", lambda: gen(type_temperature="1"))
    add(a, "coherence_bias string", lambda: gen(coherence_bias="abc"))
    add(a, "coherence_bias nan", lambda: gen(coherence_bias=float("nan")))
    add(a, "coherence_bias negative", lambda: gen(coherence_bias=-1.0))
    add(a, "remask_rate nan", lambda: gen(remask_rate=float("nan")))
    add(a, "remask_rate 5 (a rate per unit time)", lambda: gen(remask_rate=5.0), n_structures(2))
    add(a, "sampler unknown", lambda: gen(sampler="turbo"))
    add(a, "sampler fast with conditions", lambda: gen(conditioned_model(), sampler="fast",
                                                       conditions={"band_gap": 2.0}), n_structures(2))
    add(a, "threads 0", lambda: gen(threads=0))
    add(a, "threads string", lambda: gen(threads="1"))
    add(a, "trajectory_every 0", lambda: gen(return_trajectory=True, trajectory_every=0))
    add(a, "enforce_symmetry 'yes' string", lambda: gen(conditioned_model(), enforce_symmetry="yes",
                                                        conditions={"space_group": 225}))
    add(a, "enforce_symmetry without space group", lambda: gen(enforce_symmetry=True))
    add(a, "enforce_symmetry group 1 not in templates?", lambda: gen(conditioned_model(), enforce_symmetry=True,
                                                                     conditions={"space_group": 230}))
    add(a, "progress a string", lambda: gen(progress="no"))
    add(a, "unknown keyword", lambda: gen(temperature=3))
    add(a, "model a missing path", lambda: mk.generate(2, model="no/such.pt", steps=5))
    add(a, "model a number", lambda: mk.generate(2, model=42, steps=5))
    add(a, "request plus keywords", lambda: base_model().generate(
        mk.generation.SamplingRequest(2, steps=5, progress=False), seed=0), n_structures(2))
    add(a, "valid tiny request", lambda: gen(), n_structures(2))

    m = "load_model"
    add(m, "missing file", lambda: mk.load_model("no/such.pt"))
    add(m, "a folder", lambda: mk.load_model(folder()))
    add(m, "empty file", lambda: mk.load_model(empty_file(".pt")))
    add(m, "binary garbage", lambda: mk.load_model(garbage_file(".pt")))
    add(m, "a CIF file", lambda: mk.load_model(next(cif_folder(1).iterdir())))
    add(m, "a JSON file", lambda: mk.load_model(_json_file({"a": 1})))
    add(m, "a zip of nothing", lambda: mk.load_model(fixture("empty.zip")))
    add(m, "path a number", lambda: mk.load_model(42))
    add(m, "path a list", lambda: mk.load_model(["a.pt"]))
    add(m, "device tpu", lambda: mk.load_model(device="tpu"))
    add(m, "device cuda", lambda: mk.load_model(device="cuda"))
    add(m, "device a number", lambda: mk.load_model(device=5))
    add(m, "device empty", lambda: mk.load_model(device=""))
    add(m, "a torch.save'd dict", lambda: mk.load_model(_torch_file({"state_dict": {}})))
    add(m, "mattergen name unknown", lambda: mk.load_model("mattergen_bogus"))
    add(m, "load_mattergen unknown name", lambda: mk.load_mattergen("bogus_model"))
    add(m, "load_mattergen empty folder", lambda: mk.load_mattergen(folder()))
    add(m, "load_mattergen a number", lambda: mk.load_mattergen(3))
    add(m, "fetch_model unknown", lambda: mk.fetch_model("bogus", dest=tmp("m")))
    add(m, "fetch_model timeout negative", lambda: mk.fetch_model("mattergen_base", dest=tmp("m"), timeout=-1))
    add(m, "fetch_model timeout nan", lambda: mk.fetch_model("mattergen_base", dest=tmp("m"), timeout=float("nan")))
    add(m, "fetch_model refused mirror", lambda: mk.fetch_model("mattergen_base", dest=tmp("m"),
                                                               base_url="http://127.0.0.1:9", timeout=3))


def _json_file(obj) -> Path:
    path = tmp("f.json")
    path.write_text(json.dumps(obj))
    return path


def _torch_file(obj) -> Path:
    path = tmp("f.pt")
    torch.save(obj, path)
    return path


def _evaluate_api_probes() -> None:
    import mattergen_kit as mk

    a = "evaluate-api"

    def ev(structures=None, **kw):
        kw.setdefault("relax", False)
        kw.setdefault("reference", None)
        kw.setdefault("distribution", False)
        kw.setdefault("progress", False)
        kw.setdefault("band_gap", False)
        return mk.evaluate([rocksalt()] if structures is None else structures, **kw)

    def rows(n):
        def check(report):
            return True if len(report.per_structure) == n else f"{len(report.per_structure)} rows"
        return check

    add(a, "structures empty list", lambda: ev([]))
    add(a, "structures a missing path", lambda: ev("no/such/folder"))
    add(a, "structures a number", lambda: ev(42))
    add(a, "structures a string that is not a path", lambda: ev("NaCl"))
    add(a, "structures [None]", lambda: ev([None]), rows(1))
    add(a, "structures a list of strings", lambda: ev(["not a structure"]))
    add(a, "structures a dict", lambda: ev({"a": rocksalt()}))
    add(a, "structures a bare Structure (a list of one)", lambda: ev(rocksalt()), rows(1))
    add(a, "structures an empty folder", lambda: ev(folder()))
    add(a, "structures a garbage file", lambda: ev(garbage_file(".cif")), rows(1))
    add(a, "fmax negative", lambda: ev(relax=True, fmax=-1, steps=2))
    add(a, "fmax nan", lambda: ev(relax=True, fmax=float("nan"), steps=2))
    add(a, "fmax inf", lambda: ev(relax=True, fmax=float("inf"), steps=2))
    add(a, "fmax a string", lambda: ev(relax=True, fmax="0.1", steps=2))
    add(a, "steps 0", lambda: ev(relax=True, steps=0))
    add(a, "steps -5", lambda: ev(relax=True, steps=-5))
    add(a, "steps 2.5", lambda: ev(relax=True, steps=2.5))
    add(a, "device tpu", lambda: ev(relax=True, device="tpu", steps=2))
    add(a, "device cuda", lambda: ev(relax=True, device="cuda", steps=2))
    add(a, "torch_threads 0", lambda: ev(relax=True, torch_threads=0, steps=2))
    add(a, "max_relax_atoms -1", lambda: ev(relax=True, max_relax_atoms=-1, steps=2))
    add(a, "max_relax_atoms a string", lambda: ev(relax=True, max_relax_atoms="200", steps=2))
    add(a, "max_reference_fingerprints 0", lambda: ev(reference="bundled-val", distribution=True,
                                                       max_reference_fingerprints=0))
    add(a, "reference unknown split", lambda: ev(reference="bundled-trian"))
    add(a, "reference a number", lambda: ev(reference=42))
    add(a, "reference a missing path", lambda: ev(reference="no/such/folder"))
    add(a, "hull unknown", lambda: ev(relax=True, hull="bogus"))
    add(a, "model unknown", lambda: ev(relax=True, model="bogus"))
    add(a, "model unknown without relax", lambda: ev(model="bogus"))
    add(a, "names wrong length", lambda: ev(names=["a", "b", "c"]))
    add(a, "names a string", lambda: ev(names="ab"))
    add(a, "batch_size 0", lambda: ev(relax=True, batch_size=0))
    add(a, "batch_size a string", lambda: ev(relax=True, batch_size="2"))
    add(a, "out is a file", lambda: ev(out=empty_file(".txt")))
    add(a, "cluster and map_fn", lambda: ev(relax=True, cluster="tcp://127.0.0.1:9", map_fn=map))
    add(a, "second opinion unknown", lambda: ev(relax=True, second_opinion="bogus"))
    add(a, "valid no-relax run", lambda: ev(), rows(1))


def _data_probes() -> None:
    from mattergen_kit import datasets as ds

    a = "datasets"
    add(a, "load_bundled unknown split", lambda: ds.load_bundled("bogus", progress=False))
    add(a, "load_bundled split a number", lambda: ds.load_bundled(1, progress=False))
    add(a, "load_bundled max_atoms 0", lambda: ds.load_bundled("val", max_atoms=0, progress=False))
    add(a, "load_bundled max_atoms -1", lambda: ds.load_bundled("val", max_atoms=-1, progress=False))
    add(a, "load_bundled max_atoms 30", lambda: ds.load_bundled("val", max_atoms=30, progress=False))
    add(a, "load_bundled max_atoms '20'", lambda: ds.load_bundled("val", max_atoms="20", progress=False))
    add(a, "load_bundled workers 0", lambda: ds.load_bundled("val", workers=0, progress=False), "ok")
    add(a, "load_bundled workers -1", lambda: ds.load_bundled("val", workers=-1, progress=False), "ok")
    add(a, "num_atoms_histogram unknown split", lambda: ds.num_atoms_histogram("bogus"))
    add(a, "num_atoms_histogram max_atoms 0", lambda: ds.num_atoms_histogram("val", max_atoms=0))
    add(a, "split_of a number id", lambda: ds.split_of(12345), "ok")
    add(a, "split_of fractions summing to 1.5", lambda: ds.split_of("mp-1", fractions=(1.5, 0.0, 0.0)))
    add(a, "split_of negative fractions", lambda: ds.split_of("mp-1", fractions=(-0.2, 0.6, 0.6)))
    add(a, "load_aflow_bulk_modulus unknown split", lambda: ds.load_aflow_bulk_modulus("bogus", progress=False))
    add(a, "load_csv missing", lambda: ds.load_csv("no/such.csv", progress=False))
    add(a, "load_csv a folder", lambda: ds.load_csv(folder(), progress=False))
    add(a, "load_csv empty file", lambda: ds.load_csv(empty_file(".csv"), progress=False, cache=False))
    add(a, "load_csv binary garbage", lambda: ds.load_csv(garbage_file(".csv"), progress=False, cache=False))
    add(a, "load_csv garbage .csv.gz", lambda: ds.load_csv(garbage_file(".csv.gz"), progress=False, cache=False))
    add(a, "load_csv cif_column unknown", lambda: ds.load_csv(table_csv(5), cif_column="nope", progress=False,
                                                              cache=False))
    add(a, "load_csv max_atoms 0", lambda: ds.load_csv(table_csv(5), max_atoms=0, progress=False, cache=False))
    add(a, "load_csv max_atoms -1", lambda: ds.load_csv(table_csv(5), max_atoms=-1, progress=False, cache=False))
    add(a, "load_csv e_above_hull_max nan", lambda: ds.load_csv(table_csv(5), e_above_hull_max=float("nan"),
                                                                progress=False, cache=False))
    add(a, "load_csv path a number", lambda: ds.load_csv(42, progress=False))
    add(a, "load_csv a JSON file", lambda: ds.load_csv(_json_file([1, 2]), progress=False, cache=False))
    add(a, "load_cif_folder missing", lambda: ds.load_cif_folder("no/such/folder", progress=False))
    add(a, "load_cif_folder empty folder", lambda: ds.load_cif_folder(folder(), progress=False))
    add(a, "load_cif_folder a garbage file", lambda: ds.load_cif_folder(garbage_file(".cif"), progress=False))
    add(a, "load_cif_folder max_atoms -1", lambda: ds.load_cif_folder(cif_folder(), max_atoms=-1, progress=False))
    add(a, "load_cif_folder a single good CIF", lambda: ds.load_cif_folder(next(cif_folder(1).iterdir()),
                                                                           progress=False), "ok")
    add(a, "load_mp20 unknown split", lambda: ds.load_mp20("bogus", root=tmp("mp20"), progress=False))
    add(a, "load_mp20 root missing, no download", lambda: ds.load_mp20("val", root=tmp("mp20"), progress=False))
    add(a, "load_mp20 root a file", lambda: ds.load_mp20("val", root=empty_file(".txt"), progress=False))
    add(a, "load_alexandria missing", lambda: ds.load_alexandria("no/such.json", progress=False))
    add(a, "load_alexandria empty file", lambda: ds.load_alexandria(empty_file(".json"), progress=False))
    add(a, "load_alexandria garbage", lambda: ds.load_alexandria(garbage_file(".json"), progress=False))
    add(a, "load_alexandria garbage .bz2", lambda: ds.load_alexandria(garbage_file(".json.bz2"), progress=False))
    add(a, "load_alexandria a JSON list", lambda: ds.load_alexandria(_json_file([1, 2]), progress=False))
    add(a, "load_alexandria empty list of paths", lambda: ds.load_alexandria([], progress=False))
    add(a, "load_alexandria max_atoms -1", lambda: ds.load_alexandria(fixture("no_entries.json"), max_atoms=-1,
                                                                       progress=False))
    add(a, "load_alexandria limit 0", lambda: ds.load_alexandria(fixture("no_entries.json"), limit=0,
                                                                  progress=False))
    add(a, "load_alexandria limit -1", lambda: ds.load_alexandria(fixture("no_entries.json"), limit=-1,
                                                                   progress=False))
    add(a, "load_alexandria e_above_hull_max nan", lambda: ds.load_alexandria(
        fixture("no_entries.json"), e_above_hull_max=float("nan"), progress=False))
    add(a, "load_icsd missing", lambda: ds.load_icsd("no/such", progress=False))
    add(a, "load_icsd disorder unknown", lambda: ds.load_icsd(cif_folder(), disorder="average", progress=False))
    add(a, "load_icsd max_atoms 0", lambda: ds.load_icsd(cif_folder(), max_atoms=0, progress=False))
    add(a, "load_icsd empty folder", lambda: ds.load_icsd(folder(), progress=False))
    mpq = dict(api_key="x" * 32, endpoint="http://127.0.0.1:9", timeout=3, cache=False, progress=False)
    add(a, "load_materials_project num_sites inverted", lambda: ds.load_materials_project(num_sites=(20, 1), **mpq))
    add(a, "load_materials_project num_sites negative", lambda: ds.load_materials_project(num_sites=-1, **mpq))
    add(a, "load_materials_project e_above_hull nan", lambda: ds.load_materials_project(
        energy_above_hull=(float("nan"), 0.1), **mpq))
    add(a, "load_materials_project timeout negative", lambda: ds.load_materials_project(
        **{**mpq, "timeout": -1}))
    add(a, "load_materials_project timeout nan", lambda: ds.load_materials_project(**{**mpq, "timeout": float("nan")}))
    add(a, "load_materials_project unknown element", lambda: ds.load_materials_project(elements=["Xx"], **mpq))
    add(a, "load_materials_project chemsys a number", lambda: ds.load_materials_project(chemsys=5, **mpq))
    add(a, "load_materials_project refused endpoint", lambda: ds.load_materials_project(elements=["Li"], **mpq))
    add(a, "load_materials_project empty key", lambda: ds.load_materials_project(
        elements=["Li"], **{**mpq, "api_key": ""}))

    from mattergen_kit import CrystalBatch, canonicalize_structure, symmetric_polar_factor

    b = "crystal-batch"
    add(b, "from_structures empty", lambda: CrystalBatch.from_structures([]))
    add(b, "from_structures [None]", lambda: CrystalBatch.from_structures([None]))
    add(b, "from_structures a string", lambda: CrystalBatch.from_structures(["NaCl"]))
    add(b, "from_structures an empty Structure", lambda: CrystalBatch.from_structures([_empty_structure()]))
    add(b, "canonicalize a string", lambda: canonicalize_structure("NaCl"))
    add(b, "canonicalize None", lambda: canonicalize_structure(None))
    add(b, "polar factor of a 2x2 matrix", lambda: symmetric_polar_factor(torch.eye(2)))
    add(b, "polar factor of a NaN lattice", lambda: symmetric_polar_factor(torch.full((3, 3), float("nan"))))
    add(b, "collate an empty list", lambda: CrystalBatch.collate([]))
    add(b, "batch index out of range", lambda: CrystalBatch.from_structures([rocksalt()])[5])


def _empty_structure():
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(4.0), [], [])


def _presampled_probes() -> None:
    from mattergen_kit import presampled as ps

    a = "presampled"
    add(a, "load_store missing", lambda: ps.load_store("no/such.json.gz"))
    add(a, "load_store a folder", lambda: ps.load_store(folder()))
    add(a, "load_store empty .json.gz", lambda: ps.load_store(empty_file(".json.gz")))
    add(a, "load_store garbage .json.gz", lambda: ps.load_store(garbage_file(".json.gz")))
    add(a, "load_store garbage .pt", lambda: ps.load_store(garbage_file(".pt")))

    def gz(obj):
        path = tmp("s.json.gz")
        with gzip.open(path, "wt") as fh:
            json.dump(obj, fh)
        return path

    add(a, "load_store gzip of a JSON list", lambda: ps.load_store(gz([1, 2])))
    add(a, "load_store jobs missing arrays", lambda: ps.load_store(gz({"format": ps.STORE_FORMAT, "jobs": {"k": {}}})))
    add(a, "load_store jobs a job a number", lambda: ps.load_store(gz({"format": ps.STORE_FORMAT, "jobs": {"k": 3}})))
    add(a, "PresampledModel of a dict without format", lambda: ps.PresampledModel({"jobs": {}}, "m.pt"))
    add(a, "PresampledModel missing file", lambda: ps.PresampledModel("no/such.json.gz", "m.pt"))
    store = {"format": ps.STORE_FORMAT, "jobs": {}}
    add(a, "generate a request the store lacks", lambda: ps.PresampledModel(store, "m.pt").generate(2, seed=0))
    add(a, "generate seed a string", lambda: ps.PresampledModel(store, "m.pt").generate(2, seed="0"))
    add(a, "generate num 0", lambda: ps.PresampledModel(store, "m.pt").generate(0))
    add(a, "generate num -2", lambda: ps.PresampledModel(store, "m.pt").generate(-2))
    add(a, "generate guidance nan", lambda: ps.PresampledModel(store, "m.pt").generate(
        2, conditions={"band_gap": 1.0}, guidance_scale=float("nan")))
    add(a, "generate with a formula", lambda: ps.PresampledModel(store, "m.pt").generate(2, formula="NaCl"))
    add(a, "job_by_label absent", lambda: ps.job_by_label(store, "nope"))


def _panel_probes() -> None:
    a = "panel"

    def panel(model=None):
        from mattergen_kit.widgets import GenerationPanel

        p = GenerationPanel(model or conditioned_model(), labels=[], thumbnails=False)
        p.num.value, p.steps.value, p.batch_size.value = 2, 5, 2
        return p

    def start(setup):
        def run():
            p = panel()
            setup(p)
            ok = p.start()
            if ok:
                p.wait(TIMEOUT_S - 5)
            return p, ok
        return run

    def refused(result):
        p, ok = result
        if ok:
            if p.error:
                return f"started, then failed in the thread: {p.error[:150]}"
            return "started a run"
        return "clear-error: " + p.message.value[:150] if p.message.value else "refused without a message"

    def ran(result):
        p, ok = result
        if not ok:
            return f"refused: {p.message.value[:150]}"
        if p.error:
            return f"failed in the thread: {p.error[:150]}"
        return True if len(p.results) == 2 else f"{len(p.results)} crystals"

    def setv(**values):
        def setup(p):
            for k, v in values.items():
                getattr(p, k).value = v
        return setup

    def target(name, value):
        def setup(p):
            p.targets[name].use.value = True
            if value is not None:
                p.targets[name].input.value = value
        return setup

    add(a, "num 0", start(setv(num=0)), refused)
    add(a, "num -3", start(setv(num=-3)), refused)
    add(a, "steps 1", start(setv(steps=1)), refused)
    add(a, "batch 0", start(setv(batch_size=0)), refused)
    add(a, "seed text", start(setv(seed="abc")), refused)
    add(a, "seed -1", start(setv(seed="-1")), refused)
    add(a, "seed 1e3", start(setv(seed="1e3")), refused)
    add(a, "seed 2**64", start(setv(seed=str(2**64))), refused)
    add(a, "band gap nan", start(target("band_gap", float("nan"))), refused)
    add(a, "band gap inf", start(target("band_gap", float("inf"))), refused)
    add(a, "band gap 1e9", start(target("band_gap", 1e9)), refused)
    add(a, "band gap -1", start(target("band_gap", -1.0)), refused)
    add(a, "chemical system ticked, nothing picked", start(target("chemical_system", None)), refused)
    add(a, "a target ticked at guidance 0", start(lambda p: (target("band_gap", 1.0)(p),
                                                              setattr(p.guidance, "value", 0.0))), refused)
    add(a, "valid tiny run", start(lambda p: None), ran)
    add(a, "model a missing path", lambda: panel("no/such.pt"))


# ============================================================================================== runner
def _clear_exception(exc: BaseException) -> tuple[bool, str]:
    """(raised on purpose by the kit, where): an explicit ``raise`` in mattergen_kit, or an OS error naming a path."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        return True, where
    if not isinstance(exc, (ValueError, TypeError, LookupError, OSError, RuntimeError)):
        return False, where
    if last is None or not last.filename.startswith(KIT):
        return False, where
    line = linecache.getline(last.filename, last.lineno).strip()
    return line.startswith("raise ") or " raise " in line, where


def classify(p: Probe, result: Any, exc: BaseException | None) -> tuple[str, str]:
    if isinstance(exc, Hang):
        return "HANG", f"no answer in {TIMEOUT_S} s"
    if isinstance(result, CliResult) and exc is None:
        err = result.err.strip()
        last = err.splitlines()[-1] if err else ""
        if "Traceback (most recent call last)" in result.err:
            return "TRACEBACK", last[:200]
        if p.expect == "error":
            if result.rc != 0 and "error:" in err:
                return "clear-error", next((ln for ln in err.splitlines() if "error:" in ln), last)[:200]
            if result.rc != 0:
                return "TRACEBACK", f"exit {result.rc} without an error line: {last[:150]}"
            return "SILENT-WRONG", f"exit 0: {(result.out.strip().splitlines() or [''])[-1][:150]}"
    if exc is not None:
        if p.area.endswith("-cli") or p.area in ("cli", "fetch-data", "fetch-model"):
            return "TRACEBACK", f"{type(exc).__name__} escaped cli.main: {str(exc)[:150]}"
        clear, where = _clear_exception(exc)
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0][:170] if str(exc) else ''} [{where}]"
        if not clear:
            return "TRACEBACK", text
        if p.expect == "error":
            return "clear-error", text
        return "clear-error", "(refused a valid input) " + text
    if p.expect == "error":
        return "SILENT-WRONG", f"accepted: {_describe(result)}"
    if p.expect == "ok":
        return "correct", _describe(result)
    verdict = p.expect(result)
    if isinstance(verdict, str) and verdict.startswith("clear-error: "):
        return "clear-error", verdict[len("clear-error: "):]
    if verdict is True or verdict is None:
        return "correct", _describe(result)
    if isinstance(result, CliResult) and result.rc != 0 and "error:" in result.err:
        return "clear-error", f"(refused a valid input) {verdict}"
    return "SILENT-WRONG", str(verdict)


def _describe(result) -> str:
    if isinstance(result, CliResult):
        return f"exit {result.rc}"
    if isinstance(result, tuple) and result and hasattr(result[0], "message"):
        return f"panel: {'started' if result[1] else 'refused'} {result[0].message.value[:120]}"
    if isinstance(result, list):
        return f"list of {len(result)}"
    return type(result).__name__


def build() -> None:
    _generate_cli_probes()
    _evaluate_cli_probes()
    _other_cli_probes()
    _generate_api_probes()
    _evaluate_api_probes()
    _data_probes()
    _presampled_probes()
    _panel_probes()


def _on_alarm(signum, frame):
    raise Hang()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="run the probes whose area or name contains this text")
    parser.add_argument("--json", default=None, help="also write the verdicts to this JSON file")
    args = parser.parse_args(argv)
    os.chdir(WORK)  # whatever a probe writes to a relative or default path lands in the scratch folder
    build()
    chosen = [p for p in PROBES if args.only is None or args.only in p.area or args.only in p.name]
    signal.signal(signal.SIGALRM, _on_alarm)
    counts: dict[str, int] = {}
    records = []
    for p in chosen:
        start = time.perf_counter()
        result, exc = None, None
        signal.alarm(TIMEOUT_S)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = p.call()
        except BaseException as err:  # noqa: BLE001 - every outcome is a verdict
            if isinstance(err, KeyboardInterrupt):
                raise
            exc = err
        finally:
            signal.alarm(0)
        try:
            verdict, detail = classify(p, result, exc)
        except Exception as err:  # noqa: BLE001 - a check that cannot judge the result
            verdict, detail = "SILENT-WRONG", f"check failed on the result: {err!r}"
        counts[verdict] = counts.get(verdict, 0) + 1
        seconds = time.perf_counter() - start
        print(f"{verdict:12s} {p.area:13s} {p.name}: {detail} ({seconds:.1f} s)", flush=True)
        records.append(dict(area=p.area, name=p.name, verdict=verdict, detail=detail, seconds=round(seconds, 1)))
    print(f"\n{len(chosen)} probes: " + ", ".join(f"{counts.get(v, 0)} {v}" for v in
                                                ("clear-error", "correct", "TRACEBACK", "SILENT-WRONG", "HANG")))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
