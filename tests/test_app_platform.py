"""Start-up on a stock Linux desktop: which system packages Qt's xcb plugin is missing, and Qt's own arguments."""

from __future__ import annotations

import os
import subprocess
import sys

from desktop_app.__main__ import build_parser, split_qt_args
from desktop_app.platform_check import XCB_PACKAGES, install_advice, missing_libraries, uses_xcb

# What ldd printed on a desktop that had only libxcb-cursor0 (the case the issue reports).
LDD = """\
\tlinux-vdso.so.1 (0x00007ffd8b5f2000)
\tlibQt6XcbQpa.so.6 => /opt/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f3a1c000000)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f3a1bff0000)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxkbcommon-x11.so.0 => not found
\tlibweird.so.7 => not found
"""


def test_ldd_output_names_every_missing_library_once():
    assert missing_libraries(LDD) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxkbcommon-x11.so.0",
                                      "libweird.so.7"]
    assert missing_libraries("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n") == []


def test_advice_names_the_debian_and_fedora_packages():
    advice = install_advice(missing_libraries(LDD))
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0" in advice
    assert "sudo dnf install libxkbcommon-x11 xcb-util-keysyms xcb-util-wm" in advice
    assert "libweird.so.7" in advice.splitlines()[-1]  # not in the table: named, not guessed


def test_the_table_covers_what_qt_6_xcb_needs():
    for soname in ("libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libxcb-image.so.0",
                   "libxcb-render-util.so.0", "libxkbcommon-x11.so.0"):
        debian, fedora = XCB_PACKAGES[soname]
        assert debian and fedora
    assert XCB_PACKAGES["libxcb-cursor.so.0"] == ("libxcb-cursor0", "xcb-util-cursor")


def test_xcb_is_checked_only_when_qt_will_use_it(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert uses_xcb({}) and uses_xcb({"QT_QPA_PLATFORM": "xcb"})
    assert not uses_xcb({"QT_QPA_PLATFORM": "offscreen"})
    assert not uses_xcb({"WAYLAND_DISPLAY": "wayland-0"})
    assert not uses_xcb({}, ["-platform", "offscreen"]) and uses_xcb({"QT_QPA_PLATFORM": "offscreen"}, ["-platform", "xcb"])
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not uses_xcb({})


def test_the_check_runs_as_a_module_and_respects_platform_arguments():
    out = subprocess.run([sys.executable, "-m", "desktop_app.platform_check", "-platform", "offscreen"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == ""


def test_qt_arguments_pass_through_argument_parsing():
    ours, qt = split_qt_args(["photo.jpg", "-style", "fusion", "--model", "m", "-platform=offscreen", "-reverse",
                              "--device", "cpu", "--dtype", "bfloat16"])
    assert qt == ["-style", "fusion", "-platform=offscreen", "-reverse"]
    args = build_parser().parse_args(ours)
    assert (args.image, args.model, args.device, args.dtype) == ("photo.jpg", "m", "cpu", "bfloat16")


def test_self_test_needs_no_screen(toy_model_dir):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = subprocess.run([sys.executable, "-c", "import sys; from desktop_app.__main__ import main; rc = main(); "
                          "print('qt imported:', any(m.startswith('PySide6.Qt') for m in sys.modules)); sys.exit(rc)",
                          "--self-test", str(toy_model_dir), "--device", "cpu"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "answer:" in out.stdout and "qt imported: False" in out.stdout


def test_vae_flag_points_the_objects_view_at_a_decoder_file(tmp_path, monkeypatch, capsys):
    from desktop_app.__main__ import main, use_vae

    monkeypatch.delenv("PALIGEMMA_VAE", raising=False)
    assert main(["--vae", str(tmp_path / "missing.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    npz = tmp_path / "vae.npz"
    npz.write_bytes(b"x")
    assert use_vae(str(npz)) is None
    assert os.environ["PALIGEMMA_VAE"] == str(npz)


def stub_tools(folder, names):
    """Executables that stand in for the system's ldd and notifiers: ldd prints LDD (libraries missing); each
    notifier writes its arguments to NAME.args."""
    folder.mkdir()
    (folder / "ldd").write_text("#!/bin/sh\ncat <<'EOF'\n" + LDD + "EOF\n")
    for name in names:
        (folder / name).write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{folder}/{name}.args"\n')
    for f in folder.iterdir():
        f.chmod(0o755)


def run_check(tmp_path, tools, names, display=":0"):
    stub_tools(tools, names)
    env = {**os.environ, "PATH": f"{tools}:/usr/bin:/bin", "QT_QPA_PLATFORM": "xcb", "DISPLAY": display,
           "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("WAYLAND_DISPLAY", None)
    return subprocess.run([sys.executable, "-m", "desktop_app.platform_check"], capture_output=True, text=True,
                          timeout=60, env=env)


def wait_for(path, timeout_s=10.0):
    import time

    for _ in range(int(timeout_s * 20)):  # the notifier runs detached; give it a moment to write
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


def test_a_start_up_failure_is_logged_and_shown_with_a_desktop_notifier(tmp_path):
    out = run_check(tmp_path, tmp_path / "bin", ["notify-send", "zenity", "xmessage"])
    assert out.returncode == 1 and "libxcb-icccm4" in out.stderr
    log = tmp_path / "state" / "paligemma-desktop" / "paligemma-desktop.log"
    assert "sudo apt install libxcb-icccm4" in log.read_text()  # always: the README names this file
    shown = wait_for(tmp_path / "bin" / "notify-send.args")
    assert "PaliGemma Desktop cannot start" in shown and "libxcb-icccm4" in shown and str(log) in shown
    assert not (tmp_path / "bin" / "zenity.args").exists()  # one message, not one per tool


def test_without_notify_send_a_dialog_tool_shows_it(tmp_path):
    run_check(tmp_path, tmp_path / "bin", ["kdialog"])
    shown = wait_for(tmp_path / "bin" / "kdialog.args")
    assert "--error" in shown and "sudo dnf install" in shown


def test_the_log_file_is_written_even_with_no_desktop_to_show_it_on(tmp_path):
    out = run_check(tmp_path, tmp_path / "bin", ["notify-send"], display="")
    assert out.returncode == 1
    assert (tmp_path / "state" / "paligemma-desktop" / "paligemma-desktop.log").is_file()
    assert not (tmp_path / "bin" / "notify-send.args").exists()
