"""A real `python -m vlm_core serve` in a subprocess on 127.0.0.1 (port 0: it picks a free one and prints it)."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, model_dir: Path, *args: str, command: tuple[str, ...] = ("vlm_core", "serve")):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log_file = tempfile.NamedTemporaryFile("w+", prefix="serve-log-", suffix=".txt", delete=False)
        self.proc = subprocess.Popen([sys.executable, "-m", *command, "--model", str(model_dir),
                                      "--port", "0", "--device", "cpu", "--dtype", "float32", *args],
                                     stdout=subprocess.PIPE, stderr=self.log_file, text=True, env=env)
        line = self.proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if m is None:
            self.proc.kill()
            raise RuntimeError(f"the server did not start: {line!r}\n{self.log()}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return Path(self.log_file.name).read_text()

    def wait_log(self, text: str, timeout: float = 30) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.log():
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def random_png(seed: int, size=(60, 80)) -> bytes:
    img = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + b64(data)
