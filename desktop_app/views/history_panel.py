"""The History panel: stored conversations (thumbnail, image name, date, the start of the answer; newest first,
every one reachable by scrolling, with a count), a search box, export, delete with undo, Clear all, and the history
settings ("Don't keep history", the folder).

A dock on the window's left that the View menu (Ctrl+H) or its title bar collapses. It never reads the store
itself: its model (views/history_model.py) asks the history thread a page at a time and shows what comes back,
dropping answers to a search that has been superseded. `install_history(window)` builds the recorder and the panel and adds the menus; that is all the main
window needs to call.
"""

from __future__ import annotations

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication, QKeySequence, QPalette
from PySide6.QtWidgets import (QAbstractItemView, QDockWidget, QFileDialog, QFrame, QHBoxLayout, QLabel, QLineEdit,
                               QListView, QMenu, QPushButton, QToolButton, QVBoxLayout, QWidget)

from ..history.store import default_folder
from ..jobs.history_recorder import NOTICE_CAUSE, HistoryRecorder
from .confirm import confirm
from .file_dialogs import export_suggestion, remember_folder
from .history_model import ID_ROLE, HistoryModel

SEARCH_DELAY_MS = 150  # a search per pause in typing, not per key
UNDO_MS = 10_000
THUMB = 56

EXPORTS = (  # kind, menu text, file filter ("" for a folder)
    ("markdown", "Export as &Markdown…", "Markdown (*.md)"),
    ("json", "Export as &JSON…", "JSON (*.json)"),
    ("png", "Export annotated &PNG…", "PNG image (*.png)"),
)


class HistoryPanel(QDockWidget):
    def __init__(self, recorder: HistoryRecorder, parent=None):
        super().__init__("History", parent)
        self.setObjectName("history")
        self.recorder = recorder
        self.client = recorder.client
        self._load_seq = 0
        self._undo_ids: list[int] = []
        self._keep_focus = self._focus_after_load = False
        self._loading: int | None = None  # the conversation being loaded
        self.model = HistoryModel(self.client, self)
        self.model.listed.connect(self._on_listed)
        self.model.modelAboutToBeReset.connect(self._remember_selection)

        self.search = QLineEdit()
        self.search.setPlaceholderText("Search names, prompts and answers")
        self.search.setClearButtonEnabled(True)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.refresh)
        self.search.textChanged.connect(self._search_timer.start)
        self.search.returnPressed.connect(self.refresh)

        self.list = QListView()
        self.list.setModel(self.model)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setUniformItemSizes(True)  # rows are laid out without measuring each one: lines are elided
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.list.activated.connect(self._open_item)
        self.list.clicked.connect(self._open_item)
        self.list.selectionModel().selectionChanged.connect(self._update_buttons)
        # The view fetches more when its scroll bar reaches the end; End, PageDown or ↓ onto the last row loaded
        # fetch too, before the view has laid the new rows out.
        self.list.selectionModel().currentChanged.connect(self._fetch_if_last)
        self._selected_before: set[int] = set()
        self._scroll_before = ("", 0)  # (query, scroll position) before the list was reloaded

        self.status = QLabel()
        self.status.setWordWrap(True)
        muted = self.palette().color(QPalette.ColorRole.PlaceholderText).name()
        self.status.setStyleSheet(f"color: {muted};")

        self.undo_label = QLabel()
        undo = QPushButton("Undo")
        undo.clicked.connect(self.undo)
        self.undo_bar = QFrame()
        self.undo_bar.setFrameShape(QFrame.Shape.StyledPanel)
        row = QHBoxLayout(self.undo_bar)
        row.setContentsMargins(6, 2, 6, 2)
        row.addWidget(self.undo_label, 1)
        row.addWidget(undo)
        self.undo_bar.setVisible(False)
        self._undo_timer = QTimer(self)
        self._undo_timer.setSingleShot(True)
        self._undo_timer.setInterval(UNDO_MS)
        self._undo_timer.timeout.connect(lambda: self.undo_bar.setVisible(False))

        self.export_button = QToolButton()
        self.export_button.setText("Export")
        self.export_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.export_button.setMenu(self._export_menu(self, self.selected_id))
        self.delete_button = QToolButton()
        self.delete_button.setText("Delete")
        self.delete_button.setToolTip("Delete the selected conversations (Del); you can undo it")
        self.delete_button.clicked.connect(self.delete_selected)
        self.more_button = QToolButton()
        self.more_button.setText("⋯")
        self.more_button.setToolTip("History settings")
        self.more_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.more_button.setMenu(self._settings_menu())
        buttons = QHBoxLayout()
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.delete_button)
        buttons.addStretch(1)
        buttons.addWidget(self.more_button)

        delete_key = QAction(self.list)
        delete_key.setShortcut(QKeySequence.StandardKey.Delete)
        delete_key.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        delete_key.triggered.connect(self.delete_selected)
        self.list.addAction(delete_key)

        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.search)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.undo_bar)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.setWidget(body)
        self.setMinimumWidth(230)

        w = self.client.worker
        w.changed.connect(self.refresh)
        w.loaded.connect(self._on_loaded)
        w.deleted.connect(self._on_deleted)
        w.markdown_ready.connect(self._on_markdown)
        w.exported.connect(self._on_exported)  # bound methods: a lambda would run on the history thread
        recorder.state_changed.connect(self._on_state)
        w.pending.connect(self._on_pending)  # after the recorder's own slot, which counts them
        recorder.window.image_shown.connect(self._after_image_shown)
        self._on_state()

    # -- the list -----------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        self._search_timer.stop()
        self.model.reload(self.search.text().strip())

    def _fetch_if_last(self, current: QModelIndex, _previous=None) -> None:
        if current.isValid() and current.row() >= self.model.rowCount() - 1:
            self.model.fetchMore()

    def _remember_selection(self) -> None:
        self._selected_before = set(self.selected_ids())
        self._scroll_before = (self.model.query, self.list.verticalScrollBar().value())

    def _on_listed(self) -> None:
        """A page arrived: keep the selection (or select the image on screen) and say how many there are."""
        selection = self.list.selectionModel()
        if self._selected_before is not None and not selection.hasSelection():
            current = self.recorder.window.image.key if self.recorder.window.image is not None else None
            for row, s in enumerate(self.model.rows):
                if s.id in self._selected_before or (not self._selected_before and s.image_key == current):
                    selection.select(self.model.index(row), QItemSelectionModel.SelectionFlag.Select)
        self._selected_before = set()
        query, value = self._scroll_before
        if query == self.model.query and value:  # the same list, changed: stay where the person was reading
            self._scroll_before = ("", 0)
            QTimer.singleShot(0, lambda: self.list.verticalScrollBar().setValue(value))
        self._update_status(self.model.total)
        self._update_buttons()

    def _on_pending(self, *_) -> None:
        self._update_status(self.model.total)

    def _update_status(self, count: int) -> None:
        r = self.recorder
        query = self.search.text().strip()
        parts = []
        if not r.enabled:
            parts.append("History is off: nothing new is saved.")
        elif r.read_only:
            parts.append("Read-only: another window has this history open.")
        if r.waiting:
            parts.append(f"{r.waiting} answer{'s wait' if r.waiting != 1 else ' waits'} to be saved.")
        if query:
            parts.append(f"{count:,} match{'es' if count != 1 else ''} for “{query}”." if count else
                         f"No results for “{query}”: no image name, prompt or answer has it.")
        elif not count:
            parts.append("No conversations yet. Ask something about an image and it is kept here."
                         if r.enabled else "")
        else:
            parts.append(f"{count:,} conversation{'s' if count != 1 else ''}.")
        self.status.setText(" ".join(p for p in parts if p))
        self.status.setVisible(bool(self.status.text()))

    def _on_state(self) -> None:
        self.keep_action.setChecked(not self.recorder.enabled)
        folder = self.recorder.open_folder or self.recorder.folder or str(default_folder())
        self.folder_action.setText(f"Open history folder ({folder})")
        self.refresh()

    def show_current(self, key: str) -> None:
        """Select the shown image's conversation, so Export and Delete act on what is on screen."""
        selection = self.list.selectionModel()
        selection.clearSelection()
        if (row := self.model.row_of(key=key)) >= 0:
            selection.select(self.model.index(row), QItemSelectionModel.SelectionFlag.Select)

    def selected_ids(self) -> list[int]:
        return [index.data(ID_ROLE) for index in self.list.selectionModel().selectedIndexes()]

    def selected_id(self) -> int | None:
        ids = self.selected_ids()
        return ids[0] if ids else None

    def _update_buttons(self, *_) -> None:
        has = bool(self.selected_ids())
        writable = self.recorder.is_open and not self.recorder.read_only
        self.export_button.setEnabled(has)
        self.delete_button.setEnabled(has and writable)

    def _open_item(self, index: QModelIndex) -> None:
        if index.data(ID_ROLE) == self._loading:
            return  # a click is also an activation on some styles: one load is enough
        self._loading = index.data(ID_ROLE)
        self._load_seq = self.client.load(self._loading)
        self._focus_after_load = self.list.hasFocus()  # the window gives a new image's input the focus; Del stays

    def _on_loaded(self, seq: int, conv) -> None:
        if seq != self._load_seq:
            return
        self._loading = None
        if conv is not None:
            self._keep_focus = self._focus_after_load
            self.recorder.restore(conv)

    def _after_image_shown(self, key: str) -> None:
        self.show_current(key)
        if self._keep_focus:
            self._keep_focus = False
            QTimer.singleShot(0, self.list.setFocus)  # after the chat's own focus_input

    def _context_menu(self, pos) -> None:
        index = self.list.indexAt(pos)
        if not index.isValid():
            return
        if not self.list.selectionModel().isSelected(index):
            self.list.setCurrentIndex(index)
        menu = self._export_menu(self, self.selected_id)
        menu.addSeparator()
        menu.addAction("Delete", self.delete_selected)
        menu.exec(self.list.viewport().mapToGlobal(pos))

    # -- deleting -------------------------------------------------------------------------------------------------
    def delete_selected(self) -> None:
        if ids := self.selected_ids():
            self.client.delete(ids)

    def clear_all(self) -> None:
        if confirm(self, "Clear all history", "Delete every conversation in the history?", "Clear all",
                   "You can undo it right after."):
            self.client.clear_all()

    def _on_deleted(self, ids: list) -> None:
        if not ids:
            return
        self._undo_ids = list(ids)
        self.undo_label.setText(f"Deleted {len(ids)} conversation{'s' if len(ids) != 1 else ''}.")
        self.undo_bar.setVisible(True)
        self._undo_timer.start()

    def undo(self) -> None:
        if self._undo_ids:
            self.client.undelete(self._undo_ids)
            self._undo_ids = []
        self.undo_bar.setVisible(False)

    # -- menus ------------------------------------------------------------------------------------------------------
    def _export_menu(self, parent, target) -> QMenu:
        """Export actions for `target()`: a conversation id (the panel's selection) or an image key (File menu)."""
        menu = QMenu("E&xport", parent)
        for kind, text, file_filter in EXPORTS:
            menu.addAction(text, lambda k=kind, f=file_filter: self._export(k, target(), f))
        menu.addAction("&Copy as Markdown", lambda: self._copy(target()))
        menu.addSeparator()
        menu.addAction("Export &all conversations…", self.export_all)
        return menu

    def file_menu_exports(self, parent) -> QMenu:
        """File › Export: the current image's conversation."""
        def current():
            image = self.recorder.window.image
            return image.key if image is not None else None
        return self._export_menu(parent, current)

    def _settings_menu(self) -> QMenu:
        menu = QMenu(self)
        self.keep_action = menu.addAction("Don't keep history")
        self.keep_action.setCheckable(True)
        self.keep_action.setToolTip("Store nothing from now on; what is stored stays until you clear it")
        self.keep_action.toggled.connect(lambda off: self.recorder.set_enabled(not off))
        menu.addSeparator()
        menu.addAction("Change history folder…", self.choose_folder)
        menu.addAction("Use the default folder", lambda: self.recorder.set_folder(""))
        self.folder_action = menu.addAction("Open history folder", self.open_folder)
        menu.addSeparator()
        menu.addAction("Clear all…", self.clear_all)
        return menu

    def _export(self, kind: str, target, file_filter: str) -> None:
        if target is None:
            self.recorder.messages.emit("Open or select a conversation to export first.", False)
            return
        dest, _ = QFileDialog.getSaveFileName(self, "Export conversation", export_suggestion(self.parent(), target,
                                                                                             file_filter), file_filter)
        if dest:
            remember_folder(dest, getattr(self.parent(), "store", None))
            self.client.export(kind, target, dest)

    def _copy(self, target) -> None:
        if target is not None:
            self.client.copy_markdown(target)

    def _on_markdown(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.recorder.messages.emit("The conversation is on the clipboard as Markdown.", False)

    def _on_exported(self, text: str) -> None:
        self.recorder.messages.emit(text, False)

    def export_all(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export all conversations to a folder")
        if folder:
            self.client.export("all", None, folder)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Keep history in this folder",
                                                  self.recorder.open_folder or str(default_folder()))
        if folder:
            self.recorder.set_folder(folder)

    def open_folder(self) -> None:
        folder = self.recorder.open_folder or self.recorder.folder or str(default_folder())
        QDesktopServices.openUrl(QUrl.fromLocalFile(folder))


def install_history(window) -> HistoryRecorder:
    """Everything the main window needs: the recorder, the panel docked on the left, View › History (Ctrl+H),
    File › Export, and history's messages in the window's banner. Returns the recorder (call shutdown on close)."""
    recorder = HistoryRecorder(window, window.store)
    panel = HistoryPanel(recorder, window)
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, panel)
    window.history_panel = panel
    toggle = panel.toggleViewAction()
    toggle.setText("&History")
    toggle.setShortcut(QKeySequence("Ctrl+H"))
    menus = {a.text().replace("&", ""): a.menu() for a in window.menuBar().actions() if a.menu() is not None}
    if (view := menus.get("View")) is not None:
        view.addSeparator()
        view.addAction(toggle)
    if (file_menu := menus.get("File")) is not None:
        exports = panel.file_menu_exports(file_menu)
        before = next((a for a in file_menu.actions() if a.text().replace("&", "").startswith("Settings")), None)
        if before is not None:
            file_menu.insertMenu(before, exports)
            file_menu.insertSeparator(before)
        else:
            file_menu.addMenu(exports)

    def show_message(text: str, is_error: bool) -> None:
        (window.notice.show_error if is_error else window.notice.show_info)(text, NOTICE_CAUSE)

    recorder.messages.connect(show_message)
    return recorder
