"""The main window: image canvas on the left, chat on the right, model status at the bottom.

The window validates an action first (pure functions in prompts.py), then disables what must not be pressed,
starts the job, and re-enables in the result handler. It never runs model work itself.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDragEnterEvent, QDropEvent, QGuiApplication, QIcon, QImage, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QMainWindow, QProgressBar, QPushButton, QSplitter,
                               QToolButton, QVBoxLayout, QWidget)

from vlm_core.weights import hub
from vlm_core.weights.catalog import DEFAULT_REPO, find_spec
from vlm_core.runtime.answers import parse_detections

from .. import APP_NAME
from ..assets import asset
from ..conversation import DONE, FAILED, STOPPED, STREAMING, Session, Turn
from ..jobs.engine_worker import EngineClient
from ..jobs.images import ImageLoader, LoadedImage
from ..prompts import PromptError, build_prompt, free_text_prompt, is_location_task
from ..settings import Settings, load_settings, save_settings
from .canvas import ImageCanvas
from .chat import ChatPanel
from .download_dialog import DownloadDialog, human_size
from .model_picker import ModelPicker
from .notice import Notice
from .settings_dialog import SettingsDialog

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.gif *.bmp *.tif *.tiff);;All files (*)"


class MainWindow(QMainWindow):
    image_shown = Signal(str)  # image key; for tests and scripting
    answer_done = Signal(int)  # turn id, after the window has shown the final state

    def __init__(self, model_dir: str | None = None, settings_store: QSettings | None = None):
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
        self._editing_turn: int | None = None

        self.engine = EngineClient(self)
        self.loader = ImageLoader(self)
        self._build_ui()
        self._build_menus()
        self._connect()
        self._refresh_controls()
        self._requested_model = model_dir or self.settings.model_dir or ""
        QTimer.singleShot(0, self._start_model)  # after the window is on screen

    # -- construction -------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.canvas = ImageCanvas()
        self.image_info = QLabel("No image")
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

        self.chat = ChatPanel()
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(self.chat)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([720, 520])
        self.chat.setMinimumWidth(380)

        self.notice = Notice()
        self.model_button = QPushButton("Models…")
        self.model_button.clicked.connect(self.open_model_picker)
        self.model_button.setVisible(False)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addWidget(self.notice)
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)

        self.status_model = QLabel("No model")
        self.status_memory = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setRange(0, 1000)
        self.progress.setVisible(False)
        bar = self.statusBar()
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.model_button)
        bar.addPermanentWidget(self.status_memory)
        bar.addPermanentWidget(self.status_model)

    def _build_menus(self) -> None:
        def action(menu, text, slot, shortcut=None, tip=""):
            a = QAction(text, self)
            if shortcut is not None:
                a.setShortcut(shortcut)
            a.setStatusTip(tip)
            a.triggered.connect(slot)
            menu.addAction(a)
            return a

        file_menu = self.menuBar().addMenu("&File")
        action(file_menu, "&Open image…", self.choose_image, QKeySequence.StandardKey.Open)
        action(file_menu, "&Models…", self.open_model_picker, QKeySequence("Ctrl+M"))
        action(file_menu, "Open &model folder…", self.choose_model_folder)
        file_menu.addSeparator()
        action(file_menu, "&Settings…", self.open_settings, QKeySequence.StandardKey.Preferences)
        file_menu.addSeparator()
        action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        edit_menu = self.menuBar().addMenu("&Edit")
        action(edit_menu, "&Paste image", self.paste, QKeySequence.StandardKey.Paste)
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
        w.load_progress.connect(self._on_load_progress)
        w.model_ready.connect(self._on_model_ready)
        w.load_failed.connect(self._on_load_failed)
        w.started.connect(self._on_started)
        w.token.connect(self._on_token)
        w.finished.connect(self._on_finished)
        w.cancelled.connect(self._on_cancelled)
        w.failed.connect(self._on_failed)
        w.memory.connect(self._on_memory)
        self.loader.loaded.connect(self._on_image_loaded)
        self.loader.failed.connect(self._on_image_failed)
        self.chat.image_offered.connect(self._on_image_offered)
        self.chat.send_requested.connect(self.send)
        self.chat.stop_requested.connect(self.stop)
        self.chat.copy_requested.connect(self.copy_turn)
        self.chat.regenerate_requested.connect(self.regenerate)
        self.chat.edit_requested.connect(self.edit_turn)
        self.boxes_toggle.toggled.connect(self._set_boxes_visible)

    # -- model ----------------------------------------------------------------------------------------------------
    def _start_model(self) -> None:
        """Load what was asked for (a folder or a repo id) or the default model if it is installed; otherwise say
        what is missing and offer to get it. Never needs the network."""
        requested = self._requested_model
        try:
            if requested:
                self.load_model(str(hub.resolve_model(requested, Path(self.settings.models_folder()))))
                return
            if path := hub.find_installed(DEFAULT_REPO, Path(self.settings.models_folder())):
                self.load_model(str(path))
                return
        except hub.HubError as e:
            repo = requested if requested.count("/") == 1 and find_spec(requested) else None
            self._offer_model(f"{e}.", repo)
            return
        self._offer_model("", DEFAULT_REPO)

    def _offer_model(self, problem: str, repo_id: str | None) -> None:
        spec = find_spec(repo_id) if repo_id else None
        actions = []
        text = f"<h3>No model yet</h3><p>{problem}</p>" if problem else "<h3>No model yet</h3>"
        if spec is not None:
            text += (f"<p>PaliGemma Desktop needs PaliGemma 2 weights. The recommended start is <b>{spec.title}</b> "
                     f"(<tt>{spec.repo_id}</tt>): a {human_size(spec.download_bytes)} download that needs about "
                     f"{human_size(spec.memory_bytes)} of GPU memory.</p>")
            if hub.is_offline():
                text += "<p>You are offline (HF_HUB_OFFLINE): downloading needs a connection.</p>"
            else:
                actions.append((f"Download it ({human_size(spec.download_bytes)})",
                                lambda: self.download_model(spec.repo_id)))
        text += ("<p>Or point the app at a model folder you already have (config.json, tokenizer.model, "
                 "*.safetensors) with <tt>--model DIR</tt>.</p>")
        actions += [("Choose a model…", self.open_model_picker), ("Open a local folder…", self.choose_model_folder)]
        self.model_button.setVisible(True)
        self.chat.set_placeholder(text, actions)
        self._refresh_controls()

    def open_model_picker(self) -> None:
        picker = ModelPicker(self.settings.models_folder(), current=self._current_repo(), parent=self)
        picker.model_chosen.connect(self.load_model)
        picker.open()
        self._picker = picker

    def _current_repo(self) -> str:
        parts = Path(self.settings.model_dir).parts
        folder = next((p for p in parts if p.startswith("models--")), "")
        return folder.removeprefix("models--").replace("--", "/", 1)

    def download_model(self, repo_id: str) -> None:
        spec = find_spec(repo_id)
        dialog = DownloadDialog(repo_id, spec.title if spec else repo_id, self.settings.models_folder(), self)
        dialog.downloaded.connect(self.load_model)
        dialog.start()
        dialog.open()
        self.download_dialog = dialog

    def load_model(self, path: str) -> None:
        self.model_info = None
        self.settings.model_dir = str(path)
        self.chat.set_placeholder(f"<p>Loading <b>{Path(path).name}</b>…</p>")
        self.status_model.setText(f"Loading {Path(path).name}…")
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.model_button.setVisible(False)
        self.engine.load(str(path), self.settings.device, self.settings.dtype)
        self._refresh_controls()

    def choose_model_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a PaliGemma 2 model folder")
        if path:
            self.load_model(path)


    def _on_load_progress(self, fraction: float) -> None:
        self.progress.setValue(int(fraction * 1000))

    def _on_model_ready(self, info: dict) -> None:
        self.model_info = info
        self.progress.setVisible(False)
        save_settings(self.store, self.settings)
        self.status_model.setText(f"{info['name']} · {info['device']} · {info['dtype']}")
        self._on_memory(info["memory_bytes"])
        self.chat.set_placeholder("" if self.image else "<p>Model ready. Drop an image to start.</p>")
        self._refresh_controls()

    def _on_load_failed(self, message: str) -> None:
        self.progress.setVisible(False)
        self.model_button.setVisible(True)
        self.status_model.setText("No model")
        self.notice.show_error(f"The model could not be loaded: {message}")
        self.chat.set_placeholder(f"<h3>The model could not be loaded</h3><p>{message}</p>",
                                  [("Choose a model…", self.open_model_picker),
                                   ("Open a local folder…", self.choose_model_folder)])
        self._refresh_controls()

    def _on_memory(self, n: int) -> None:
        self.status_memory.setText(f"{human_size(n)} in use")

    # -- images ---------------------------------------------------------------------------------------------------
    def choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open an image", "", IMAGE_FILTER)
        if path:
            self.open_image(path)

    def open_image(self, source, name: str | None = None) -> None:
        """A path, encoded bytes or a QImage; decoded off the GUI thread."""
        self.loader.load(source, name or (Path(source).name if isinstance(source, (str, Path)) else "pasted image"))

    def _on_image_loaded(self, image: LoadedImage) -> None:
        self.image = image
        self.notice.hide()
        entry = self.session.open(image.key, image.name, *image.size)
        self.canvas.set_image(image.qimage)
        self.image_info.setText(f"{image.name} — {image.size[0]} × {image.size[1]} px")
        self.chat.set_placeholder("")
        self.chat.show_turns(entry.turns)
        last_done = next((t for t in reversed(entry.turns) if t.state == DONE), None)
        self._show_detections(last_done)
        self._refresh_controls()
        self.image_shown.emit(image.key)

    def _on_image_offered(self, mime) -> None:
        self._open_from_mime(mime, "pasted image")

    def _on_image_failed(self, message: str) -> None:
        self.notice.show_error(f"{message}. The current image is unchanged.")

    def paste(self) -> None:
        mime = QGuiApplication.clipboard().mimeData()
        if not self._open_from_mime(mime, "pasted image"):
            self.notice.show_error("The clipboard holds no image or image file. Copy an image, then paste again.")

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
                                   "Save the image first, then drop the file.")
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

    def dropEvent(self, event: QDropEvent) -> None:
        if self._open_from_mime(event.mimeData(), "dropped image"):
            event.acceptProposedAction()
        else:
            self.notice.show_error("That is not an image. Drop an image file or an image from a browser.")

    # -- asking ---------------------------------------------------------------------------------------------------
    def send(self, task: str, text: str) -> None:
        if self.engine.busy:
            self.notice.show_info("An answer is still being written. Wait for it, or press Stop (Esc).")
            return
        if self.image is None or not self.engine.ready:
            self.notice.show_info("Open an image first." if self.image is None else "The model is not ready yet.")
            return
        try:
            prompt = build_prompt(task, text, self.chat.language_code()) if task else free_text_prompt(text)
        except PromptError as e:
            self.notice.show_info(str(e))
            return
        entry = self.session.current
        turn = self.session.find_turn(self._editing_turn) if self._editing_turn else None
        if turn is not None and turn in entry.turns:
            turn.restart(prompt)
            self.chat.update_turn(turn)
        else:
            turn = Turn(prompt)
            entry.turns.append(turn)
            self.chat.add_turn(turn)
        self._editing_turn = None
        self.chat.input.clear()
        self.chat.clear_task()
        self._ask(turn)

    def _ask(self, turn: Turn) -> None:
        request = self.engine.ask(self.image.pil, turn.prompt, self.settings.sampling())
        if request is None:  # validated above; only a race with a model reload gets here
            turn.state, turn.error = FAILED, "The model is busy; try again."
            self.chat.update_turn(turn)
            return
        self._requests[request] = (turn.id, self.image.key)
        self._show_detections(None)
        self._refresh_controls()

    def regenerate(self, turn_id: int) -> None:
        turn = self.session.find_turn(turn_id)
        if turn is None or self.engine.busy or not self.engine.ready:
            return
        turn.restart()
        self.chat.update_turn(turn)
        self._ask(turn)

    def edit_turn(self, turn_id: int) -> None:
        turn = self.session.find_turn(turn_id)
        if turn is not None:
            self._editing_turn = turn_id
            self.chat.edit(turn.prompt)

    def stop(self) -> None:
        """Esc: stop the answer being written; with none, leave a half-chosen task (Detect…, Answer…)."""
        if self.engine.active_request is not None:
            self.engine.cancel()
        else:
            self.chat.clear_task()

    def _turn_for(self, request_id: int) -> Turn | None:
        turn_id, _ = self._requests.get(request_id, (None, None))
        return self.session.find_turn(turn_id) if turn_id else None

    def _on_started(self, request_id: int) -> None:
        if turn := self._turn_for(request_id):
            turn.state = STREAMING
            self.chat.update_turn(turn)

    def _on_token(self, request_id: int, text: str) -> None:
        if turn := self._turn_for(request_id):
            turn.answer += text
            self.chat.append_delta(turn.id, text)

    def _on_finished(self, request_id: int, stats: dict, state: str = DONE) -> None:
        turn = self._turn_for(request_id)
        _, image_key = self._requests.pop(request_id, (None, None))
        if turn is not None:
            turn.state, turn.stats = state, stats
            self.chat.flush()
            self.chat.update_turn(turn, self._detections_for(turn, image_key))
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
            turn.state, turn.error = FAILED, message
            self.chat.flush()
            self.chat.update_turn(turn)
        self.notice.show_error(message)
        self._refresh_controls()
        if turn is not None:
            self.answer_done.emit(turn.id)

    def _detections_for(self, turn: Turn | None, image_key: str | None):
        entry = self.session.entries.get(image_key) if image_key else None
        if turn is None or entry is None or not turn.answer or not is_location_task(turn.prompt):
            return []
        return parse_detections(turn.answer, entry.width, entry.height)

    def _show_detections(self, turn: Turn | None) -> None:
        detections = self._detections_for(turn, self.image.key if self.image else None)
        self.canvas.set_detections(detections)
        self.boxes_toggle.setVisible(bool(detections))

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

    # -- settings -------------------------------------------------------------------------------------------------
    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        dialog.manage.clicked.connect(self.open_model_picker)
        if dialog.exec():
            old = (self.settings.device, self.settings.dtype)
            self.settings = dialog.result_settings()
            save_settings(self.store, self.settings)
            if old != (self.settings.device, self.settings.dtype) and self.settings.model_dir and not self.engine.busy:
                self.load_model(self.settings.model_dir)

    # -- state ----------------------------------------------------------------------------------------------------
    def _refresh_controls(self) -> None:
        self.chat.set_enabled_for_input(self.image is not None and self.engine.ready)
        self.chat.set_busy(self.engine.active_request is not None)

    def closeEvent(self, event) -> None:
        dialog = getattr(self, "download_dialog", None)
        if dialog is not None and dialog.job is not None and dialog.job.running:
            dialog.job.wait()  # the partial file stays; the next download resumes it
        self.engine.shutdown()
        self.loader.wait()
        super().closeEvent(event)
