"""Issue 24: no code runs from a file the kit reads (planted Lightning checkpoints, monty class dispatch in JSON)."""

from __future__ import annotations

import builtins
import gzip
import json
import re
import sys
import uuid
from pathlib import Path

import pytest
import torch

from mattergen_kit import cli, datasets
from mattergen_kit.data import materials_project
from mattergen_kit.data.safe_json import UntrustedJSONError, structure_from_dict
from mattergen_kit.model.checkpoint import CheckpointError, load_checkpoint
from mattergen_kit.training import export_lightning_checkpoint, train
from mattergen_kit.training.fit import build_trainer
from mattergen_kit.training.lightning_checkpoint import load_lightning_checkpoint
from mattergen_kit.training.module import DiffusionModule

sys.path.insert(0, str(Path(__file__).parent))
from test_training_resume import config as tiny_config, datamodule as tiny_datamodule  # noqa: E402

PACKAGE = Path(__file__).resolve().parent.parent / "mattergen_kit"


class Payload:
    """Unpickling this calls builtins.open(marker, "w"): the marker file appears iff code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {}, "adapter": Payload(marker)}, "global_step": 5},
               path)
    return path


def test_train_refuses_a_planted_last_ckpt(tmp_path):
    marker = tmp_path / "pwned"
    cfg = tiny_config(str(tmp_path / "run"))
    plant(tmp_path / "run" / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match=r"last\.ckpt names objects that could run code.*\bio\.open"):
        train(cfg, datamodule=tiny_datamodule(cfg))
    assert not marker.exists()


def test_lightning_resume_itself_reads_through_the_allow_list(tmp_path):
    """trainer.fit(ckpt_path=...) of the kit's Trainer (not only train()'s early check) refuses the file."""
    marker = tmp_path / "pwned"
    cfg = tiny_config(str(tmp_path / "run"))
    planted = plant(tmp_path / "elsewhere.ckpt", marker)
    trainer = build_trainer(cfg)
    with pytest.raises(CheckpointError, match="could run code"):
        trainer.fit(DiffusionModule(cfg), datamodule=tiny_datamodule(cfg), ckpt_path=str(planted))
    assert not marker.exists()


def test_cli_train_and_finetune_refuse_a_planted_last_ckpt(tmp_path, capsys):
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    plant(run_dir / "checkpoints" / "last.ckpt", marker)
    code = cli.main(["train", "--config", "configs/tiny_test.yaml", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "could run code" in err[0], err
    assert not marker.exists()


def test_export_refuses_a_planted_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    planted = plant(tmp_path / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match="could run code"):
        export_lightning_checkpoint(planted, tmp_path / "model.pt")
    assert not marker.exists() and not (tmp_path / "model.pt").exists()


@pytest.mark.timeout(240)
def test_a_kit_written_checkpoint_loads_resumes_and_exports(tmp_path):
    """The allow-list is wide enough for the kit's own files: a real run resumes and exports through it."""
    cfg = tiny_config(str(tmp_path / "run"))
    cfg.max_steps = 10
    train(cfg, datamodule=tiny_datamodule(cfg))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    raw = load_lightning_checkpoint(last)
    assert raw["global_step"] == 10 and raw["hyper_parameters"]["config"]["run_dir"] == cfg.run_dir
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(last)) == []  # what the allow-list was sized on
    out = export_lightning_checkpoint(last, tmp_path / "model.pt")
    assert load_checkpoint(out)["meta"]["global_step"] == 10
    cfg.max_steps = 12  # resume: through trainer.fit(ckpt_path=last) and the allow-list IO
    path = train(cfg, datamodule=tiny_datamodule(cfg))
    assert load_checkpoint(path)["meta"]["global_step"] == 12


def test_no_weights_only_false_anywhere_in_the_package():
    """Static: every torch.load in mattergen_kit/ says weights_only=True; weights_only=False appears nowhere."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(PACKAGE).as_posix()
        if re.search(r"weights_only\s*=\s*False", text):
            found.append(f"{rel}: weights_only=False")
        for call in re.findall(r"torch\.load\(([^)]*)\)", text):
            if not re.search(r"weights_only\s*=\s*True", call):
                found.append(f"{rel}: torch.load({call})")
    assert not found, found


# ------------------------------------------------------------------------------------------ monty class dispatch
@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    """An importable module (as a stray .py in the working folder would be) whose import writes a marker file."""
    name = f"planted_{uuid.uuid4().hex[:10]}"
    marker = tmp_path / "imported"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                                  "class Thing:\n    @classmethod\n"
                                                  "    def from_dict(cls, d):\n        return cls()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    yield name, marker
    sys.modules.pop(name, None)


def with_dispatch(structure, module: str, cls: str = "Thing") -> dict:
    """A real structure's dict with a monty entry planted in the first site's properties."""
    d = structure.as_dict()
    d["sites"][0]["properties"] = {"note": {"@module": module, "@class": cls}}
    return d


def test_the_planted_entry_really_imports_through_plain_from_dict(real_structures, planted_module):
    """Control: without the safe reader pymatgen imports the module the file names (so the tests below can fail)."""
    from pymatgen.core import Structure

    name, marker = planted_module
    Structure.from_dict(with_dispatch(real_structures[0], name))
    assert marker.exists() and name in sys.modules


@pytest.mark.parametrize("entry", [{"@module": "os", "@class": "system"}, {"@module": "PLANTED", "@class": "Thing"},
                                   {"@module": "subprocess", "@callable": "run"},
                                   {"@module": "pymatgen.io.vasp.inputs", "@class": "Potcar"}])
def test_safe_reader_refuses_foreign_classes(real_structures, planted_module, entry):
    name, marker = planted_module
    d = real_structures[0].as_dict()
    d["sites"][0]["properties"] = {"x": {k: (name if v == "PLANTED" else v) for k, v in entry.items()}}
    with pytest.raises(UntrustedJSONError, match=r"/sites/0/properties/x names .*may not choose a module"):
        structure_from_dict(d, "test.json")
    assert not marker.exists() and name not in sys.modules


def test_safe_reader_reads_pymatgen_dicts_and_numpy_properties(real_structures):
    import numpy as np
    from monty.json import MontyEncoder

    s = real_structures[1].copy()
    s.add_site_property("magmom", [0.5] * len(s))
    s.add_site_property("forces", [np.array([0.1, 0.2, 0.3])] * len(s))  # monty writes {"@module": "numpy", ...}
    d = json.loads(json.dumps(s.as_dict(), cls=MontyEncoder))
    back = structure_from_dict(d)
    assert back == s and np.allclose(back.site_properties["forces"][0], [0.1, 0.2, 0.3])


def test_materials_project_cache_with_a_planted_entry_is_a_counted_skip(tmp_path, monkeypatch, real_rows,
                                                                         real_structures, planted_module):
    name, marker = planted_module
    monkeypatch.setenv("MATTERGEN_KIT_CACHE", str(tmp_path / "cache"))
    endpoint = "http://127.0.0.1:9/"
    crit = {"elements": ["Mg"], "num_sites": (1, 20), "energy_above_hull": (0.0, 0.1)}
    docs = [{"material_id": f"mp-{k}", "structure": s.as_dict(), "band_gap": float(r.band_gap)}
            for k, (s, r) in enumerate(zip(real_structures[:3], real_rows.itertuples()))]
    docs[1]["structure"] = with_dispatch(real_structures[1], name)
    cache = tmp_path / "cache" / "materials_project" / f"{materials_project._query_key(endpoint, crit)}.json.gz"
    cache.parent.mkdir(parents=True)
    with gzip.open(cache, "wt") as f:
        json.dump({"data": docs}, f)
    ds = datasets.load_materials_project(elements=["Mg"], endpoint=endpoint, workers=1, progress=False)
    assert list(ds.properties.material_id) == ["mp-0", "mp-2"]
    skip, = [s for s in ds.report.skipped if s.material_id == "mp-1"]
    assert "may not choose a module" in skip.reason
    assert not marker.exists() and name not in sys.modules


def test_alexandria_entry_with_a_planted_module_is_a_counted_skip(tmp_path, real_rows, real_structures,
                                                                    planted_module):
    name, marker = planted_module
    entries = [{"energy": -5.0 * len(s), "correction": 0.0, "entry_id": f"agm{k:09d}", "structure": s.as_dict(),
                "data": {"e_above_hull": 0.0, "mat_id": f"agm{k:09d}"}} for k, s in enumerate(real_structures[:3])]
    entries[2]["structure"] = with_dispatch(real_structures[2], name)
    path = tmp_path / "alexandria_000.json"
    path.write_text(json.dumps({"entries": entries}))
    ds = datasets.load_alexandria(path, max_atoms=None, e_above_hull_max=None, workers=1, progress=False)
    assert list(ds.properties.material_id) == ["agm000000000", "agm000000001"]
    assert any("may not choose a module" in s.reason for s in ds.report.skipped)
    assert not marker.exists() and name not in sys.modules


MONTY_DISPATCH = re.compile(r"MontyDecoder|loadfn|process_decoded|(?<![\w.])I?Structure\.from_dict\(")
#: where a Structure dict is rebuilt from one the same process (or its own Dask worker) just made with as_dict():
#: never a file. Every other Structure.from_dict goes through data/safe_json.py.
IN_MEMORY_FROM_DICT = {"evaluation/relax.py", "evaluation/relax_batched.py", "evaluation/calibrate.py",
                       "evaluation/distribution.py"}


def test_no_monty_class_dispatch_outside_the_safe_reader():
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "data/safe_json.py":
            continue
        for match in MONTY_DISPATCH.finditer(path.read_text()):
            if match.group(0).startswith(("MontyDecoder", "loadfn", "process_decoded")) or rel not in IN_MEMORY_FROM_DICT:
                found.append(f"{rel}: {match.group(0)}")
    assert not found, found


def test_evaluate_json_input_with_a_planted_module_is_a_parse_error(tmp_path, real_structures, planted_module):
    from mattergen_kit.evaluation.inputs import load_structures

    name, marker = planted_module
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json").write_text(json.dumps(real_structures[0].as_dict()))
    (tmp_path / "in" / "b.json").write_text(json.dumps(with_dispatch(real_structures[1], name)))
    structures, names, errors = load_structures(tmp_path / "in")
    assert names == ["a.json", "b.json"] and errors[0] == "" and structures[1] is None
    assert "may not choose a module" in errors[1]
    assert not marker.exists() and name not in sys.modules


def test_evaluate_refuses_a_planted_relaxed_jsonl_record(tmp_path, real_structures, planted_module):
    """A resumed evaluate reads out/relaxed.jsonl back: a record naming a module is refused, nothing imported."""
    from mattergen_kit.evaluation.relax import RelaxSettings, structure_key
    from mattergen_kit.evaluation.stages import EvaluationSettings, relaxation_stage

    name, marker = planted_module
    settings = EvaluationSettings(out=tmp_path, progress=False)
    s = real_structures[0]
    key = structure_key(s, dict(RelaxSettings(model=settings.model, device=settings.device, fmax=settings.fmax,
                                              steps=settings.steps, torch_threads=settings.torch_threads)))
    record = {"key": key, "ok": True, "error": "", "n_steps": 3, "converged": True, "seconds": 0.1, "energy": -10.0,
              "energy_per_atom": -1.0, "rmsd": 0.0, "rmsd_matched": True, "relaxed": with_dispatch(s, name)}
    (tmp_path / "relaxed.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(UntrustedJSONError, match="relaxed.jsonl: .*may not choose a module"):
        relaxation_stage([{}], [s], [True], settings)
    assert not marker.exists() and name not in sys.modules
