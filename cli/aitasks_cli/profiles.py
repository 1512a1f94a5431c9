"""Named profiles: an API URL and key each, in ~/.config/aitasks/config.toml ($XDG_CONFIG_HOME respected).

    [profiles.default]
    api_url = "https://abc123.execute-api.eu-west-1.amazonaws.com/v1/api/v1"
    api_key = "ait_..."          # may be left out: AITASKS_API_KEY (or --api-key) gives it

The file holds keys: it is written readable by its owner only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from pathlib import Path

DEFAULT = "default"


class ProfileError(Exception):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    name: str
    api_url: str | None = None
    api_key: str | None = None


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "aitasks" / "config.toml"


def _read() -> dict[str, dict[str, str]]:
    path = config_path()
    if not path.is_file():
        return {}
    try:
        found = tomllib.loads(path.read_text()).get("profiles", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProfileError(f"{path}: {exc}") from None
    if not isinstance(found, dict) or not all(isinstance(v, dict) for v in found.values()):
        raise ProfileError(f"{path}: [profiles.NAME] tables expected")
    return found


def load(name: str | None) -> Profile:
    """The named profile; with no name, `default` if the file has one (else an empty profile)."""
    profiles = _read()
    if name is None:
        name = DEFAULT
        if name not in profiles:
            return Profile(name)
    if name not in profiles:
        raise ProfileError(f"no profile {name!r} in {config_path()} (aitasks profiles set {name} --api-url ...)")
    found = profiles[name]
    return Profile(name, found.get("api_url"), found.get("api_key"))


def list_all() -> list[Profile]:
    return [Profile(n, p.get("api_url"), p.get("api_key")) for n, p in sorted(_read().items())]


def save(profile: Profile) -> Path:
    """Add or replace one profile, keeping the others."""
    profiles = _read()
    entry = {k: v for k, v in (("api_url", profile.api_url), ("api_key", profile.api_key)) if v}
    profiles[profile.name] = {**profiles.get(profile.name, {}), **entry}
    lines: list[str] = []
    for name, values in sorted(profiles.items()):
        lines.append(f"[profiles.{json.dumps(name)}]")
        lines += [f"{key} = {json.dumps(str(value))}" for key, value in values.items()]
        lines.append("")
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write("\n".join(lines))
    path.chmod(0o600)
    return path
