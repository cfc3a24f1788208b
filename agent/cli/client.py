"""A small synchronous client of the agent's API, for the CLI, the lab tests and the drills (any node:
``--host URL`` or CORRAL_URL). Every failure is an :class:`ApiError` with what the API said.

The token it sends: the one it is given, else ``CORRAL_TOKEN``, else the session ``corral login`` kept
for that URL in ``~/.config/corral/sessions.json`` (0600; a token is only ever sent to the URL it was
made for)."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mesh.files import write_private

DEFAULT_URL = "http://127.0.0.1:8080"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "corral"


def sessions_file() -> Path:
    return config_dir() / "sessions.json"


def load_sessions() -> dict[str, dict[str, Any]]:
    try:
        raw = json.loads(sessions_file().read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, dict)} if isinstance(raw, dict) else {}


def save_session(url: str, session: dict[str, Any] | None) -> None:
    """Keep (or, with None, forget) the session for ``url``."""
    sessions = load_sessions()
    if session is None:
        sessions.pop(url.rstrip("/"), None)
    else:
        sessions[url.rstrip("/")] = session
    config_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(sessions_file(), (json.dumps(sessions, indent=1) + "\n").encode())


def tls_context(url: str, cafile: str | None = None) -> ssl.SSLContext | None:
    """How to check an agent's certificate: against ``cafile``, else CORRAL_CACERT, else the CA kept at
    ``corral login`` for that URL (None for plain HTTP, on loopback)."""
    if not url.startswith("https:"):
        return None
    cafile = cafile or os.environ.get("CORRAL_CACERT") or None
    if cafile is None:
        ca = load_sessions().get(url.rstrip("/"), {}).get("ca")
        if isinstance(ca, str):
            return ssl.create_default_context(cadata=ca)
    return ssl.create_default_context(cafile=cafile)


def token_for(url: str) -> str | None:
    env = os.environ.get("CORRAL_TOKEN")
    if env:
        return env.strip()
    token = load_sessions().get(url.rstrip("/"), {}).get("token")
    return token if isinstance(token, str) else None


class ApiError(Exception):
    """What the API said was wrong (status, code, message), or that it could not be reached."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Client:
    def __init__(self, url: str, timeout: float = 30.0, token: str | None = None, cafile: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token if token is not None else token_for(self.url)
        self.tls = tls_context(self.url, cafile)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **self.headers()})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.tls) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc, url) from None
        except (urllib.error.URLError, OSError) as exc:
            raise _unreachable(exc, self.url) from None

    def upload(self, path: str, data: Any, length: int | None, content_type: str = "application/x-tar",
               query: dict[str, Any] | None = None) -> Any:
        """POST a body streamed from ``data`` (a file, or an iterable of bytes: sent chunked when
        ``length`` is None); the JSON answer. No timeout while it is sent: a big image takes a while."""
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Content-Type": content_type, **self.headers()}
        if length is not None:
            headers["Content-Length"] = str(length)
        req = urllib.request.Request(url, data=data, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=None, context=self.tls) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc, url) from None
        except (urllib.error.URLError, OSError) as exc:
            raise _unreachable(exc, self.url) from None

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query={k: v for k, v in query.items() if v is not None} or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def items(self, path: str, **query: Any) -> list[dict[str, Any]]:
        """Every item of a paginated collection."""
        out: list[dict[str, Any]] = []
        while True:
            page = self.get(path, limit=1000, offset=len(out), **query)
            out += page["items"]
            if len(out) >= page["total"] or not page["items"]:
                return out

    def stream(self, path: str, **query: Any) -> Iterator[str]:
        """Lines of a streamed response (logs -f, events --follow)."""
        url = self.url + path + "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=self.headers()), timeout=None,
                                        context=self.tls) as resp:
                for line in resp:
                    yield line.decode(errors="replace").rstrip("\n")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc, url) from None
        except (urllib.error.URLError, OSError) as exc:
            raise _unreachable(exc, self.url) from None


def _unreachable(exc: Exception, url: str) -> ApiError:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return ApiError(0, "untrusted", f"the agent at {url} presented a certificate this CLI does not trust "
                        f"({reason.verify_message}): `corral login` pins the cluster's CA, or set CORRAL_CACERT")
    return ApiError(0, "unreachable", f"cannot reach the Corral API at {url}: {reason}")


def _api_error(exc: urllib.error.HTTPError, url: str) -> ApiError:
    """What an error answer says: its JSON ``error`` and ``message``, or the status when it has none."""
    try:
        payload = json.loads(exc.read())
    except (ValueError, OSError):
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        message = payload["message"]
        if exc.code == 401:
            message += " (log in with `corral login`, or set CORRAL_TOKEN)"
        return ApiError(exc.code, str(payload.get("error", "error")), message)
    return ApiError(exc.code, "http_error", f"HTTP {exc.code} from {url}")
