"""The package's floors hold at run time, not only at import time: every import of the package's own modules —
at module level AND inside functions — goes to the same room or down the floor order of docs/architecture.md."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mattergen_kit"

#: bottom → top; a module may import its own room and any room below it (docs/architecture.md, "Floors")
FLOORS = ["constants", "data", "datasets", "diffusion", "conditioning", "model", "sampling", "render", "outputs",
          "generation", "mattergen_models", "presampled", "training", "cluster", "evaluation", "widgets", "studies", "cli",
          "__init__"]


def room_of_file(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if rel.parts == ("__init__.py",):
        return "__init__"
    return rel.parts[0].removesuffix(".py")


def imported_rooms(path: Path):
    """(room imported, line, at module level?) for every import of mattergen_kit.* in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "mattergen_kit":
                names = [f"mattergen_kit.{a.name}" for a in node.names]
            else:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] != "mattergen_kit":
                continue
            room = parts[1] if len(parts) > 1 else "__init__"
            if not (PACKAGE / room).is_dir() and not (PACKAGE / f"{room}.py").is_file():
                room = "__init__"  # a name re-exported by the package itself (mk.load_model ...)
            yield room, node.lineno, id(node) in top_level


def test_every_room_has_a_floor():
    rooms = {room_of_file(p) for p in PACKAGE.rglob("*.py")}
    missing = sorted(rooms - set(FLOORS))
    assert not missing, f"place {missing} in FLOORS here and in docs/architecture.md"


def test_imports_go_down_the_floors_including_function_level_imports():
    upward = []
    counted = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        here = room_of_file(path)
        for room, line, top in imported_rooms(path):
            counted += 1
            if room not in FLOORS or here not in FLOORS:
                continue  # test_every_room_has_a_floor reports it
            if FLOORS.index(room) > FLOORS.index(here):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({here} → {room}, "
                              f"{'module level' if top else 'inside a function'})")
    assert counted > 100  # the scan sees the package's imports
    assert not upward, "imports up the floors:\n" + "\n".join(upward)


def test_the_architecture_doc_lists_the_same_floors():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    line = next(ln for ln in doc.splitlines() if ln.startswith("Floors, bottom to top:"))
    assert [x.strip(" `.") for x in line.split(":", 1)[1].split("→")] == FLOORS
