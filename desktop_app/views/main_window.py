"""The main window: image canvas on the left, chat on the right, model status at the bottom.

The window validates an action first (pure functions in prompts.py), then disables what must not be pressed,
starts the job, and re-enables in the result handler. It never runs model work itself.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QGuiApplication, QIcon, QImage, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QMainWindow, QPushButton, QSplitter, QToolButton,
                               QVBoxLayout, QWidget)

from vlm_core.runtime.answers import parse_detections

from .. import APP_NAME
from ..assets import asset
from ..conversation import DONE, STOPPED, Session, Turn
from ..jobs.engine_worker import EngineClient
from ..jobs.images import ImageLoader, LoadedImage
from ..prompts import PromptError, build_prompt, is_location_task, typed_prompt
from ..settings import Settings, load_settings, save_settings
from .api_control import ApiControl
from .canvas import ImageCanvas
from .chat import ChatPanel
from ..model_names import window_title
from .drop_target import DropHighlight
from .elided_label import ElidedLabel
from .file_dialogs import remember_folder, start_folder
from .model_manager import ModelManager
from . import notice as cause
from .notice import Notice
from .objects import ObjectsController
from .history_panel import install_history
from .shortcuts import standard_or
from .unsaved_answers import UnsavedAnswersGuard

MIN_IMAGE_PX = 320  # narrower than this, the image column gives way: History closes, or opens over the window
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.gif *.bmp *.tif *.tiff);;All files (*)"


class MainWindow(QMainWindow):
    image_shown = Signal(str)  # image key; for tests and scripting
    answer_done = Signal(int)  # turn id, after the window has shown the final state

    def __init__(self, model_dir: str | None = None, settings_store: QSettings | None = None,
                 device: str | None = None, dtype: str | None = None):
        """device, dtype: this run only (the command line's --device/--dtype); Settings holds the saved ones."""
        super().__init__()
        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(QIcon(str(asset("icon.png"))))
        self.setAcceptDrops(True)
        self.resize(1280, 800)
        self.store = settings_store or QSettings()
        self.settings: Settings = load_settings(self.store)
        self.session = Session()
        self.image: LoadedImage | None = None
        self.model_info: dict | None = None
        self._requests: dict[int, tuple[int, str]] = {}  # request id -> (turn id, image key)
        self._history_opened_by_hand = False

        self.engine = EngineClient(self)
        self.loader = ImageLoader(self)
        self.models = ModelManager(self, device, dtype)
        self._build_ui()
        self._build_menus()
        self._connect()
        self.history = install_history(self)  # the History panel, File › Export, and saving every answer
        self.unsaved = UnsavedAnswersGuard(self, self.history)  # closing asks when answers still wait to be saved
        self.api = ApiControl(self)  # Settings › Local API server, on the model this window loaded
        self.history_panel.visibilityChanged.connect(lambda _visible: QTimer.singleShot(0, self._keep_image_room))
        # Ctrl+H (or View › History) while the window is narrow: History then floats over the image.
        self.history_panel.toggleViewAction().triggered.connect(
            lambda checked: setattr(self, "_history_opened_by_hand", checked))
        self._refresh_controls()
        self._restore_layout()
        requested = model_dir or self.settings.model_dir or ""
        QTimer.singleShot(0, lambda: self.models.start(requested))  # after the window is on screen

    # -- construction -------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.canvas = ImageCanvas()
        self.image_info = ElidedLabel("No image")  # a long file name never widens the window
        self.image_info.setAlignment(Qt.AlignmentFlag.AlignCenter)
        zoom_row = QHBoxLayout()
        zoom_row.addWidget(self.image_info, 1)
        self.boxes_toggle = QToolButton()
        self.boxes_toggle.setText("Boxes")
        self.boxes_toggle.setCheckable(True)
        self.boxes_toggle.setChecked(True)
        self.boxes_toggle.setToolTip("Show or hide detection boxes (Ctrl+B)")
        self.boxes_toggle.setVisible(False)
        zoom_row.addWidget(self.boxes_toggle)
        self.objects = ObjectsController(self)  # masks, the object list, saving: views/objects.py
        zoom_row.addWidget(self.objects.masks_toggle)
        for text, tip, slot in (("−", "Zoom out (-)", lambda: self.canvas.zoom_by(1 / 1.25)),
                                ("Fit", "Fit to window (0)", self.canvas.fit),
                                ("+", "Zoom in (+)", lambda: self.canvas.zoom_by(1.25))):
            b = QToolButton()
            b.setText(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            zoom_row.addWidget(b)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.canvas, 1)
        left_layout.addLayout(zoom_row)
        left_layout.addWidget(self.objects.panel)

        self.chat = ChatPanel()
        self.splitter = splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self.chat)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([720, 520])
        self.chat.setMinimumWidth(380)

        self.model_button = QPushButton("Models…")
        self.model_button.clicked.connect(self.open_model_picker)
        self.model_button.setVisible(False)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)
        self.notice = Notice(central)  # floats over the top of the window; never moves the layout

        self.drop_highlight = DropHighlight(central)
        bar = self.statusBar()
        bar.addPermanentWidget(self.models.download_status)
        bar.addPermanentWidget(self.model_button)
        bar.addPermanentWidget(self.models.status)
        self.models.changed.connect(self._on_model_changed)

    def _build_menus(self) -> None:
        def action(menu, text, slot, shortcut=None, tip=""):
            a = QAction(text, self)
            if isinstance(shortcut, list):
                a.setShortcuts(shortcut)
            elif shortcut is not None:
                a.setShortcut(shortcut)
            a.setStatusTip(tip)
            a.triggered.connect(slot)
            menu.addAction(a)
            return a

        file_menu = self.menuBar().addMenu("&File")
        action(file_menu, "&Open image…", self.choose_image, standard_or(QKeySequence.StandardKey.Open, "Ctrl+O"))
        action(file_menu, "&Models…", self.open_model_picker, QKeySequence("Ctrl+M"))
        action(file_menu, "Open &model folder…", self.choose_model_folder)
        action(file_menu, "Process a &folder…", self.open_batch_dialog)
        file_menu.addSeparator()
        self.settings_action = action(file_menu, "&Settings…", self.open_settings,
                                      standard_or(QKeySequence.StandardKey.Preferences, "Ctrl+,"))
        file_menu.addSeparator()
        self.quit_action = action(file_menu, "&Quit", self.close, standard_or(QKeySequence.StandardKey.Quit, "Ctrl+Q"))
        edit_menu = self.menuBar().addMenu("&Edit")
        action(edit_menu, "&Paste image", self.paste, standard_or(QKeySequence.StandardKey.Paste, "Ctrl+V"))
        action(edit_menu, "&Copy last answer", self.copy_last_answer, QKeySequence("Ctrl+Shift+C"))
        action(edit_menu, "&Stop answer", self.stop, QKeySequence(Qt.Key.Key_Escape))
        view_menu = self.menuBar().addMenu("&View")
        action(view_menu, "Zoom &in", lambda: self.canvas.zoom_by(1.25), QKeySequence("+"))
        action(view_menu, "Zoom &out", lambda: self.canvas.zoom_by(1 / 1.25), QKeySequence("-"))
        action(view_menu, "&Fit to window", self.canvas.fit, QKeySequence("0"))
        self.boxes_action = action(view_menu, "Show detection &boxes", self._toggle_boxes, QKeySequence("Ctrl+B"))
        self.boxes_action.setCheckable(True)
        self.boxes_action.setChecked(True)

    def _connect(self) -> None:
        w = self.engine.worker
        w.started.connect(self._on_started)
        w.token.connect(self._on_token)
        w.finished.connect(self._on_finished)
        w.cancelled.connect(self._on_cancelled)
        w.failed.connect(self._on_failed)
        w.prefill_progress.connect(self._on_prefill_progress)
        self.loader.loaded.connect(self._on_image_loaded)
        self.loader.failed.connect(self._on_image_failed)
        self.chat.image_offered.connect(self._on_image_offered)
        self.chat.send_requested.connect(self.send)
        self.chat.stop_requested.connect(self.stop)
        self.chat.copy_requested.connect(self.copy_turn)
        self.chat.regenerate_requested.connect(self.regenerate)
        self.chat.edit_requested.connect(self.edit_turn)
        self.chat.version_shown.connect(self._on_version_shown)
        self.chat.show_requested.connect(self._on_version_shown)  # "Show on image", or a click on the card
        self.image_shown.connect(self.chat.focus_input)
        self.chat.set_tab_order_after(self.canvas)
        self.boxes_toggle.toggled.connect(self._set_boxes_visible)

    # -- model (views/model_manager.py does the work) -----------------------------------------------------------
    def open_model_picker(self) -> None:
        self.models.open_picker()

    def download_model(self, repo_id: str) -> None:
        self.models.download(repo_id)

    def load_model(self, path: str) -> None:
        self.models.load(path)

    def choose_model_folder(self) -> None:
        self.models.choose_folder()

    @property
    def download_dialog(self):
        return self.models.download_dialog

    def _on_model_changed(self) -> None:
        text, actions = self.models.chat_placeholder()
        if not text and self.image is None and self.engine.ready:
            text = "<p>Model ready. Drop an image to start.</p>"
        self.chat.set_placeholder(text, actions)
        self._update_title()
        self._refresh_controls()

    def _update_title(self) -> None:
        self.setWindowTitle(window_title(self.image.name if self.image else "", self.models.name, APP_NAME))

    # -- images ---------------------------------------------------------------------------------------------------
    def choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open an image", start_folder(self.store), IMAGE_FILTER)
        if path:
            remember_folder(path, self.store)
            self.open_image(path)

    def open_image(self, source, name: str | None = None) -> None:
        """A path, encoded bytes or a QImage; decoded off the GUI thread."""
        name = name or (Path(source).name if isinstance(source, (str, Path)) else "pasted image")
        self.image_info.setText(f"Opening {name}…")  # a 50-megapixel photo takes a second or two to decode
        self.loader.load(source, name)

    def _on_image_loaded(self, image: LoadedImage) -> None:
        self.image = image
        self.notice.clear(cause.IMAGE, cause.INPUT)
        entry = self.session.open(image.key, image.name, *image.size)
        self.canvas.set_image(image.qimage)
        self.image_info.setText(f"{image.name} — {image.size[0]} × {image.size[1]} px")
        self.chat.set_placeholder(*self.models.chat_placeholder())  # "Loading…" stays until the model is ready
        self._update_title()
        self.chat.show_turns(entry.turns)
        last_done = next((t for t in reversed(entry.turns) if t.state == DONE), None)
        self._show_detections(last_done)
        self._refresh_controls()
        self.image_shown.emit(image.key)

    def refresh_conversation(self) -> None:
        """Show the current image's turns again (history has put its stored turns in front)."""
        if (entry := self.session.current) is not None:
            self.chat.show_turns(entry.turns)
            self._show_detections(next((t for t in reversed(entry.turns) if t.state == DONE), None))

    def _on_image_offered(self, mime) -> None:
        self._open_from_mime(mime, "pasted image")

    def _on_image_failed(self, message: str) -> None:
        self.image_info.setText(f"{self.image.name} — {self.image.size[0]} × {self.image.size[1]} px" if self.image
                                else "No image")
        self.notice.show_error(f"{message}. The current image is unchanged.", cause.IMAGE)

    def paste(self) -> None:
        mime = QGuiApplication.clipboard().mimeData()
        if not self._open_from_mime(mime, "pasted image"):
            self.notice.show_error("The clipboard holds no image or image file. Copy an image, then paste again.",
                                   cause.IMAGE)

    def _open_from_mime(self, mime, fallback_name: str) -> bool:
        if mime is None:
            return False
        local = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        if local:
            self.open_image(local[0])
            return True
        if mime.hasImage():
            image = QImage(mime.imageData())
            self.open_image(image, fallback_name)
            return True
        remote = [u for u in mime.urls() if u.scheme() in ("http", "https")]
        if remote:
            self.notice.show_error("The browser passed only a web address, not the image. "
                                   "Save the image first, then drop the file.", cause.IMAGE)
            return True
        text = mime.text().strip() if mime.hasText() else ""
        if text and Path(QUrl(text).toLocalFile() or text).is_file():
            self.open_image(QUrl(text).toLocalFile() or text)
            return True
        return False

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        mime = event.mimeData()
        if mime.hasUrls() or mime.hasImage():
            event.acceptProposedAction()
            self.drop_highlight.show_over(self.centralWidget())

    def dragLeaveEvent(self, event) -> None:
        self.drop_highlight.hide()
        super().dragLeaveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        self.drop_highlight.hide()
        if self._open_from_mime(event.mimeData(), "dropped image"):
            event.acceptProposedAction()
        else:
            self.notice.show_error("That is not an image. Drop an image file or an image from a browser.",
                                   cause.IMAGE)

    # -- asking ---------------------------------------------------------------------------------------------------
    def send(self, task: str, text: str) -> None:
        if self.engine.busy:
            self.notice.show_info(self._busy_message(), cause.BUSY)
            return
        if self.image is None or not self.engine.ready:
            self.notice.show_info("Open an image first." if self.image is None else "The model is not ready yet.",
                                  cause.INPUT)
            return
        lang = self.chat.language_code()
        try:
            prompt = build_prompt(task, text, lang) if task else typed_prompt(text, lang, self.chat.raw_mode())
        except PromptError as e:
            self.notice.show_info(str(e), cause.INPUT)
            return
        self.notice.clear(cause.INPUT)
        entry = self.session.current
        edited = self.chat.editing
        turn = edited.edited(prompt) if edited is not None and edited in entry.turns else Turn.ask(prompt)
        entry.turns.append(turn)  # an edit is a new turn at the bottom; the edited one stays as it was
        self.chat.add_turn(turn)
        self.chat.end_edit()
        self.chat.input.clear()
        self.chat.clear_task()
        self._ask(turn)

    def _busy_message(self) -> str:
        if self.engine.loading:
            return "The model is still loading. Wait for it to finish."
        _, image_key = self._requests.get(self.engine.active_request, (None, None))
        entry = self.session.entries.get(image_key) if image_key else None
        if entry is not None and entry.key != self.session.current_key:
            return (f"An answer about {entry.name} is still being written. Wait for it, or press Stop (Esc); "
                    "it stays with that image.")
        return "An answer is still being written. Wait for it, or press Stop (Esc)."

    def _ask(self, turn: Turn) -> None:
        request = self.engine.ask(self.image.pil, turn.prompt, self.settings.sampling())
        if request is None:  # validated above; only a race with a model reload gets here
            turn.latest.fail("The model is busy; try again.")
            self.chat.update_turn(turn)
            return
        self._requests[request] = (turn.id, self.image.key)
        self._show_detections(None)
        self._refresh_controls()

    def regenerate(self, turn_id: int) -> None:
        """Ask the shown version's prompt again as a new version of the turn; earlier answers stay browsable."""
        turn = self.session.find_turn(turn_id)
        if turn is None or self.engine.busy or not self.engine.ready or turn not in self.session.current.turns:
            return
        turn.regenerate()
        self.chat.update_turn(turn)
        self._ask(turn)

    def edit_turn(self, turn_id: int) -> None:
        if (turn := self.session.find_turn(turn_id)) is not None:
            self.chat.begin_edit(turn)

    def stop(self) -> None:
        """Esc, one layer at a time: stop the answer being written; else close the banner; else leave an edit or a
        half-chosen task (Detect…, Answer…)."""
        if self.engine.active_request is not None:
            self.engine.cancel()
        elif self.notice.isVisible():
            self.notice.dismiss()
        else:
            self.chat.cancel_pending()

    def _turn_for(self, request_id: int) -> Turn | None:
        turn_id, _ = self._requests.get(request_id, (None, None))
        return self.session.find_turn(turn_id) if turn_id else None

    def _on_started(self, request_id: int) -> None:
        if turn := self._turn_for(request_id):
            turn.latest.start()
            self.chat.update_turn(turn)

    def _on_token(self, request_id: int, text: str) -> None:
        if turn := self._turn_for(request_id):
            turn.latest.append(text)
            self.chat.append_delta(turn.id, text)

    def _on_prefill_progress(self, request_id: int, done: int, layers: int) -> None:
        if self._turn_for(request_id):  # a long prompt: its first token is still a while away
            self.statusBar().showMessage(f"Reading the prompt… {done / layers:.0%}", 5000)

    def _on_finished(self, request_id: int, stats: dict, state: str = DONE) -> None:
        turn = self._turn_for(request_id)
        _, image_key = self._requests.pop(request_id, (None, None))
        if turn is not None:
            turn.latest.finish(state, stats)
            turn.latest.detections = self._detections_for(turn, image_key)
            self.chat.flush()
            self.chat.update_turn(turn)
            self.notice.clear(cause.ANSWER, cause.BUSY, cause.DEVICE)
            if image_key == (self.image.key if self.image else None):
                self._show_detections(turn)
        self._refresh_controls()
        if turn is not None:
            self.answer_done.emit(turn.id)

    def _on_cancelled(self, request_id: int, stats: dict) -> None:
        self._on_finished(request_id, stats, STOPPED)

    def _on_failed(self, request_id: int, message: str) -> None:
        turn = self._turn_for(request_id)
        self._requests.pop(request_id, None)
        if turn is not None:
            turn.latest.fail(message)
            self.chat.flush()
            self.chat.update_turn(turn)
        self.notice.show_error(message, cause.ANSWER)
        self._refresh_controls()
        if turn is not None:
            self.answer_done.emit(turn.id)

    def _detections_for(self, turn: Turn | None, image_key: str | None):
        entry = self.session.entries.get(image_key) if image_key else None
        if turn is None or entry is None or not turn.answer or not is_location_task(turn.prompt):
            return []
        return parse_detections(turn.answer, entry.width, entry.height)

    def _show_detections(self, turn: Turn | None) -> None:
        detections = turn.current.detections if turn is not None else []
        self.canvas.set_detections(detections)
        self.boxes_toggle.setVisible(bool(detections))
        self.chat.mark_displayed(turn.id if detections else None)

    def _on_version_shown(self, turn_id: int) -> None:
        if (turn := self.session.find_turn(turn_id)) is not None and turn in self.session.current.turns:
            self._show_detections(turn)

    def _toggle_boxes(self) -> None:
        self.boxes_toggle.setChecked(self.boxes_action.isChecked())

    def _set_boxes_visible(self, visible: bool) -> None:
        self.boxes_action.setChecked(visible)
        self.canvas.set_boxes_visible(visible)

    # -- clipboard ------------------------------------------------------------------------------------------------
    def copy_turn(self, turn_id: int) -> None:
        if (turn := self.session.find_turn(turn_id)) and turn.answer:
            QGuiApplication.clipboard().setText(turn.answer)
            self.statusBar().showMessage("Answer copied", 2000)

    def copy_last_answer(self) -> None:
        if answer := self.session.last_answer():
            QGuiApplication.clipboard().setText(answer)
            self.statusBar().showMessage("Answer copied", 2000)

    # -- dialogs: imported when first opened, not before the window is shown -----------------------------------------
    def open_batch_dialog(self) -> None:
        from .batch_dialog import show_batch_dialog

        show_batch_dialog(self)

    def open_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self, devices=self.engine.devices)
        dialog.manage.clicked.connect(self.open_model_picker)
        if dialog.exec():
            old = (self.settings.device, self.settings.dtype)
            self.settings = dialog.result_settings()
            save_settings(self.store, self.settings)
            self.models.settings_changed(*old)
            self.api.apply()

    # -- state ----------------------------------------------------------------------------------------------------
    def _refresh_controls(self) -> None:
        self.chat.set_enabled_for_input(self.image is not None and self.engine.ready)
        self.chat.set_busy(self.engine.active_request is not None)

    def _restore_layout(self) -> None:
        if geometry := self.store.value("window/geometry"):
            self.restoreGeometry(geometry)
        if state := self.store.value("window/splitter"):
            self.splitter.restoreState(state)
        # Docks (History): as the person left them; on a first start a narrow window keeps the image column
        # usable by starting with History closed (View › History or Ctrl+H opens it).
        if docks := self.store.value("window/docks"):
            self.restoreState(docks)
            # Left open last time: kept open, over the image if the window is narrow.
            self._history_opened_by_hand = not self.history_panel.isHidden()
        elif min(self.width(), self.screen().availableGeometry().width()) < 1100:
            self.history_panel.hide()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._keep_image_room()

    def _keep_image_room(self) -> None:
        """A docked History must never squeeze the image below MIN_IMAGE_PX: made narrower, the window closes
        History (Ctrl+H opens it again); opened while the window is narrow, History floats over the window's left
        side instead of taking the image's width."""
        dock = getattr(self, "history_panel", None)
        if dock is None or not dock.isVisible() or dock.isFloating():
            return
        if self.width() - dock.width() - self.chat.minimumWidth() >= MIN_IMAGE_PX:
            return
        if not self.isVisible() or not self._history_opened_by_hand:
            dock.hide()
            self.statusBar().showMessage("History is closed to leave room for the image; Ctrl+H opens it.", 6000)
            return
        self._history_opened_by_hand = False
        self.statusBar().clearMessage()
        dock.setFloating(True)
        # Over the image column: below the menu bar, above the status bar (the central widget still has the
        # docked panel's geometry at this point, so the window's own is used).
        top = self.menuBar().height()
        top_left = self.mapToGlobal(QPoint(0, top))
        height = self.height() - top - self.statusBar().height()
        dock.setGeometry(top_left.x(), top_left.y(), min(320, self.width() // 2), height)

    def closeEvent(self, event) -> None:
        batch = getattr(self, "_batch_dialog", None)  # File › Process a folder, if it was opened
        if batch is not None and not batch.may_close_window():
            event.ignore()  # the person keeps the window and the run
            return
        if not self.unsaved.may_close():
            event.ignore()  # a last try to save first; the window closes itself, or asks, once it has answered
            return
        self.store.setValue("window/geometry", self.saveGeometry())
        self.store.setValue("window/splitter", self.splitter.saveState())
        self.store.setValue("window/docks", self.saveState())
        self.store.sync()
        self.models.shutdown()
        self.api.shutdown()  # before the engine: its scheduler runs on the engine's model
        self.engine.shutdown()
        self.history.shutdown()  # after the engine: the answer being written is saved as far as it got
        self.loader.wait()
        super().closeEvent(event)
