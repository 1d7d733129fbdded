"""The install routes agree with each other: pyproject.toml, environment.yml, constraints.txt."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_environment_yml_pip_section_matches_pyproject_dependencies():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    conda_names = {str(item).split("=")[0] for item in env["dependencies"] if isinstance(item, str)}
    assert "python" in conda_names and "cxx-compiler" in conda_names
    assert "-e .[dev]" in pip_section, "environment.yml must install the package editable with its dev extras"
    requirements = sorted(r for r in pip_section if not r.startswith("-"))
    assert requirements == sorted(_pyproject()["dependencies"])
    assert any(line.startswith("python=3.11") for line in map(str, env["dependencies"]))


def test_constraints_pin_every_dependency_exactly():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_name(name)] = version
    project = _pyproject()
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    missing = [_name(r) for r in wanted if _name(r) not in pins]
    assert not missing, f"constraints.txt lacks pins for {missing}"
    assert pins["torch"] == "2.15.0" and pins["torchvision"] == "0.29.2"
    assert pins["pydensecrf2"] == "1.1"
