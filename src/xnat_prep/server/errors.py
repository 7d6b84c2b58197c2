"""The one exception request handlers raise to answer with an HTTP error."""

from __future__ import annotations


class HTTPError(Exception):
    """Answer the request with this status and a short text message."""

    def __init__(self, status: int, message: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
