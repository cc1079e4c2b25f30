"""Which answer's objects the image shows: an earlier detect or segment card goes back on the image with its
"Show on image" button or a click on the card, per version too, and the card says it is the one drawn; a segment
card's object lines say "mask" once the masks are drawn, never "(mask codes)". Real window, clicks."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QSettings, Qt

from desktop_app.conversation import DONE, Turn
from desktop_app.views.main_window import MainWindow
from vlm_core.runtime.answers import parse_detections

from .test_app_masks import ANSWER, vae_file, window  # noqa: F401 - the decoder and window fixtures

CUP = "<loc0100><loc0050><loc0700><loc0500> cup"
SPOON = "<loc0000><loc0000><loc0200><loc0300> spoon ; <loc0500><loc0500><loc0900><loc0900> fork"


def answered(w, prompt: str, *answers: str) -> Turn:
    """A finished turn as the window keeps one (one version per answer), added to the conversation on screen."""
    turn = Turn.ask(prompt)
    for i, text in enumerate(answers):
        if i:
            turn.regenerate()
        turn.latest.text = text
        turn.latest.finish(DONE, {"generated_tokens": 4, "ttft_s": 0.1, "decode_tokens_per_s": 10.0})
        turn.latest.detections = parse_detections(text, *w.image.size)
    w.session.current.turns.append(turn)
    return turn


def labels(w) -> list[str]:
    return [d.label for d in w.canvas.detections]


def test_an_earlier_detect_card_goes_back_on_the_image(qtbot, window):
    first = answered(window, "detect cup", CUP)
    second = answered(window, "detect spoon ; fork", SPOON, CUP + " ; " + SPOON)
    window.refresh_conversation()
    assert labels(window) == ["cup", "spoon", "fork"]  # the newest answer, its shown (latest) version
    first_card, second_card = window.chat.widget_for(first.id), window.chat.widget_for(second.id)
    qtbot.waitUntil(first_card.isVisible)
    assert second_card.show_button.isChecked() and not first_card.show_button.isChecked()
    assert first_card.show_button.isVisible() and first_card.show_button.text() == "Show on image"

    qtbot.mouseClick(first_card.show_button, Qt.MouseButton.LeftButton)
    assert labels(window) == ["cup"]
    assert first_card.show_button.isChecked() and first_card.show_button.text() == "On the image"
    assert not second_card.show_button.isChecked() and "dashed" in first_card.styleSheet()

    qtbot.mouseClick(second_card.prompt_label.viewport(), Qt.MouseButton.LeftButton)  # a click on the card
    assert labels(window) == ["cup", "spoon", "fork"] and second_card.show_button.isChecked()
    qtbot.mouseClick(second_card.previous_button, Qt.MouseButton.LeftButton)  # its first version
    assert labels(window) == ["spoon", "fork"] and second_card.show_button.isChecked()

    qtbot.mouseClick(first_card, Qt.MouseButton.LeftButton, pos=QPoint(4, 4))  # the card's own margin
    assert labels(window) == ["cup"]
    qtbot.mouseClick(second_card.show_button, Qt.MouseButton.LeftButton)
    assert labels(window) == ["spoon", "fork"]  # the version the card shows


def test_a_caption_card_offers_nothing_to_show(qtbot, window):
    detect = answered(window, "detect cup", CUP)
    caption = answered(window, "caption en", "a cup of coffee")
    window.refresh_conversation()
    caption_card = window.chat.widget_for(caption.id)
    qtbot.waitUntil(caption_card.isVisible)
    assert not caption_card.show_button.isVisible()
    assert labels(window) == []  # the newest answer found nothing to draw
    qtbot.mouseClick(caption_card, Qt.MouseButton.LeftButton, pos=QPoint(4, 4))
    assert labels(window) == []
    qtbot.mouseClick(window.chat.widget_for(detect.id).show_button, Qt.MouseButton.LeftButton)
    assert labels(window) == ["cup"]


def test_a_segment_card_says_mask_once_the_masks_are_drawn(qtbot, window):
    turn = answered(window, "segment cup ; saucer ; spoon", ANSWER)
    window.refresh_conversation()
    qtbot.waitUntil(lambda: window.objects.result is not None, timeout=30_000)
    card = window.chat.widget_for(turn.id)
    lines = card.detail_label.text().splitlines()[:3]
    assert "mask codes" not in card.detail_label.text()
    assert lines[0].startswith("• cup") and lines[0].endswith("· mask")
    assert lines[1].endswith("· mask") and not lines[2].endswith("mask")  # the spoon has a box only


def test_a_decoder_file_chosen_in_the_models_dialog_draws_the_masks(qtbot, tmp_path, photos, monkeypatch,
                                                                     vae_file):  # noqa: F811
    from .test_app_file_dialogs import answer_file_dialog, menu_action

    monkeypatch.delenv("PALIGEMMA_VAE", raising=False)
    w = MainWindow(model_dir=None, settings_store=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    w.settings.models_dir = str(tmp_path / "models")
    qtbot.addWidget(w)
    w.show()
    with qtbot.waitSignal(w.image_shown, timeout=10_000):
        w.open_image(str(photos[2]))
    answered(w, "segment cup ; saucer ; spoon", ANSWER)
    w.refresh_conversation()
    qtbot.waitUntil(w.objects.panel.download_button.isVisible, timeout=30_000)  # no decoder in the store

    menu_action(w, "File", "Models…")[1].trigger()
    picker = w.models.picker
    qtbot.waitUntil(picker.isVisible)
    assert picker.decoder_file_button.isVisible()
    seen = []
    answer_file_dialog(qtbot, seen, choose=str(vae_file))
    qtbot.mouseClick(picker.decoder_file_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: w.objects.result is not None, timeout=30_000)
    assert w.canvas.has_masks() and f"using {vae_file}" in picker.decoder_label.text()
    picker.close()
    w.close()
    again = MainWindow(model_dir=None, settings_store=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(again)
    assert again.objects.vae_path == str(vae_file)  # remembered
    again.close()


def test_a_discarded_decoder_download_points_at_the_window_not_the_command_line(qtbot, tmp_path, monkeypatch,
                                                                                vae_file):  # noqa: F811
    from desktop_app.views.download_dialog import DownloadDialog
    from vlm_core.weights import vae

    from .hub_server import HubServer, Repo

    with HubServer() as server:
        server.state.spaces[vae.MASK_DECODER_REPO] = Repo({vae.OFFICIAL_FILENAME: vae_file.read_bytes()})
        monkeypatch.setenv("HF_ENDPOINT", server.url)  # a file that is not Google's: its SHA-256 differs
        dialog = DownloadDialog(vae.MASK_DECODER_REPO, vae.MASK_DECODER_TITLE, str(tmp_path / "models"))
        qtbot.addWidget(dialog)
        dialog.show()
        dialog.start()
        qtbot.waitUntil(lambda: dialog.outcome == "corrupt", timeout=30_000)
    text = dialog.message.text()
    assert "discarded" in text and "--vae" not in text and "Choose a file…" in text
    assert dialog.file_label.text() == "The download stopped."  # nothing is kept: it was discarded
