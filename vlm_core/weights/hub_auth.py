"""Who we are and where we talk: the Hub's address (HF_ENDPOINT), offline mode, and the access token (read from
where huggingface_hub keeps it, or checked and saved there). The token is never part of a message produced here."""

from __future__ import annotations

import os

from .hub_errors import HubError, explain


def endpoint_url() -> str:
    """HF_ENDPOINT as it is now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def is_offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def current_token() -> str | None:
    """HF_TOKEN, or the token file that `hf auth login` writes."""
    from huggingface_hub import get_token

    return get_token()


def check_and_save_token(token: str, endpoint: str | None = None) -> str:
    """Validate a pasted token against the server and save it where huggingface_hub keeps tokens; returns the
    user name. The public login() validates against the endpoint fixed at import time, so its two steps are done
    here against the configured endpoint."""
    from huggingface_hub import HfApi
    from huggingface_hub._login import _save_token, _set_active_token

    token = token.strip()
    if not token.startswith("hf_") or len(token) < 10:
        raise HubError("invalid_token", "That does not look like a Hugging Face access token (they start with hf_). "
                                        "Create one at huggingface.co/settings/tokens (Read access is enough).")
    try:
        info = HfApi(endpoint=endpoint or endpoint_url()).whoami(token=token, cache=False)
    except Exception as e:  # noqa: BLE001 - mapped to a message below
        raise explain(e, None) from None
    name = ((info.get("auth") or {}).get("accessToken") or {}).get("displayName") or f"paligemma-desktop-{info['name']}"
    _save_token(token=token, token_name=name)
    _set_active_token(token_name=name, add_to_git_credential=False)
    return info["name"]
