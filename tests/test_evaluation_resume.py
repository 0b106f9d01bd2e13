"""Long work writes per-structure results as it goes and resumes after an interrupt; map_fn is pluggable."""

import json
import warnings

import pytest

from mattergen_kit.evaluation import evaluate
from mattergen_kit.evaluation.relax import RelaxSettings, relax_structures


@pytest.fixture(scope="module")
def small():
    from mattergen_kit.evaluation.reference import bundled

    te = bundled("test")
    idx = [i for i, s in enumerate(te.structures) if len(s) <= 4][:4]
    out = []
    for i in idx:
        s = te.structures[i].copy()
        s.perturb(0.05, min_distance=0.0)  # something to relax
        out.append(s)
    return out


class Stop(KeyboardInterrupt):
    pass


def test_interrupt_then_resume_computes_only_the_rest(small, tmp_path):
    settings = RelaxSettings(steps=10)
    store = tmp_path / "relaxed.jsonl"

    def stop_after_two(k, result):
        if k == 2:
            raise Stop()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(KeyboardInterrupt):
            relax_structures(small, settings, store=store, progress=False, callback=stop_after_two)
        lines = [json.loads(x) for x in store.read_text().splitlines()]
        assert len(lines) == 2  # written as they were finished

        with open(store, "a") as f:  # a line cut by a hard kill is ignored
            f.write('{"index": 3, "key": "trunc')
        seen = []
        results = relax_structures(small, settings, store=store, progress=False,
                                   callback=lambda k, r: seen.append(r["index"]))
    assert sorted(seen) == [2, 3]  # only the unfinished structures were computed
    assert all(r is not None and r["ok"] for r in results)
    assert [r["index"] for r in results] == [0, 1, 2, 3]


def test_evaluate_resumes_from_out_folder_and_uses_map_fn(small, tmp_path):
    calls = []

    def my_map(func, items):
        items = list(items)
        calls.append(len(items))
        return map(func, items)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def stop(k, r):
            raise Stop()

        with pytest.raises(KeyboardInterrupt):
            evaluate(small[:3], reference=None, relax=True, steps=10, out=tmp_path, map_fn=my_map,
                     distribution=False, properties=False, progress=False, callback=stop, batch_size=1)
        rep = evaluate(small[:3], reference=None, relax=True, steps=10, out=tmp_path, map_fn=my_map,
                       distribution=False, properties=False, progress=False, batch_size=1)
    assert calls == [3, 2]  # one task per structure; the second run only maps the two unfinished structures
    assert rep.per_structure["relaxed"].all()
    assert rep.summary["rmsd"] is not None and rep.summary["rmsd"] >= 0
    assert (tmp_path / "summary.json").exists()


def test_default_relaxation_is_batched_chgnet_and_a_map_gets_chunks(small, tmp_path):
    from mattergen_kit.evaluation.evaluate import EvaluationSettings
    from mattergen_kit.evaluation.relax import chunk_size

    assert EvaluationSettings().batch_size == 32                      # CHGNet: batched by default
    assert EvaluationSettings(model="sevennet").batch_size == 1       # SevenNet: one at a time
    # tasks of at most batch_size, at least 8 of them where there are enough structures, never below 8 structures
    assert [chunk_size(n, 32) for n in (1000, 100, 16, 3)] == [32, 13, 8, 8]
    assert chunk_size(16, 4) == 4
    calls = []

    def my_map(func, items):
        items = list(items)
        calls.append([len(chunk) for chunk in items])
        return map(func, items)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = evaluate(small[:3], reference=None, relax=True, steps=10, out=tmp_path, map_fn=my_map,
                       distribution=False, properties=False, progress=False)
    assert calls == [[3]]                                             # one task relaxing the three together
    assert rep.per_structure["relaxed"].all()
    assert len((tmp_path / "relaxed.jsonl").read_text().splitlines()) == 3
