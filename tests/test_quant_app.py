"""int8/int4 weights in the app: the Precision setting, the worker passing it to Engine.load, the status bar's
reason, a cancellable first (quantizing) load, and the Models dialog's size and fit per scheme."""

from __future__ import annotations

import pytest
import torch

from desktop_app.settings import DTYPES, Settings, load_precision, precision_note
from vlm_core.weights.quantize_cache import cache_path

from .test_app_window import LOAD_TIMEOUT, make_window, store  # noqa: F401 - fixtures


@pytest.mark.parametrize("setting,expected", [("auto", ("auto", "auto")), ("float32", ("float32", "none")),
                                              ("bfloat16", ("bfloat16", "none")), ("int8 weights", ("auto", "int8")),
                                              ("int4 weights", ("auto", "int4"))])
def test_precision_setting_maps_to_dtype_and_quant(setting, expected):
    assert setting in DTYPES and Settings(dtype=setting).validated().dtype == setting
    assert load_precision(setting) == expected


def test_the_note_says_what_int8_and_int4_do_on_this_kind_of_cpu():
    assert "no native bfloat16" in precision_note("float32") and "a memory saving here" in precision_note("float32")
    assert "no native bfloat16" not in precision_note("bfloat16")


def test_settings_dialog_offers_int8_and_int4_weights(qtbot):
    from desktop_app.views.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(dtype="int4 weights"), devices={"present": ["cpu"], "missing": {}, "gpu": {},
                                                             "auto_dtypes": {"cpu": "float32"}})
    qtbot.addWidget(dialog)
    offered = [dialog.dtype.itemText(i) for i in range(dialog.dtype.count())]
    assert {"int8 weights", "int4 weights"} <= set(offered)
    assert dialog.result_settings().dtype == "int4 weights"
    assert "no native bfloat16" in dialog.precision_note.text()


def test_the_window_loads_int8_weights_and_says_so(qtbot, store, make_window, make_checkpoint):
    model = make_checkpoint(dtype=torch.bfloat16, seed=7)
    store.setValue("dtype", "int8 weights")
    window = make_window(None, wait_ready=False)
    with qtbot.waitSignal(window.engine.worker.model_ready, timeout=LOAD_TIMEOUT) as ready:
        window.load_model(str(model))
    info = ready.args[0]
    assert info["dtype"].endswith(", int8 weights")
    assert "int8 weights" in info["choices"] and "as chosen" in info["choices"]
    assert cache_path(model, "int8").is_file()


def test_a_first_quantizing_load_can_be_cancelled_and_leaves_no_cache(qtbot, store, make_window, make_checkpoint):
    from vlm_core.weights.toy import MEDIUM_TEXT, MEDIUM_VISION

    medium = make_checkpoint(text=MEDIUM_TEXT, vision=MEDIUM_VISION, dtype=torch.bfloat16, shards=3)
    store.setValue("dtype", "int4 weights")
    window = make_window(None, wait_ready=False)
    window.load_model(str(medium))
    with qtbot.waitSignal(window.engine.worker.load_progress, timeout=LOAD_TIMEOUT):
        pass
    with qtbot.waitSignal(window.engine.worker.load_failed, timeout=LOAD_TIMEOUT) as failed:
        window.models.status.cancel.click()
    assert failed.args[1] == "cancelled" and not window.engine.ready
    assert not cache_path(medium, "int4").exists() and not list(medium.glob("quantized/*.partial"))


def test_models_dialog_shows_memory_and_fit_per_scheme(qtbot, tmp_path):
    from desktop_app.views.model_picker import COLUMNS, ModelPicker
    from vlm_core.weights.catalog import find_spec

    gib = 2 ** 30
    picker = ModelPicker(str(tmp_path), memory=("NVIDIA RTX 3050", 8 * gib), memory_factor=1.0)
    qtbot.addWidget(picker)
    assert COLUMNS[-1] == "int8 · int4 weights"
    ten = find_spec("google/paligemma2-10b-mix-224")
    cell = picker.quant_cell(ten)
    int8, int4 = cell.split(" · ")
    assert int8.endswith("too large") and int4.endswith(("fits", "tight"))  # 10B: int4 fits an 8 GB GPU
    assert ten.scheme_memory_bytes("int4") < ten.scheme_memory_bytes("int8") < ten.memory_bytes
