"""The watch loop's code push: saved changes under functions/ and layers/common/ into the running local stack.

`sam sync --code` cannot do the layer against MiniStack (docs/decisions.md, 24), so this calls the Lambda API as it
would: UpdateFunctionCode with a function's directory zipped; for the layer, PublishLayerVersion (the packages
`sam build` installed, plus the current layers/common) and UpdateFunctionConfiguration of every function that uses
it. MiniStack drops a function's warm workers on both calls: the next invocation starts on the new code.
"""

from __future__ import annotations

import functools
import io
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

FUNCTIONS = Path("functions")
LAYER = Path("layers/common")


def changed_code(paths: Iterable[Path]) -> tuple[set[str], bool]:
    """The functions (by directory name) whose code the changed paths touch, and whether they touch the layer."""
    functions: set[str] = set()
    layer = False
    for path in paths:
        if path.is_relative_to(LAYER):
            layer = True
        elif path.is_relative_to(FUNCTIONS) and len(path.parts) > 2:
            functions.add(path.parts[1])
    return functions, layer


def _add_tree(archive: zipfile.ZipFile, root: Path, prefix: str, skip: Collection[str] = ()) -> None:
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and relative.parts[0] not in skip and "__pycache__" not in relative.parts:
            archive.write(path, prefix + relative.as_posix())


def _layer_name(arn: str) -> str:
    return arn.split(":")[6]  # arn:aws:lambda:<region>:<account>:layer:<name>:<version>


class CodeSync:
    """Pushes the code of the functions (directory name -> deployed name) and of the layer into the stack."""

    def __init__(self, client: Any, functions: dict[str, str], layer_arn: str, layer_build: Path) -> None:
        self._client = client
        self._functions = functions
        self._layer_arn = layer_arn
        # The layer's packages as `sam build` installed them, zipped once (about 1.5 s); each push adds the package to
        # a copy. A change to layers/common/requirements.txt needs a new `sam build`: restart the stack.
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            _add_tree(archive, layer_build / "python", "python/", skip={p.name for p in LAYER.iterdir()})
        self._dependencies = buffer.getvalue()

    def function(self, name: str) -> None:
        if name not in self._functions:
            raise LookupError(f"{FUNCTIONS / name} is not deployed: add it to template.yaml and restart the stack")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            _add_tree(archive, FUNCTIONS / name, "")
        self._client.update_function_code(FunctionName=self._functions[name], ZipFile=buffer.getvalue())

    def layer(self) -> None:
        """Publish the layer with the current package and move every function that uses it to the new version."""
        name = _layer_name(self._layer_arn)
        current = self._client.get_layer_version_by_arn(Arn=self._layer_arn)
        buffer = io.BytesIO(self._dependencies)
        with zipfile.ZipFile(buffer, "a", zipfile.ZIP_DEFLATED) as archive:
            _add_tree(archive, LAYER, "python/")
        new_arn = self._client.publish_layer_version(
            LayerName=name,
            Content={"ZipFile": buffer.getvalue()},
            CompatibleRuntimes=current.get("CompatibleRuntimes", []),
            CompatibleArchitectures=current.get("CompatibleArchitectures", []),
        )["LayerVersionArn"]
        # In parallel: MiniStack stops a function's warm workers and deletes their files before it answers, which
        # can take seconds per function on a busy machine.
        with ThreadPoolExecutor() as pool:
            list(pool.map(functools.partial(self._move, name, new_arn), self._functions.values()))
        self._layer_arn = new_arn

    def _move(self, layer_name: str, new_arn: str, function: str) -> None:
        config = self._client.get_function_configuration(FunctionName=function)
        layers = [layer["Arn"] for layer in config.get("Layers", [])]
        updated = [new_arn if _layer_name(arn) == layer_name else arn for arn in layers]
        if updated != layers:
            self._client.update_function_configuration(FunctionName=function, Layers=updated)
