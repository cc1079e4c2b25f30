"""Masks and objects in the app: decoding off the GUI thread, drawing, hover both ways, saving, the decoder's
download offer; and the canvas's zoom keys, 100% for small images and label chips (pytest-qt, offscreen)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QEvent, QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QImage, QMouseEvent
from PySide6.QtWidgets import QApplication

from desktop_app.views.canvas import ImageCanvas
from desktop_app.views.main_window import MainWindow
from vlm_core.runtime.answers import parse_objects
from vlm_core.runtime.masks import place_mask
from vlm_core.weights import vae

from .hub_server import HubServer, Repo
from .vae_fixture import write_random_vae

SEGS = [[(s * 7 + i * 13) % 128 for i in range(16)] for s in (1, 2)]
ANSWER = ("<loc0100><loc0050><loc0700><loc0500> " + "".join(f"<seg{c:03d}>" for c in SEGS[0]) + " cup ; "
          "<loc0300><loc0450><loc0950><loc1000> " + "".join(f"<seg{c:03d}>" for c in SEGS[1]) + " saucer ; "
          "<loc0000><loc0000><loc0200><loc0300> spoon")
TIMEOUT = 30_000


@pytest.fixture(scope="module")
def vae_file(tmp_path_factory):
    return write_random_vae(tmp_path_factory.mktemp("vae") / "vae-oid.npz", seed=5)


@pytest.fixture
def window(qtbot, tmp_path, photos, monkeypatch, vae_file):
    """The real window with an image open (no model needed for drawing objects)."""
    monkeypatch.setenv("PALIGEMMA_VAE", str(vae_file))
    w = MainWindow(model_dir=None, settings_store=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    w.settings.models_dir = str(tmp_path / "models")
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    with qtbot.waitSignal(w.image_shown, timeout=10_000):
        w.open_image(str(photos[2]))  # coffee.png, 600 x 400
    yield w
    w.close()


def show_answer(qtbot, w, answer=ANSWER):
    """What the window does with a finished detect/segment answer: its objects go to the canvas."""
    objects = parse_objects(answer, *w.image.size)
    w.canvas.set_detections(objects)
    if any(o.has_mask_codes for o in objects):
        qtbot.waitUntil(lambda: w.objects.result is not None or w.objects.panel.download_button.isVisible(),
                        timeout=TIMEOUT)
    return objects


def move_mouse(view, scene_point: QPointF):
    pos = QPointF(view.mapFromScene(scene_point))
    event = QMouseEvent(QEvent.Type.MouseMove, pos, view.viewport().mapToGlobal(pos), Qt.MouseButton.NoButton,
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view.viewport(), event)


def test_segment_answer_shows_masks_equal_to_the_placement(qtbot, window):
    objects = show_answer(qtbot, window)
    result = window.objects.result
    assert result is not None and window.canvas.has_masks()
    assert window.objects.masks_toggle.isVisible() and window.objects.panel.isVisible()
    assert [m is not None for m in result.masks] == [True, True, False]
    for det, logits, mask, overlay in zip(objects, result.logits, result.masks, result.overlays):
        if mask is None:
            assert overlay is None
            continue
        np.testing.assert_array_equal(mask, place_mask(logits, det))
        x, y, image = overlay
        x0, y0, x1, y1 = det.pixel_box
        assert (x, y, image.width(), image.height()) == (x0, y0, x1 - x0, y1 - y0)
        alpha = np.array([[image.pixelColor(i, j).alpha() for i in range(image.width())]
                          for j in range(image.height())])
        np.testing.assert_array_equal(alpha > 0, mask[y0:y1, x0:x1])  # the fill is exactly the mask
        colour = image.pixelColor(*np.argwhere(mask[y0:y1, x0:x1])[0][::-1])
        assert colour.rgb() & 0xFFFFFF == window.canvas.color_of(objects.index(det)).rgb() & 0xFFFFFF
    # the answer's version keeps the decoder output for the history store
    assert window.objects.panel.list.count() == 3 and "mask" in window.objects.panel.list.item(0).text()
    window.objects.masks_toggle.setChecked(False)
    assert not any(m.isVisible() for m in window.canvas._masks if m is not None)
    assert all(item.isVisible() for item in window.canvas._overlay)  # boxes are their own toggle
    window.objects.masks_toggle.setChecked(True)
    assert all(m.isVisible() for m in window.canvas._masks if m is not None)


def test_hover_names_the_object_and_links_list_and_canvas(qtbot, window):
    objects = show_answer(qtbot, window)
    canvas, lst = window.canvas, window.objects.panel.list
    mask = window.objects.result.masks[1]
    ys, xs = np.nonzero(mask & ~window.objects.result.masks[0])
    move_mouse(canvas, QPointF(xs[len(xs) // 2] + 0.5, ys[len(ys) // 2] + 0.5))
    assert canvas.hovered == 1 and lst.currentRow() == 1
    assert window.statusBar().currentMessage() == "saucer"
    assert canvas._masks[1].toolTip() == "saucer" and canvas._chips[1].toolTip() == "saucer"
    assert canvas._boxes[1].pen().widthF() > canvas._boxes[0].pen().widthF()
    lst.row_hovered.emit(2)  # hovering a list row (itemEntered) highlights its box on the canvas
    assert canvas.hovered == 2 and canvas._boxes[2].pen().widthF() > canvas._boxes[1].pen().widthF()
    assert objects[2].label == "spoon" and canvas._chips[2].highlighted
    lst.row_hovered.emit(-1)
    assert canvas.hovered == -1


def test_save_writes_mask_pngs_and_the_annotated_image(qtbot, window, tmp_path):
    show_answer(qtbot, window)
    with qtbot.waitSignal(window.objects.saver.saved, timeout=TIMEOUT):
        window.objects.save(str(tmp_path / "out"))
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["annotated.png", "mask-00-cup.png", "mask-01-saucer.png"]
    png = Image.open(tmp_path / "out" / "mask-01-saucer.png")
    assert png.mode == "L" and png.size == (600, 400)
    np.testing.assert_array_equal(np.asarray(png) == 255, window.objects.result.masks[1])
    assert Image.open(tmp_path / "out" / "annotated.png").size == (600, 400)
    assert "Saved 2 mask PNGs" in window.objects.panel.status.text()


def test_detections_need_no_decoder(qtbot, window, monkeypatch):
    monkeypatch.setattr(window.objects, "vae_path", str(window.settings.models_dir) + "/nowhere.npz")
    show_answer(qtbot, window, "<loc0000><loc0000><loc0500><loc0500> cup ; <loc0500><loc0500><loc0900><loc0900> mug")
    assert not window.objects.masks_toggle.isVisible() and not window.objects.panel.save_button.isVisible()
    assert window.objects.panel.list.count() == 2 and not window.objects.panel.download_button.isVisible()


def test_missing_decoder_offers_the_download_and_then_draws(qtbot, window, monkeypatch, vae_file):
    window.objects.vae_path = None  # the store, which is empty
    show_answer(qtbot, window)
    panel = window.objects.panel
    assert panel.download_button.isVisible() and "not downloaded yet" in panel.status.text()
    assert not window.canvas.has_masks()
    with HubServer() as server:
        server.state.spaces[vae.MASK_DECODER_REPO] = Repo({vae.OFFICIAL_FILENAME: vae_file.read_bytes()})
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(vae, "OFFICIAL_SHA256", vae.file_sha256(vae_file))  # the random file plays Google's
        panel.download_button.click()
        dialog = window.objects.download_dialog
        qtbot.waitUntil(lambda: dialog.outcome == "done", timeout=TIMEOUT)
        qtbot.waitUntil(lambda: window.objects.result is not None, timeout=TIMEOUT)
    assert window.canvas.has_masks() and not panel.download_button.isVisible()
    assert vae.find_mask_decoder(window.settings.models_dir) is not None


def test_stored_masks_are_drawn_without_the_decoder(qtbot, window, monkeypatch):
    """A restored conversation's version carries the decoder output; no weights are needed to draw it."""
    from desktop_app.conversation import Turn

    objects = parse_objects(ANSWER, *window.image.size)
    turn = Turn.ask("segment cup ; saucer")
    turn.latest.text, turn.latest.detections = ANSWER, objects
    turn.latest.masks = [np.full((64, 64), 1.0, np.float32), None, None]  # as records.py restores them
    window.session.current.turns.append(turn)
    monkeypatch.setattr(window.objects, "vae_path", "/nonexistent.npz")
    window.canvas.set_detections(objects)
    qtbot.waitUntil(lambda: window.objects.result is not None, timeout=TIMEOUT)
    x0, y0, x1, y1 = objects[0].pixel_box
    assert window.objects.result.masks[0][y0:y1, x0:x1].all() and window.objects.result.masks[1] is None


# -- the canvas on its own --------------------------------------------------------------------------------------------
@pytest.fixture
def canvas(qtbot):
    c = ImageCanvas()
    qtbot.addWidget(c)
    c.resize(800, 600)
    c.show()
    qtbot.waitExposed(c)
    c.activateWindow()
    return c


def image(w, h) -> QImage:
    img = QImage(w, h, QImage.Format.Format_RGB32)
    img.fill(0x808080)
    return img


def test_small_images_are_shown_at_100_percent_until_zoomed(canvas):
    canvas.set_image(image(200, 120))
    assert canvas.zoom() == 1.0
    canvas.resize(900, 700)
    QApplication.processEvents()
    assert canvas.zoom() == 1.0  # not blown up to the larger view
    canvas.zoom_by(1.25)
    assert canvas.zoom() == pytest.approx(1.25)
    canvas.set_image(image(4000, 3000))
    assert canvas.zoom() == pytest.approx(min(canvas.viewport().width() / 4000, canvas.viewport().height() / 3000))


@pytest.mark.parametrize("key, factor", [(Qt.Key.Key_Equal, 1.25), (Qt.Key.Key_Plus, 1.25), (Qt.Key.Key_Minus, 0.8)])
def test_ctrl_zoom_keys(qtbot, canvas, key, factor):
    canvas.set_image(image(400, 300))
    before = canvas.zoom()
    qtbot.keyClick(canvas, key, Qt.KeyboardModifier.ControlModifier)
    assert canvas.zoom() == pytest.approx(before * factor)
    qtbot.keyClick(canvas, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)
    assert canvas.zoom() == 1.0  # Ctrl+0: back to the fit (100% for this image)


CROWDED = ("<loc0100><loc0100><loc0400><loc0400> cat ; <loc0105><loc0102><loc0500><loc0600> cat ; "
           "<loc0110><loc0104><loc0450><loc0300> a very long label for a dog ; <loc0000><loc0000><loc1023><loc1023> x")


def test_label_chips_keep_their_screen_size_and_never_overlap(canvas):
    canvas.set_image(image(1000, 800))
    canvas.set_detections(parse_objects(CROWDED, 1000, 800))
    sizes = [(r.width(), r.height()) for r in canvas.chip_screen_rects()]
    for _ in range(2):
        rects = canvas.chip_screen_rects()
        assert [(r.width(), r.height()) for r in rects] == sizes  # constant on screen
        assert not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])
        canvas.zoom_by(2.5)
    canvas.fit()
    assert not any(a.intersects(b) for i, a in enumerate(canvas.chip_screen_rects())
                   for b in canvas.chip_screen_rects()[i + 1:])


def test_chip_sits_at_its_box(canvas):
    canvas.set_image(image(1000, 800))
    (det,) = parse_objects("<loc0500><loc0500><loc0900><loc0900> cat", 1000, 800)
    canvas.set_detections([det])
    (rect,) = canvas.chip_screen_rects()
    corner = canvas.mapFromScene(QPointF(det.box[0], det.box[1]))
    assert rect.left() == pytest.approx(corner.x(), abs=1) and rect.bottom() == pytest.approx(corner.y(), abs=1)


def test_right_click_offers_saving(qtbot, canvas):
    canvas.set_image(image(300, 200))
    canvas.set_detections(parse_objects("<loc0000><loc0000><loc0500><loc0500> cat", 300, 200))
    from PySide6.QtWidgets import QMenu

    menus = []

    def grab_menu():
        menu = next((m for m in QApplication.topLevelWidgets() if isinstance(m, QMenu) and m.isVisible()), None)
        if menu is not None:
            menus.append([a.text() for a in menu.actions()])
            with qtbot.waitSignal(canvas.save_requested, timeout=2000):
                menu.actions()[0].trigger()
            menu.close()

    from PySide6.QtCore import QTimer

    QTimer.singleShot(50, grab_menu)
    from PySide6.QtGui import QContextMenuEvent

    QApplication.sendEvent(canvas.viewport(), QContextMenuEvent(QContextMenuEvent.Reason.Mouse, QPoint(20, 20),
                                                                canvas.viewport().mapToGlobal(QPoint(20, 20))))
    assert menus and menus[0] == ["Save masks and annotated image…"]
