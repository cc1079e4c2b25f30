"""The window's model half: what is loaded, loading it (checked first, cancellable), the Models dialog, downloads
that run behind a status-bar item, deleting the model in use, and device settings that never break a working setup.

Flow of a load:  load(path) ─▶ ModelCheck (thread pool: config, tokenizer, weight index) ─▶ passed ─▶ engine.load
A folder that fails the check never reaches the engine, so the model loaded now stays loaded and usable.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog

from vlm_core.weights import hub
from vlm_core.weights.catalog import DEFAULT_REPO, find_spec

from ..jobs.model_check import ModelCheck
from ..jobs.repair_check import RepairCheck
from ..machine import memory_factor, memory_target
from ..model_names import display_name, repo_id_of
from ..settings import save_settings
from ..wording import keep_flags_together, without_cli_advice
from . import notice as cause
from .confirm import ask
from .download_dialog import DownloadDialog, human_size
from .model_files import cache_of
from .model_picker import ModelPicker
from .status_bar import DownloadStatus, ModelStatus

_DEVICE_WORDS = {"cuda": "the NVIDIA GPU (cuda)", "mps": "the Mac's GPU (mps)", "cpu": "the CPU"}


class ModelManager(QObject):
    changed = Signal()  # loaded, unloaded or loading: the window updates its title and controls

    def __init__(self, window, device: str | None = None, dtype: str | None = None):
        super().__init__(window)
        self.w = window
        self.engine = window.engine
        self.override = (device, dtype)  # from the command line: this run only, never saved
        self.status = ModelStatus()
        self.download_status = DownloadStatus()
        self.check = ModelCheck(self)
        self.loaded_path = ""  # the folder of the model that answers now
        self.loading_path = ""
        self._loading_with: tuple[str, str] = ("auto", "auto")
        self._placeholder: tuple[str, list] = ("", [])  # what the chat shows while there is no model to use
        self.download_dialog: DownloadDialog | None = None
        self.picker: ModelPicker | None = None
        self._pending_delete = ""
        self._offer: tuple[str, str | None] | None = None
        self._repairing = ""  # the repo a running DownloadDialog repairs: loaded afterwards only if it is wanted
        self.status.cancel_clicked.connect(self.cancel_load)
        self.download_status.show_clicked.connect(self._show_download)
        self.check.passed.connect(self._start_load)
        self.check.failed.connect(self._on_check_failed)
        self.repair_check = RepairCheck(self)
        self.repair_check.damaged.connect(self._offer_repair)
        w = self.engine.worker
        w.load_stage.connect(self._on_load_stage)
        w.load_progress.connect(self._on_load_progress)
        w.model_ready.connect(self._on_model_ready)
        w.load_failed.connect(self._on_load_failed)
        w.unloaded.connect(self._on_unloaded)
        w.memory.connect(self.status.set_memory)
        w.devices.connect(self._on_devices)

    # -- what is loaded --------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The loaded model's repo name (never a snapshot's commit hash); "" when none is loaded."""
        return display_name(self.loaded_path) if self.loaded_path and self.engine.ready else ""

    @property
    def loading(self) -> bool:
        return bool(self.loading_path)

    def chat_placeholder(self) -> tuple[str, list]:
        """What the chat shows instead of turns until a model is usable ("Loading…", "No model yet")."""
        return ("", []) if self.engine.ready and not self.loading else self._placeholder

    def _set_placeholder(self, text: str, actions: list = ()) -> None:
        self._placeholder = (text, list(actions))  # the window shows it on `changed`

    # -- start-up ------------------------------------------------------------------------------------------
    def start(self, requested: str) -> None:
        """Load what was asked for (a folder or a repo id) or the default model if it is installed; otherwise say
        what is missing and offer to get it. Never needs the network."""
        try:
            if requested:
                self.load(str(hub.resolve_model(requested, Path(self.w.settings.models_folder()))))
                return
            if path := hub.find_installed(DEFAULT_REPO, Path(self.w.settings.models_folder())):
                self.load(str(path))
                return
        except hub.HubError as e:
            repo = requested if requested.count("/") == 1 and find_spec(requested) else None
            self.offer(f"{e}.", repo)
            return
        self.offer("", DEFAULT_REPO)
        self.engine.probe()  # learn the devices (and GPU memory) for Settings and the Models dialog meanwhile

    def offer(self, problem: str, repo_id: str | None) -> None:
        spec = find_spec(repo_id) if repo_id else None
        actions = []
        text = f"<h3>No model yet</h3><p>{problem}</p>" if problem else "<h3>No model yet</h3>"
        self._offer = (problem, repo_id)  # said again once the devices are known (the memory words)
        if spec is not None:
            text += (f"<p>PaliGemma Desktop needs PaliGemma 2 weights. The recommended start is <b>{spec.title}</b> "
                     f"(<tt>{spec.repo_id}</tt>): a {human_size(spec.download_bytes)} download that needs about "
                     f"{self._memory_words(spec.memory_bytes)}.</p>")
            if hub.is_offline():
                text += "<p>You are offline (HF_HUB_OFFLINE): downloading needs a connection.</p>"
            else:
                partial = hub.disk_usage(spec.repo_id, Path(self.w.settings.models_folder()))
                label = (f"Resume download ({human_size(partial)} of {human_size(spec.download_bytes)})" if partial
                         else f"Download it ({human_size(spec.download_bytes)})")
                actions.append((label, lambda: self.download(spec.repo_id)))
        text += ("<p>Or open a model folder you already have (config.json, tokenizer.model, *.safetensors) "
                 "with <b>Open a local folder…</b> below.</p>")
        actions += [("Choose a model…", self.open_picker), ("Open a local folder…", self.choose_folder)]
        self.w.model_button.setVisible(True)
        self.status.show_text("No model")
        self._set_placeholder(text, actions)
        self.changed.emit()

    def _memory_words(self, bf16_bytes: int) -> str:
        """The memory a model needs on what this machine would run it on: "6.8 GB of memory" until PyTorch has
        said, then "13.6 GB of RAM (on the CPU, in float32)" or "6.8 GB of GPU memory (NVIDIA …)"."""
        devices = self.engine.devices
        if devices is None:
            return f"{human_size(bf16_bytes)} of memory"
        device = self.override[0] or self.w.settings.device
        dtype = self.override[1] or self.w.settings.dtype
        where, _ = memory_target(devices, device)
        factor = memory_factor(devices, where, dtype)
        if where.startswith("RAM"):
            precision = "float32" if factor == 2.0 else "bfloat16"
            return f"{human_size(bf16_bytes * factor)} of RAM (it runs on the CPU here, in {precision})"
        if "unified" in where:
            return f"{human_size(bf16_bytes * factor)} of {where}"
        return f"{human_size(bf16_bytes * factor)} of GPU memory ({where})"

    def _on_devices(self, _report: dict) -> None:
        if self._offer is not None and not (self.engine.ready or self.loading) and self._placeholder[0]:
            self.offer(*self._offer)

    # -- loading -------------------------------------------------------------------------------------------
    def load(self, path: str, device: str | None = None, dtype: str | None = None) -> None:
        """Check the folder off the GUI thread, then load it; a folder that fails keeps the current model."""
        settings = self.w.settings
        self._loading_with = (device or self.override[0] or settings.device, dtype or self.override[1]
                              or settings.dtype)
        self.status.show_busy(f"Checking {display_name(path)}…")
        self.check.check(str(path))

    def _start_load(self, path: str) -> None:
        name = display_name(path)
        self._offer = None
        self.loading_path = path
        self.w.model_info = None
        self._set_placeholder(f"<p>Loading <b>{name}</b>…</p>")
        self.status.show_busy(f"Loading {name}…")
        self.w.model_button.setVisible(False)
        self.engine.load(path, *self._loading_with, cuda_graphs=self.w.settings.cuda_graphs)
        self.changed.emit()

    def _on_check_failed(self, path: str, problem: str) -> None:
        message = keep_flags_together(f"{display_name(path)} is not a usable model: {problem}")
        if self.engine.ready and self.loaded_path:
            self.status.show_text(self._ready_text())
            self.w.notice.show_error(f"{message}. {self.name} stays loaded.", cause.MODEL)
            return
        self._show_failure(message, path)

    def cancel_load(self) -> None:
        if self.loading:
            self.status.cancelling()
            self.engine.cancel()

    def _on_load_stage(self, stage: str) -> None:
        if not self.loading:
            return
        if stage == "torch":
            self.status.show_busy("Starting PyTorch…")
        else:
            self.status.show_progress(f"Loading {display_name(self.loading_path)}…", 0.0)

    def _on_load_progress(self, fraction: float) -> None:
        if self.loading:
            self.status.show_progress(f"Loading {display_name(self.loading_path)}…", fraction)

    def _ready_text(self) -> str:
        info = self.w.model_info or {}
        return f"{self.name} · {info.get('device', '')} · {info.get('dtype', '')}"

    def _on_model_ready(self, info: dict) -> None:
        if self.engine.stale(info):
            return
        self.loaded_path, self.loading_path = self.loading_path, ""
        self.w.model_info = info
        self.w.settings.model_dir = self.loaded_path
        save_settings(self.w.store, self.w.settings)
        self.status.show_text(self._ready_text())
        # What auto chose and why (bfloat16 only where the CPU has it natively, threads, CUDA graphs), on the
        # status bar's model label (a temporary status message would run under the permanent memory label).
        self.status.label.setToolTip(info.get("choices", ""))
        self.status.set_memory(info["memory_bytes"])
        self.w.notice.clear(cause.MODEL)
        self._placeholder = ("", [])
        self.changed.emit()

    def _on_load_failed(self, message: str, kind: str) -> None:
        if self.engine.stale(kind=kind):
            return
        path, self.loading_path = self.loading_path, ""
        self.loaded_path = ""  # the worker released the previous model before loading this one
        self.status.set_memory(None)
        device = self._loading_with[0]
        if kind == "device" and device != "auto":
            self._fall_back_to_auto(path, device, message)
            return
        if kind == "cancelled":
            self.status.show_text("No model")
            self._set_placeholder(f"<h3>Loading {display_name(path)} was cancelled</h3>",
                                  [("Load it again", lambda: self.load(path)), ("Choose a model…", self.open_picker)])
            self.w.model_button.setVisible(True)
            self.changed.emit()
            return
        self._show_failure(keep_flags_together(message), path)

    def _fall_back_to_auto(self, path: str, device: str, message: str) -> None:
        """A device that failed is never kept: the setting goes back to auto, which loads wherever works."""
        settings = self.w.settings
        if settings.device == device:
            settings.device = "auto"
            save_settings(self.w.store, settings)
        self.override = ("auto" if self.override[0] else None, self.override[1])
        self.w.notice.show_error(
            f"The model could not run on {_DEVICE_WORDS.get(device, device)}: {without_cli_advice(message)}. The "
            "device setting is back to auto; loading it there instead.", cause.DEVICE)  # until the first answer
        self.load(path, "auto")

    def _show_failure(self, message: str, path: str = "") -> None:
        self.status.show_text("No model")
        self.w.model_button.setVisible(True)
        self.w.notice.show_error(f"The model could not be loaded: {message}", cause.MODEL)
        self._set_placeholder(f"<h3>The model could not be loaded</h3><p>{message}</p>",
                              [("Choose a model…", self.open_picker), ("Open a local folder…", self.choose_folder)])
        self.changed.emit()
        if repo_id_of(path):
            self.repair_check.check(path)  # a damaged download can be repaired: see _offer_repair

    def _offer_repair(self, path: str, bad: list) -> None:
        repo, (text, actions) = repo_id_of(path), self._placeholder
        if self.engine.ready or self.loading or not text:
            return
        self._set_placeholder(text + f"<p>{len(bad)} of its files are damaged ({', '.join(bad[:3])}).</p>",
                              [("Repair", lambda: self.repair(repo, cache_of(path))), *actions])
        self.changed.emit()

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self.w, "Open a PaliGemma 2 model folder", str(Path.home()))
        if path:
            self.load(path)

    # -- device settings -----------------------------------------------------------------------------------
    def settings_changed(self, old_device: str, old_dtype: str) -> None:
        """Device or precision changed in Settings: ask before reloading; "Later" applies them at the next load."""
        s = self.w.settings
        if (old_device, old_dtype) == (s.device, s.dtype) or not (self.loaded_path and self.engine.ready):
            return
        self.override = (None, None)  # the person chose in Settings: that beats the command line from now on
        if ask(self.w, "Reload the model?", f"Reload {self.name} now on {s.device}, {s.dtype}? "
               "The conversation stays; an answer being written stops.", "Reload now", "Later"):
            self.load(self.loaded_path)
        else:
            self.w.statusBar().showMessage("Device and precision apply when a model is next loaded.", 5000)

    # -- the Models dialog ---------------------------------------------------------------------------------
    def open_picker(self) -> None:
        where, total = memory_target(self.engine.devices, self._loading_with[0] if self.loading
                                     else (self.override[0] or self.w.settings.device))
        factor = memory_factor(self.engine.devices, where, self.override[1] or self.w.settings.dtype)
        picker = ModelPicker(self.w.settings.models_folder(), current=repo_id_of(self.loaded_path), parent=self.w,
                             memory=(where, total), memory_factor=factor, decoder_file=self.w.objects.vae_path or "")
        picker.model_chosen.connect(self.load)
        picker.download_requested.connect(self.download)
        picker.delete_in_use_requested.connect(self.delete_in_use)
        picker.repair_requested.connect(self.repair)
        picker.mask_decoder_requested.connect(self.w.objects.download_decoder)
        picker.mask_decoder_file_chosen.connect(self.w.objects.use_decoder_file)
        picker.open()
        self.picker = picker

    def delete_in_use(self, repo_id: str) -> None:
        """Unload first (so no file is open), then delete; the next start offers the download again."""
        self._pending_delete = repo_id
        self.loaded_path = ""
        self.w.model_info = None
        self.w.settings.model_dir = ""
        save_settings(self.w.store, self.w.settings)
        self.engine.unload()

    def _on_unloaded(self) -> None:
        repo, self._pending_delete = self._pending_delete, ""
        if repo:
            hub.delete_model(repo, Path(self.w.settings.models_folder()))
            if self.picker is not None:
                self.picker.deleted_in_use()
            self.status.set_memory(None)
            self.offer(f"{find_spec(repo).title if find_spec(repo) else repo} was deleted.", DEFAULT_REPO)

    # -- downloads -----------------------------------------------------------------------------------------
    def download(self, repo_id: str, cache_dir: str = "", verb: str = "Downloading") -> None:
        if self.download_dialog is not None and self.download_dialog.running:
            self._show_download()  # one at a time: show the one that runs
            return
        spec = find_spec(repo_id)
        title = spec.title if spec else repo_id
        self._repairing = repo_id if verb == "Repairing" else ""
        dialog = DownloadDialog(repo_id, title, cache_dir or self.w.settings.models_folder(), self.w, verb=verb)
        dialog.downloaded.connect(self._on_downloaded)
        dialog.progressed.connect(lambda p: self.download_status.update_progress(title, p))
        dialog.hidden_to_background.connect(lambda: self.download_status.setVisible(True))
        dialog.stopped.connect(self._on_download_stopped)
        self.download_dialog = dialog
        dialog.start()
        dialog.show()

    def _show_download(self) -> None:
        if self.download_dialog is not None:
            self.download_dialog.show()
            self.download_dialog.raise_()
            self.download_dialog.activateWindow()
            if not self.download_dialog.running:
                self.download_status.setVisible(False)

    def repair(self, repo_id: str, cache_dir: str) -> None:
        """Download the model again where it is installed (our models folder or the Hugging Face cache): the files
        that pass their check stay, the damaged ones are fetched again."""
        self.download(repo_id, cache_dir, verb="Repairing")

    def _on_downloaded(self, path: str) -> None:
        self.download_status.setVisible(False)
        repaired, self._repairing = self._repairing, ""
        if repaired and self.engine.ready and repo_id_of(self.loaded_path) != repaired:
            self.w.statusBar().showMessage(f"{display_name(path)} is repaired.", 8000)  # another model is in use
            return
        self.load(path)  # the model in use is loaded again from its repaired files

    def _on_download_stopped(self, outcome: str) -> None:
        dialog = self.download_dialog
        if outcome == "cancelled" and dialog is not None:
            self.download_status.show_state(f"{human_size(dialog.bytes_done)} downloaded — Resume")
        else:
            self.download_status.setVisible(False)
        if dialog is not None and not (self.engine.ready or self.loading) and find_spec(dialog.repo_id):
            self.offer("", dialog.repo_id)  # the chat's offer says what is on disk now ("Resume download …")

    def shutdown(self) -> None:
        if self.download_dialog is not None and self.download_dialog.running:
            self.download_dialog.job.wait()  # the partial file stays; the next download resumes it
