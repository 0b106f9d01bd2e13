"""The two install routes (pip via pyproject.toml, conda via environment.yml) ask for the same packages."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {r.strip() for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    pip_section = {line.strip()[2:].strip() for line in lines[start + 1:] if line.strip().startswith("- ")}
    pip_section.discard("-e .")
    assert pip_section == wanted, (
        f"only in environment.yml: {sorted(pip_section - wanted)}; only in pyproject: {sorted(wanted - pip_section)}")


def test_torch_is_pinned_to_the_cpu_wheel_on_disk():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_reqs = [r for r in project["dependencies"] if _name(r) == "torch"]
    assert torch_reqs == ["torch==2.13.0"]
    banned = {"torch-scatter", "torch-sparse", "torch-cluster", "pyg-lib", "torch-geometric"}
    assert not banned & {_name(r) for r in project["dependencies"]}
