"""The watch loop's code push (`make run`): which code a saved path touches, and what reaches the Lambda API."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from aitasks_cli.local_sync import CodeSync, changed_code

ROOT = Path(__file__).parents[2]
COMMON = "arn:aws:lambda:us-east-1:000000000000:layer:CommonLayer"
OTHER = "arn:aws:lambda:us-east-1:000000000000:layer:Other:3"


class FakeLambda:
    """The Lambda calls CodeSync makes, on functions and layer versions kept in memory."""

    def __init__(self, layers: dict[str, list[str]]) -> None:
        self.layers = layers  # function -> its layers' ARNs
        self.code: dict[str, bytes] = {}
        self.published: list[dict[str, Any]] = []

    def update_function_code(self, *, FunctionName: str, ZipFile: bytes) -> None:  # boto3's argument names
        self.code[FunctionName] = ZipFile

    def get_layer_version_by_arn(self, *, Arn: str) -> dict[str, Any]:
        return {"LayerVersionArn": Arn, "CompatibleRuntimes": ["python3.11"], "CompatibleArchitectures": ["x86_64"]}

    def publish_layer_version(self, *, LayerName: str, **version: Any) -> dict[str, Any]:
        self.published.append({"LayerName": LayerName, **version})
        return {"LayerVersionArn": f"{COMMON}:{len(self.published) + 1}"}

    def get_function_configuration(self, *, FunctionName: str) -> dict[str, Any]:
        return {"Layers": [{"Arn": arn} for arn in self.layers[FunctionName]]}

    def update_function_configuration(self, *, FunctionName: str, Layers: list[str]) -> None:
        self.layers[FunctionName] = Layers


@pytest.fixture(autouse=True)
def _in_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def names(archive: bytes) -> set[str]:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        return set(opened.namelist())


def test_a_path_names_its_function_or_the_layer() -> None:
    paths = [
        Path("functions/create_task/app.py"),
        Path("functions/executor/app.py"),
        Path("functions/README.md"),
        Path("layers/common/aitasks/http/models.py"),
    ]
    assert changed_code(paths) == ({"create_task", "executor"}, True)
    assert changed_code([Path("functions/query_tasks/app.py")]) == ({"query_tasks"}, False)


def test_a_function_is_pushed_as_its_directory_zipped(tmp_path: Path) -> None:
    client = FakeLambda({})
    CodeSync(client, {"query_tasks": "stack-QueryTasks-1"}, f"{COMMON}:1", tmp_path).function("query_tasks")
    assert names(client.code["stack-QueryTasks-1"]) == {"app.py"}


def test_an_undeployed_function_is_named(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="functions/new_one is not deployed"):
        CodeSync(FakeLambda({}), {}, f"{COMMON}:1", tmp_path).function("new_one")


def test_the_layer_is_published_and_every_function_that_uses_it_moves_to_the_new_version(tmp_path: Path) -> None:
    # given what `sam build` made of the layer: its packages and an older copy of ours
    (tmp_path / "python/somepkg").mkdir(parents=True)
    (tmp_path / "python/somepkg/__init__.py").write_text("")
    (tmp_path / "python/aitasks").mkdir()
    (tmp_path / "python/aitasks/stale.py").write_text("")
    client = FakeLambda({"a": [f"{COMMON}:1"], "b": [OTHER, f"{COMMON}:1"], "c": [OTHER]})
    sync = CodeSync(client, {"fa": "a", "fb": "b", "fc": "c"}, f"{COMMON}:1", tmp_path)

    # when it is pushed twice
    sync.layer()
    sync.layer()

    # then each version holds the packages and the current package, and the functions use the last one
    [first, second] = client.published
    assert first["LayerName"] == "CommonLayer" and first["CompatibleRuntimes"] == ["python3.11"]
    content = names(second["Content"]["ZipFile"])
    assert {"python/somepkg/__init__.py", "python/aitasks/bootstrap.py", "python/requirements.txt"} <= content
    assert not any(name.startswith("python/aitasks_cli/") or "/local_sync.py" in name for name in content)
    assert "python/aitasks/stale.py" not in content
    assert not any("__pycache__" in name for name in content)
    assert client.layers == {"a": [f"{COMMON}:3"], "b": [OTHER, f"{COMMON}:3"], "c": [OTHER]}
