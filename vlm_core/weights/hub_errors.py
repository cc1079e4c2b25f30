"""What went wrong talking to the Hub, said once: HubError carries a `kind` the app reacts to and a message with the
next step; `explain` maps huggingface_hub's and httpx's exceptions onto it. Never the token, never a traceback."""

from __future__ import annotations

import errno

from ..errors import VlmError


class HubError(VlmError):
    """A download problem with its own explanation and next step. `kind` lets the app react (e.g. ask for a token)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class DownloadCancelled(HubError):
    def __init__(self):
        super().__init__("cancelled", "The download was cancelled; what was fetched is kept and it resumes next time.")


def http_module():
    """huggingface_hub 2.x speaks through httpx2; 1.x used httpx. Their exception classes are what we map."""
    try:
        import httpx2 as http
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx as http
    return http


def offline_error():
    from huggingface_hub.errors import OfflineModeIsEnabled

    return OfflineModeIsEnabled("offline")


def explain(error: BaseException, repo_id: str | None) -> HubError:
    """One explanation and next step per failure; never the token, never a traceback."""
    httpx = http_module()
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled, RemoteEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    page = f"https://huggingface.co/{repo_id}" if repo_id else "https://huggingface.co"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(error, HubError):
        return error
    if isinstance(error, GatedRepoError):
        if status == 401:
            return HubError("not_logged_in", f"{repo_id} is a gated model: sign in with a Hugging Face access token "
                                             "first (huggingface.co/settings/tokens, Read access).")
        return HubError("licence", f"Your Hugging Face account has not accepted the Gemma licence for {repo_id} yet. "
                                   f"Open {page}, accept the licence, then try again.")
    if isinstance(error, RepositoryNotFoundError):
        return HubError("not_found", f"{repo_id} was not found on the Hub (check the name; private models need a "
                                     "token with access).")
    if isinstance(error, (RemoteEntryNotFoundError, RevisionNotFoundError)):
        return HubError("not_found", f"A file of {repo_id} is missing on the Hub; the repository may have changed. "
                                     "Try again later.")
    if isinstance(error, OfflineModeIsEnabled):
        return HubError("offline", f"Offline mode is on (HF_HUB_OFFLINE), and {repo_id or 'this model'} needs a "
                                   "connection to download. Unset HF_HUB_OFFLINE or use an installed model.")
    if isinstance(error, HfHubHTTPError) and status == 401:
        return HubError("invalid_token", "The Hugging Face token was refused (expired or revoked?). "
                                         "Paste a new one from huggingface.co/settings/tokens.")
    if isinstance(error, httpx.ProxyError) or "proxy" in str(error).lower():
        return HubError("proxy_tls", "The proxy refused or failed the connection to the Hub. Check HTTPS_PROXY "
                                     "and your proxy settings.")
    if _is_tls_error(error):
        return HubError("proxy_tls", "A secure (TLS) connection to the Hub could not be made; a proxy or firewall may "
                                     "be intercepting it. Check the system's certificates or REQUESTS_CA_BUNDLE.")
    if isinstance(error, (httpx.ConnectError, httpx.TimeoutException, httpx.NetworkError, ConnectionError)):
        return HubError("network", "The Hugging Face Hub cannot be reached: check your internet connection, "
                                   "then try again. Installed models keep working offline.")
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return HubError("disk_full", "The disk is full. Free some space or choose another models folder in "
                                     "Settings; the download resumes where it stopped.")
    if isinstance(error, HfHubHTTPError) and status and status >= 500:
        return HubError("network", f"The Hub had a server error ({status}); try again in a few minutes.")
    return HubError("other", f"The download failed ({type(error).__name__}). Try again; if it keeps failing, "
                             "report it with the log.")


def _is_tls_error(error: BaseException) -> bool:
    import ssl

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(seen) or "SSL" in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
