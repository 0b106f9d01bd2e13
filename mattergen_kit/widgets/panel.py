"""The generation / guidance panel: steer a model toward property targets and watch the crystals arrive.

>>> import mattergen_kit as mk
>>> from mattergen_kit.widgets import GenerationPanel
>>> panel = GenerationPanel(mk.load_model("runs/conditioned/model.pt"))   # doctest: +SKIP
>>> panel                                      # doctest: +SKIP

What it holds (all ipywidgets, reachable as attributes so that scripts and tests can drive it):

* ``guidance`` (γ slider) and ``targets`` ({property: :class:`TargetInput`}), built from the model's own
  property list (``model.property_specs``: the adapter's specs stored in a conditioned checkpoint). A chemical
  system is an element picker, a space group a selector "225 Fm-3m", scalars a number with its unit. A model
  without conditioning hides the targets and disables γ (it says so in ``note``).
* ``num``, ``sampler`` (few-step, the kit's default, or MatterGen's reference; choosing one sets its usual
  ``steps``), ``steps``, ``batch_size``, ``seed`` (blank = random), ``elements`` (restrict the sampled elements,
  any model), ``generate_button``, ``stop_button``, ``progress`` (sampler steps done), ``status``, ``message``
  (errors of the inputs or of ``generate``, as text, never a traceback).
* Generation runs in a background thread (the kernel stays free); crystals arrive batch by batch
  (``GenerativeModel.iter_batches``) into ``gallery`` — one card per crystal: formula, space group (spglib,
  symprec 0.1), number of atoms, structural / SMACT validity, HHI and, for a chemical-system target, whether the
  crystal is in the system. Clicking a card's button shows the crystal in ``viewer`` (the offline canvas
  view with its static PNG); ``trajectory_button`` then plays its denoising trajectory (``player``). ``plot`` compares the batch's values of the plotted property (``plot_property``)
  with the training labels and marks the target.
* ``stop_button`` stops after the current sampler step. ``wait()`` joins the thread (scripts, tests).
"""

from __future__ import annotations

import io
import math
import threading
import time
from functools import lru_cache

import ipywidgets as w
import numpy as np

from mattergen_kit.render import crystal_png
from mattergen_kit.sampling.few_step import choose_sampler, sampler_steps
from mattergen_kit.sampling.request import ResolvedRequest, SamplingRequest
from mattergen_kit.widgets.player import show_in
from mattergen_kit.widgets.viewer import CrystalView

#: properties whose value on a generated crystal is cheap and exact (no ML model): computed for every crystal
CHEAP_PROPERTIES = ("space_group", "hhi_production", "num_atoms")


class _Stopped(Exception):
    """Raised inside the sampler's step callback when Stop was pressed."""


@lru_cache(maxsize=1)
def space_group_symbols() -> dict[int, str]:
    """{number: Hermann–Mauguin short symbol} of the 230 space groups (spglib's table)."""
    import warnings

    import spglib

    out: dict[int, str] = {}
    for hall in range(1, 531):
        with warnings.catch_warnings():  # spglib 2.x: a DeprecationWarning about its error handling per call
            warnings.simplefilter("ignore", DeprecationWarning)
            sg = spglib.get_spacegroup_type(hall)
        number = sg.number if hasattr(sg, "number") else sg["number"]
        out.setdefault(int(number), sg.international_short if hasattr(sg, "international_short")
                       else sg["international_short"])
    return out


_TRAINING_LABELS = None
_LABELS_LOCK = threading.Lock()


def training_labels():
    """The bundled crystals' labels (``conditioning.labels.all_labels``) of the train split, read once."""
    global _TRAINING_LABELS
    if _TRAINING_LABELS is None:
        from mattergen_kit.conditioning.labels import all_labels

        table = all_labels()
        _TRAINING_LABELS = table[table["split"] == "train"].reset_index(drop=True)
    return _TRAINING_LABELS


def _generable_symbols() -> list[str]:
    from pymatgen.core import Element

    from mattergen_kit.diffusion.atom_types import ALLOWED_Z

    return [Element.from_Z(int(z)).symbol for z in ALLOWED_Z]


class TargetInput(w.HBox):
    """One property target: a ``use`` checkbox and the value input matching the property's kind.

    ``value()`` is None when unticked, else the value to pass in ``conditions`` (a chemical system as "A-B-C").
    """

    def __init__(self, spec):
        self.spec = spec
        unit = f" [{spec.unit}]" if spec.unit else ""
        self.use = w.Checkbox(value=False, description=f"{spec.name}{unit}", indent=False,
                              layout=w.Layout(width="250px"), tooltip=spec.description)
        if spec.kind == "chemical_system":
            self.input = w.TagsInput(value=[], allowed_tags=_generable_symbols(), allow_duplicates=False,
                                     placeholder="elements, e.g. Li Fe P O")
        elif spec.kind == "categorical":
            if spec.name == "space_group":
                symbols = space_group_symbols()
                options = [(f"{c} {symbols.get(int(c), '')}".strip(), c) for c in spec.categories]
            else:
                options = [(str(c), c) for c in spec.categories]
            default = 225 if spec.name == "space_group" and 225 in spec.categories else options[0][1]
            self.input = w.Dropdown(options=options, value=default, layout=w.Layout(width="160px"))
        else:
            self.input = w.FloatText(value=_default_value(spec), layout=w.Layout(width="120px"))
        super().__init__([self.use, self.input])

    def value(self):
        if not self.use.value:
            return None
        if self.spec.kind == "chemical_system":
            if not self.input.value:
                raise ValueError(f"{self.spec.name}: pick at least one element (or untick it)")
            return "-".join(self.input.value)
        return self.input.value


def _default_value(spec) -> float:
    """A typical value of a scalar property: the training mean (back from log10), rounded; else 0 / low."""
    if spec.mean is not None:
        v = 10 ** spec.mean if spec.log10 else spec.mean
        if spec.low is not None:
            v = max(v, spec.low)
        return float(f"{v:.3g}")
    return float(spec.low or 0.0) + (1.0 if spec.low_open else 0.0)


class GenerationPanel(w.VBox):
    """Guidance panel for ``model`` (a ``GenerativeModel``, a checkpoint path, or None = the conditioned bundled
    model ``mp_bundled_20_conditioned.npz``; ``mk.load_model()`` gives the unconditional base);
    see the module docstring. ``labels``: training labels to plot against (default: the bundled train split,
    read on first plot); ``thumbnails``: draw a small picture on every card."""

    def __init__(self, model=None, labels=None, thumbnails: bool = True):
        from mattergen_kit.generation import GenerativeModel, load_model

        if model is None:  # the conditioned bundled model: steerable by all its properties, unconditional without
            from mattergen_kit.generation import BUNDLED_CONDITIONED_CHECKPOINT

            model = BUNDLED_CONDITIONED_CHECKPOINT
        self.model = model if isinstance(model, GenerativeModel) else load_model(model)
        self._labels = labels
        if labels is None and _TRAINING_LABELS is None:  # read the table (tens of seconds on a busy CPU) while
            threading.Thread(target=self._prefetch_labels, daemon=True).start()  # the user sets the targets
        self.thumbnails = thumbnails
        self.specs = self.model.property_specs
        self.results: list[dict] = []
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._request: SamplingRequest | None = None
        self._resolved: ResolvedRequest | None = None
        self.selected: int | None = None

        conditioned = bool(self.specs)
        self.guidance = w.FloatSlider(value=2.0 if conditioned else 0.0, min=0.0, max=6.0, step=0.25,
                                      description="guidance γ", disabled=not conditioned, continuous_update=False)
        self.targets = {name: TargetInput(spec) for name, spec in self.specs.items()}
        names = ", ".join(self.specs) if conditioned else ""
        self.note = w.HTML(f"<b>Targets</b> (this model was trained on: {names}); tick the ones to steer toward."
                           if conditioned else "<i>This model has no property conditioning (a base model): property "
                                               "targets are hidden and guidance is off. Load a conditioned checkpoint "
                                               "(e.g. from mattergen_kit.finetune) to steer.</i>")
        self.targets_box = w.VBox(list(self.targets.values()),
                                  layout=w.Layout(display=None if conditioned else "none"))
        self.num = w.IntText(value=8, description="crystals", layout=w.Layout(width="180px"))
        # the kit's default sampler for this model (few-step, FAST_STEPS steps; a MatterGen port: the reference);
        # choosing the other sampler sets its usual number of steps (the reference: the model's recommended 1000)
        default = choose_sampler(None, None, self.model.meta)
        self.sampler = w.Dropdown(options=[("few-step", "fast"), ("reference (MatterGen)", "reference")],
                                  value=default, description="sampler", layout=w.Layout(width="260px"))
        self.steps = w.IntText(value=sampler_steps(default, None, self.model.meta), description="steps",
                               layout=w.Layout(width="180px"))
        self.sampler.observe(lambda change: setattr(self.steps, "value",
                                                    sampler_steps(change["new"], None, self.model.meta)), names="value")
        self.batch_size = w.IntText(value=4, description="batch", layout=w.Layout(width="180px"))
        self.seed = w.Text(value="0", description="seed", placeholder="blank = random", layout=w.Layout(width="180px"))
        self.elements = w.TagsInput(value=[], allowed_tags=_generable_symbols(), allow_duplicates=False,
                                    placeholder="restrict elements (optional)")
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="sampling", bar_style="info")
        self.status = w.Label("")
        self.message = w.HTML("")
        self.gallery = w.GridBox([], layout=w.Layout(grid_template_columns="repeat(auto-fill, 190px)",
                                                     grid_gap="6px", width="100%"))
        self.viewer = w.Output(layout=w.Layout(min_height="330px", border="1px solid #eee"))
        self.trajectory_button = w.Button(description="play its denoising", icon="film", disabled=True,
                                          layout=w.Layout(width="200px"),
                                          tooltip="the selected crystal's denoising trajectory (every ~5% of the steps)")
        self.trajectory_button.on_click(lambda _: self.play_trajectory())
        self.player = None
        self.plot_property = w.Dropdown(options=self._plot_options(), description="plot",
                                        layout=w.Layout(width="260px"))
        self.plot = w.Image(format="png", layout=w.Layout(width="380px"))
        self.plot_property.observe(lambda _: self._update_plot(), names="value")
        self.generate_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())

        controls = w.VBox([w.HBox([self.num, self.sampler, self.steps, self.batch_size, self.seed]),
                           w.HBox([self.guidance, self.elements])])
        run = w.HBox([self.generate_button, self.stop_button, self.progress, self.status])
        right = w.VBox([self.viewer, self.trajectory_button, self.plot_property, self.plot])
        super().__init__([self.note, self.targets_box, controls, run, self.message,
                          w.HBox([w.VBox([self.gallery], layout=w.Layout(width="60%")), right])])

    # ------------------------------------------------------------------ inputs
    def _plot_options(self) -> list[tuple[str, str]]:
        names = [n for n in self.specs if n != "chemical_system"]
        names += [n for n in ("hhi_production", "space_group", "num_atoms") if n not in names]
        return [(n, n) for n in names]

    def conditions(self) -> dict:
        """{property: value} of the ticked targets (``ValueError`` for an incomplete one)."""
        out = {}
        for name, target in self.targets.items():
            value = target.value()
            if value is not None:
                out[name] = value
        return out

    def request(self) -> SamplingRequest:
        """The :class:`SamplingRequest` the inputs ask for, resolved against the model once (``_resolved``);
        ``ValueError`` with a message for bad inputs (also everything the model checks before sampling: ranges,
        elements, conditions). γ = 0 with ticked targets is refused here (the API warns instead)."""
        seed_text = self.seed.value.strip()
        try:
            seed = int(seed_text) if seed_text else None
        except ValueError:
            raise ValueError(f"seed must be a whole number (or blank for a random one), got {seed_text!r}") from None
        conditions = self.conditions()
        gamma = float(self.guidance.value) if self.specs else 0.0
        if self.specs and conditions and gamma == 0:
            raise ValueError("guidance γ = 0 ignores the targets: raise γ (1 = conditional model, 2 is typical) "
                             "or untick the targets")
        if self.specs and not conditions:
            gamma = 0.0  # nothing ticked: the unconditional branch
        for name, low in (("crystals", self.num), ("steps", self.steps), ("batch", self.batch_size)):
            if low.value < (2 if name == "steps" else 1):
                raise ValueError(f"{name} must be at least {2 if name == 'steps' else 1}, got {low.value}")
        steps = int(self.steps.value)
        request = SamplingRequest(int(self.num.value), seed=seed, steps=steps, sampler=self.sampler.value,
                                  batch_size=int(self.batch_size.value),
                                  conditions=conditions or None, guidance_scale=gamma,
                                  allowed_elements=list(self.elements.value) or None, progress=False,
                                  trajectory_every=max(1, steps // 20))  # ~20 frames per crystal, CPU tensors: light
        self._resolved = request.resolve(self.model)  # ranges, elements, properties: checked once
        return request

    # ------------------------------------------------------------------ run
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """What the Generate button does: check the inputs, then sample in a background thread. Returns False
        (with the reason in ``message``) when the inputs are bad or a run is already going."""
        if self.running:
            self._say("a generation is already running: press Stop first", error=True)
            return False
        try:
            request = self.request()
        except Exception as err:  # noqa: BLE001 - every input problem becomes a message, not a traceback
            self._say(str(err), error=True)
            return False
        self.results = []
        self.gallery.children = ()
        self.error = None
        self._say("")
        self._stop.clear()
        self.progress.max, self.progress.value, self.progress.bar_style = request.num * request.steps, 0, "info"
        self.status.value = f"sampling 0/{request.num} crystals"
        self.generate_button.disabled, self.stop_button.disabled = True, False
        self._request = request
        self._thread = threading.Thread(target=self._run, args=(self._resolved,), name="mattergen-kit-panel",
                                        daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """What the Stop button does: the sampler stops after its current step; finished crystals stay."""
        self._stop.set()
        self.status.value = "stopping…"

    def wait(self, timeout: float | None = None) -> bool:
        """Join the generation thread; True when it has finished."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _on_step(self, step: int, num_steps: int) -> None:
        self.progress.value = min(self.progress.max, self.progress.value + 1)
        if self._stop.is_set():
            raise _Stopped

    def _run(self, resolved: ResolvedRequest) -> None:
        t0 = time.perf_counter()
        done, how = 0, "done"
        try:
            for part in self.model.iter_batches(resolved, step_callback=self._on_step):
                for j, structure in enumerate(part.batch.to_structures()):
                    self._add(structure, (part.trajectory, j))
                done += part.batch.num_crystals
                self.status.value = f"sampling {done}/{resolved.num} crystals ({time.perf_counter() - t0:.0f} s)"
                self._update_plot()
        except _Stopped:
            how = "stopped"
        except Exception as err:  # noqa: BLE001 - shown in the panel, not as a traceback in the thread
            how = "failed"
            self.error = f"{type(err).__name__}: {err}"
            self._say(f"generation failed: {err}", error=True)
        finally:
            self.generate_button.disabled, self.stop_button.disabled = False, True
            self.progress.bar_style = {"done": "success", "stopped": "warning"}.get(how, "danger")
            self.status.value = f"{how}: {done}/{resolved.num} crystals in {time.perf_counter() - t0:.1f} s"

    # ------------------------------------------------------------------ results
    def _add(self, structure, trajectory=None) -> None:
        row = describe(structure, self._request.conditions if self._request else None)
        row["trajectory"] = trajectory  # (DenoisingTrajectory of its batch, index in the batch)
        k = len(self.results)
        row["index"] = k
        self.results.append(row)
        self.gallery.children = (*self.gallery.children, self._card(row))

    def _card(self, row: dict) -> w.VBox:
        button = w.Button(description=f"{row['index']}: {row['formula']}", tooltip="show in 3D",
                          layout=w.Layout(width="180px"))
        button.on_click(lambda _, k=row["index"]: self.select(k))
        flags = (f"{'✓' if row['structural_valid'] else '✗'} struct · "
                 f"{'✓' if row['smact_valid'] else '✗' if row['smact_valid'] is not None else '?'} SMACT")
        lines = [f"SG {row['space_group']} {row['space_group_symbol']} · {row['num_atoms']} atoms", flags,
                 f"HHI {row['hhi_production']:.0f}" if np.isfinite(row["hhi_production"]) else "HHI n/a"]
        if "in_chemical_system" in row:
            lines.append(f"in system: {'yes' if row['in_chemical_system'] else 'no'}")
        children = [button, w.HTML('<span style="font-size:11px">' + "<br>".join(lines) + "</span>")]
        if self.thumbnails:
            png = crystal_png(row["structure"], size=(1.8, 1.6), dpi=90, title="", legend=False, labels=False)
            children.insert(1, w.Image(value=png, format="png", layout=w.Layout(width="170px")))
        card = w.VBox(children, layout=w.Layout(border="1px solid #ddd", padding="2px", width="188px",
                                                overflow="hidden"))
        card.button = button
        return card

    def select(self, k: int) -> None:
        """Show crystal ``k`` of the gallery in the 3D viewer (what its card's button does)."""
        self.selected = k
        show_in(self.viewer, CrystalView(self.results[k]["structure"]))
        self.trajectory_button.disabled = self.results[k].get("trajectory") is None

    def play_trajectory(self) -> None:
        """Show the selected crystal's denoising trajectory player in the viewer (the film button)."""
        from mattergen_kit.widgets.player import TrajectoryPlayer

        if self.selected is None or self.results[self.selected].get("trajectory") is None:
            self._say("select a crystal first (its button in the gallery)", error=True)
            return
        traj, j = self.results[self.selected]["trajectory"]
        self.player = TrajectoryPlayer(traj, index=j, width=360, height=300)
        show_in(self.viewer, self.player)

    @property
    def structures(self) -> list:
        return [row["structure"] for row in self.results]

    def _say(self, text: str, error: bool = False) -> None:
        import html

        self.message.value = (f'<span style="color:#b00020">⚠ {html.escape(text)}</span>' if error and text
                              else html.escape(text))

    # ------------------------------------------------------------------ plot
    def _prefetch_labels(self) -> None:
        try:
            self.labels()
        except Exception:  # noqa: BLE001 - the plot reads them again and names the problem in its title
            pass

    def labels(self):
        """The training labels the plot compares with (the bundled train split unless given)."""
        if self._labels is None:
            with _LABELS_LOCK:  # the prefetch thread may be reading them already
                self._labels = training_labels()
        return self._labels

    def _update_plot(self) -> None:
        try:
            self.plot.value = self.figure_png(self.plot_property.value)
        except Exception as err:  # noqa: BLE001 - a plot problem must not end the generation
            self._say(f"plot not drawn: {err}", error=True)

    def figure_png(self, name: str) -> bytes:
        """PNG of property ``name``: training-set histogram (density), this batch's values and the target."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        batch = np.array([row.get(name, np.nan) for row in self.results], dtype=float)
        batch = batch[np.isfinite(batch)]
        target = ((self._request.conditions if self._request else None) or {}).get(name)
        fig = Figure(figsize=(3.8, 2.4), dpi=90)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        train = np.array([])
        note = ""
        try:
            table = self.labels()
            if name in table.columns:
                train = table[name].to_numpy(dtype=float)
                train = train[np.isfinite(train)]
            else:
                note = "no training labels"
        except Exception as err:  # noqa: BLE001 - e.g. an install without the bundled label table
            note = f"training labels unavailable ({type(err).__name__})"
        both = np.concatenate([train, batch, [] if target is None else [float(target)]])
        if name == "space_group":
            bins = np.arange(0.5, 231.5, 5.0)
        elif name == "num_atoms":
            bins = np.arange(0.5, (both.max() if both.size else 20) + 1.5)
        else:
            bins = np.histogram_bin_edges(both, 30) if both.size else 30
        if train.size:
            ax.hist(train, bins=bins, density=True, color="0.75", label=f"training ({train.size})")
        if batch.size:
            ax.hist(batch, bins=bins, density=True, alpha=0.6, color="tab:blue", label=f"generated ({batch.size})")
        elif name not in CHEAP_PROPERTIES:
            note = (note + "; " if note else "") + "no cheap predictor for generated crystals"
        if target is not None:
            ax.axvline(float(target), color="tab:red", lw=2, label=f"target {target}")
        ax.set_xlabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
        if note:
            ax.set_title(note, fontsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()


def describe(structure, conditions: dict | None = None) -> dict:
    """The gallery row of one generated crystal: formula, space group (spglib, symprec 0.1) and its symbol,
    number of atoms, structural and SMACT validity (None when SMACT is not installed), HHI (exact), and for a
    chemical-system target whether the crystal's elements lie in it."""
    from mattergen_kit.data.parsing import hhi, spacegroup_number
    from mattergen_kit.evaluation.validity import structural_validity

    comp = structure.composition
    sg = spacegroup_number(structure, symprec=0.1)
    try:
        import smact  # noqa: F401

        from mattergen_kit.evaluation.validity import smact_validity

        smact_ok = bool(smact_validity(comp))
    except ImportError:
        smact_ok = None
    ok, _ = structural_validity(structure)
    row = {"structure": structure, "formula": comp.reduced_formula, "space_group": sg,
           "space_group_symbol": space_group_symbols().get(sg, "?"), "num_atoms": len(structure),
           "structural_valid": bool(ok), "smact_valid": smact_ok, "hhi_production": hhi(comp)[0]}
    system = (conditions or {}).get("chemical_system")
    if isinstance(system, str):
        row["in_chemical_system"] = {el.symbol for el in comp.elements} <= set(system.split("-"))
    if not math.isfinite(row["hhi_production"]):
        row["hhi_production"] = float("nan")
    return row
