"""What went wrong talking to the apiserver, in one line."""

from __future__ import annotations

import errno
import json
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException


def connection_problem(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or e
    text = str(reason)
    for cause in (reason, getattr(reason, "__cause__", None), getattr(reason, "__context__", None)):
        code = getattr(cause, "errno", None)
        if code == errno.ECONNREFUSED or "Connection refused" in text:
            return "connection refused"
        if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "host unreachable"
    if isinstance(reason, urllib3.exceptions.NameResolutionError) or "Name or service not known" in text:
        return "cannot resolve the host name"
    if isinstance(reason, (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError,
                           TimeoutError)) or "timed out" in text:
        return "timed out"
    if isinstance(reason, urllib3.exceptions.SSLError) or "SSL" in text or "certificate" in text:
        return f"TLS error: {text}"
    return text


def status_body(e: ApiException) -> dict[str, Any] | None:
    try:
        body = json.loads(e.body)
    except (TypeError, ValueError):
        return None
    return body if isinstance(body, dict) and body.get("kind") == "Status" else None
