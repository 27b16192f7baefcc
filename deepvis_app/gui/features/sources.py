"""Input sources: the Source menu (cameras that exist, the demo), opening images / videos / folders (menu,
dialog, drag and drop) in the background, camera freeze (f) and mirror. A source that fails to open leaves the
current one running and says why."""

from __future__ import annotations

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu

from ...sources import open_source
from ..feature import Feature, Key, MenuItem
from ..sources_gui import camera_indices

SLOT = "open-source"
SOURCE_MENU = "&Source"


class SourcesFeature(Feature):
    name = "sources"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        st = ctx.state
        self.camera_actions: list = []
        self._menu: QMenu | None = None
        self._camera_sep = None
        self.mirror_action = self.action("Mirror", lambda: setattr(st, "mirror", not st.mirror), checkable=True)
        self.mirror_action.setChecked(st.mirror)
        self.freeze_action = self.action("Freeze camera  (f)", self.toggle_camera_freeze, checkable=True)
        st.events.mirror.connect(lambda on, *_: self.mirror_action.setChecked(on))
        st.events.camera_frozen.connect(lambda on, *_: self.freeze_action.setChecked(on))

    @property
    def source(self):
        return self.ctx.live.source

    def open_source_text(self, text: str) -> None:
        """Open a source in the background (a camera can take a second); on failure the old one keeps going."""
        ctx = self.ctx
        ctx.notify(f"opening {text}...", "info", 3)

        def opened(source) -> None:
            ctx.live.set_source(source)
            ctx.notify(f"source: {source.name}", "info", 4)

        ctx.jobs.start(SLOT, lambda _abort: open_source(text), on_done=opened,
                       on_error=lambda msg: ctx.notify(f"cannot open source: {msg}", "error"))

    def open_dialog(self, kind: str) -> None:
        parent = self._menu.window() if self._menu is not None else None
        if kind == "folder":
            path = QFileDialog.getExistingDirectory(parent, "Open image folder")
        else:
            pattern = ("Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff)" if kind == "image"
                       else "Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v *.gif)")
            path, _ = QFileDialog.getOpenFileName(parent, f"Open {kind}", "", f"{pattern};;All files (*)")
        if path:
            self.open_source_text(path)

    def toggle_camera_freeze(self) -> None:
        st = self.ctx.state
        st.camera_frozen = not st.camera_frozen
        self.ctx.notify("camera frozen (f to resume)" if st.camera_frozen else "camera live", "info", 3)

    def reset(self) -> None:
        self.ctx.state.camera_frozen = False

    def refresh_cameras(self) -> None:
        """Only cameras that exist (a disabled "no cameras found" entry when there are none)."""
        menu = self._menu
        if menu is None:
            return
        for action in self.camera_actions:
            menu.removeAction(action)
            action.deleteLater()
        cams = camera_indices()
        self.camera_actions = [self.action(f"Camera {i}", lambda i=i: self.open_source_text(str(i))) for i in cams]
        if not cams:
            none = self.action("no cameras found", lambda: None)
            none.setEnabled(False)
            self.camera_actions = [none]
        menu.insertActions(self._camera_sep, self.camera_actions)

    # -- what the window gathers
    def menu_items(self) -> list[MenuItem]:
        return [
            MenuItem("&File", self.action("Open image...", lambda: self.open_dialog("image"),
                                          shortcut=QKeySequence.StandardKey.Open)),
            MenuItem("&File", self.action("Open video...", lambda: self.open_dialog("video"))),
            MenuItem("&File", self.action("Open folder...", lambda: self.open_dialog("folder"))),
            MenuItem(SOURCE_MENU, None),
            MenuItem(SOURCE_MENU, self.action("Demo (photos)", lambda: self.open_source_text("demo"))),
            MenuItem(SOURCE_MENU, None),
            MenuItem(SOURCE_MENU, self.mirror_action),
            MenuItem(SOURCE_MENU, self.freeze_action),
        ]

    def menus_built(self, menus: dict[str, QMenu]) -> None:
        self._menu = menu = menus[SOURCE_MENU]
        self._camera_sep = menu.actions()[0]  # the first separator: cameras go above it
        menu.aboutToShow.connect(self.refresh_cameras)  # cameras come and go: list them when the menu opens
        self.refresh_cameras()

    def keys(self) -> list[Key]:
        return [Key(("f", "F"), self.toggle_camera_freeze, "f",
                    "freeze / unfreeze the camera (the frozen frame keeps being analysed)")]

    def accepts_drop(self, paths: list[str]) -> bool:
        if paths:
            self.open_source_text(paths[0])
            return True
        return False

    def snapshot_state(self) -> dict:
        return {"source": self.source.name if self.source is not None else None}
