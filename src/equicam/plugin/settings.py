"""Settings remembered across napari launches, in one small JSON file (no Qt).

The file is ``$EQUICAM_CONFIG`` when set (tests point it into ``tmp_path``), else
``~/.config/napari-equicam/settings.json``. A missing or unreadable file means the defaults:
a broken settings file must never stop napari from opening a case.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from equicam.core.atomic import publish

ENV_VAR = "EQUICAM_CONFIG"


def settings_path() -> Path:
    """Where the settings live: ``$EQUICAM_CONFIG`` or the user's config folder."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return Path.home() / ".config" / "napari-equicam" / "settings.json"


def load_settings() -> dict[str, Any]:
    """The saved settings; an empty dict when there are none or the file is unreadable."""
    try:
        data = json.loads(settings_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_settings(section: str, values: Mapping[str, Any]) -> None:
    """Merge ``values`` into ``section`` of the settings file and write it atomically.

    Parameters
    ----------
    section
        Top-level key, e.g. ``inspector`` or ``folders``.
    values
        JSON-serialisable values; keys not named here keep their saved value.
    """
    path = settings_path()
    data = load_settings()
    data[section] = {**data.get(section, {}), **values}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        publish(tmp, path)
    except OSError:  # a read-only home must not break the app: settings are a convenience
        return


def remember(section: str, widgets: Mapping[str, Any]) -> None:
    """Restore widget values from ``section`` and save each later change there.

    Parameters
    ----------
    section
        Settings section of these widgets.
    widgets
        Setting name -> magicgui value widget. A saved value that the widget no longer
        offers (a device that is gone, a deleted file) is skipped.
    """
    saved = load_settings().get(section, {})
    for name, widget in widgets.items():
        if name in saved:
            with contextlib.suppress(ValueError, TypeError):
                widget.value = saved[name]
        widget.changed.connect(
            lambda value, name=name: update_settings(section, {name: _plain(value)})
        )


def _plain(value: Any) -> Any:
    """A JSON-friendly form of a widget value (paths become strings)."""
    return str(value) if isinstance(value, os.PathLike) else value
