"""Keyboard shortcuts of the correction loop, registered as napari actions.

Each action is a napari action (``napari-equicam:<name>``) bound on the viewer, so it shows in
*File > Preferences > Shortcuts* under Viewer, where it can be changed like napari's own keys;
a key the user chose there wins over the default below. The command acts on the CAM inspector
docked in the viewer that has the focus.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from napari.components import ViewerModel
from napari.utils.action_manager import action_manager
from napari.utils.interactions import Shortcut
from napari.viewer import Viewer

if TYPE_CHECKING:
    from equicam.plugin.widgets.cam_inspector import CamInspector

# action name -> (default key, description, what it calls on the inspector)
SHORTCUTS: dict[str, tuple[str, str, Callable[[CamInspector], object]]] = {
    "run_slice": ("Shift-R", "Run current slice", lambda w: w.run_current_slice()),
    "run_volume": ("Ctrl-Shift-R", "Run whole volume", lambda w: w.run_whole_volume()),
    "next_case": ("Shift-N", "Next case", lambda w: w.cases.go(+1)),
    "previous_case": ("Shift-B", "Previous case", lambda w: w.cases.go(-1)),
    "toggle_cam": ("Shift-C", "Show/hide the CAMs", lambda w: w.display.toggle_cams()),
    "toggle_ground_truth": (
        "Shift-G",
        "Show/hide the ground truth",
        lambda w: w.display.toggle_ground_truth(),
    ),
    "interpolate": (
        "Shift-I",
        "Fill between edited slices",
        lambda w: w.tools.interpolate(),
    ),
    "keep_component": (
        "Shift-K",
        "Keep the component under the cursor",
        lambda w: w.tools.keep_component(),
    ),
    "save_mask": ("Shift-S", "Save selected mask", lambda w: w.masks.save_selected()),
}
PREFIX = "napari-equicam:"
_INSPECTORS: weakref.WeakSet = weakref.WeakSet()


def _command(name: str) -> Callable[[Viewer], None]:
    def command(viewer: Viewer) -> None:
        for inspector in list(_INSPECTORS):
            # napari hands plugin widgets a proxy of the viewer: compare what it wraps
            if getattr(inspector.viewer, "__wrapped__", inspector.viewer) is viewer:
                SHORTCUTS[name][2](inspector)
                return

    command.__name__ = name
    return command


def _register() -> None:
    from napari.settings import get_settings

    chosen = get_settings().shortcuts.shortcuts
    for name, (key, description, _) in SHORTCUTS.items():
        action = PREFIX + name
        if action in action_manager._actions:  # registered by an earlier inspector
            continue
        action_manager.register_action(action, _command(name), description, ViewerModel)
        if action not in chosen:
            action_manager.bind_shortcut(action, key)


def keys(name: str) -> str:
    """The key(s) that trigger action ``name`` now, as the user sees them (e.g. ``Shift+I``)."""
    bound = action_manager._shortcuts.get(PREFIX + name, [])
    return " or ".join(Shortcut(key).platform for key in bound)


def tooltip(name: str, text: str | None = None) -> str:
    """``text`` (default: the action's description) followed by its key, for a tooltip."""
    shortcut = keys(name)
    text = text or SHORTCUTS[name][1]
    return f"{text} ({shortcut})" if shortcut else text


def attach(inspector: CamInspector) -> None:
    """Register the actions (once) and route them to ``inspector`` for its viewer."""
    _register()
    _INSPECTORS.add(inspector)
