"""Images in requests: `data:` URLs (OpenAI) and bare base64 (Ollama), decoded by the window's safe decoder.

Remote URLs (http, https, file, ...) are refused: fetching them would let any web page make this server read the
user's network or disk (SSRF). The bytes go through runtime.image.load_image, with its decompression-bomb limits.
"""

from __future__ import annotations

import binascii
import re

from ..errors import ImageError
from .errors import bad

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,",
                       re.ASCII)


def data_url_bytes(url: str, param: str) -> bytes:
    """A `data:` URL -> its bytes; anything else is a 400 that says to send one."""
    if not isinstance(url, str):
        raise bad("image_url.url must be a string", param)
    m = _DATA_URL.match(url)
    if m is None:
        scheme = url.split(":", 1)[0].lower() if ":" in url[:12] else ""
        what = f"{scheme}:// URLs are" if scheme else "this URL is"
        raise bad(f"{what} not fetched (the server never reads remote or local files): send the image inline as a "
                  "data: URL, e.g. data:image/png;base64,...", param)
    if not m.group("b64"):
        raise bad("only base64 data: URLs are accepted (data:image/png;base64,...)", param)
    return b64_bytes(url[m.end():], param)


def b64_bytes(text: str, param: str) -> bytes:
    if not isinstance(text, str):
        raise bad("an image must be a base64 string", param)
    try:
        # What b64decode(validate=True) checks, without its regular-expression pass over the text (25-65 ms for a
        # 1 MP PNG's 3 MB here, more than the decoding itself).
        data = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise bad("the image is not valid base64", param) from None
    if not data:
        raise bad("the image is empty", param)
    return data


def decode(engine, data: bytes, param: str):
    """Encoded bytes -> a PreparedImage for `engine` (run it off the event loop: it decodes and resizes)."""
    try:
        return engine.prepare_image(data)
    except ImageError as e:
        raise bad(f"the image could not be read: {e}", param) from None
