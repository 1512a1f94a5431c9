"""Packaging: the layer's pins, pyproject's ranges and the dev lock say the same thing; one version everywhere."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from typer.testing import CliRunner

from aitasks_cli import __version__
from aitasks_cli.main import app

ROOT = Path(__file__).parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CLIENT = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())["project"]
OURS = {"aitasks", "aitasks-client"}  # this repository's distributions, installed from their folders
VERSION = ROOT / "clients/python/src/aitasks_client/VERSION"


def requirements(lines: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in parsed}


def pins(path: Path) -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        text = line.split("#")[0].strip()
        if text:
            requirement = Requirement(text)
            [specifier] = requirement.specifier
            assert specifier.operator == "==", f"{path.name}: {text} is not a pin"
            found[canonicalize_name(requirement.name)] = Version(specifier.version)
    return found


def test_the_layer_pins_exactly_the_runtime_dependencies_within_their_ranges() -> None:
    runtime = requirements(PROJECT["dependencies"])
    layer = pins(ROOT / "layers/common/requirements.txt")
    # boto3 comes with the Lambda runtime: a dependency of the package, not shipped in the layer
    assert set(layer) == set(runtime) - {"boto3"}
    for name, version in layer.items():
        assert runtime[name].specifier.contains(version), f"layer: {name}=={version}; pyproject: {runtime[name]}"


def test_the_dev_lock_pins_every_requirement_of_every_extra_within_its_range() -> None:
    locked = pins(ROOT / "requirements/dev.lock")
    extras = [r for extra in PROJECT["optional-dependencies"].values() for r in extra]
    wanted = [*PROJECT["dependencies"], *extras, *CLIENT["dependencies"]]
    for requirement in map(Requirement, wanted):
        name = canonicalize_name(requirement.name)
        if name in OURS:
            continue
        assert name in locked, f"{name} is not in requirements/dev.lock: run `make lock`"
        assert requirement.specifier.contains(locked[name]), f"dev.lock has {name}=={locked[name]}, not {requirement}"


def test_version_prints_the_one_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"aitasks {VERSION.read_text().strip()}\n"
    assert __version__ == VERSION.read_text().strip()
