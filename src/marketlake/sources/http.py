"""The one HTTP client every network source uses.

It wraps :class:`httpx.Client` and adds what talking to market-data vendors needs:

* **a per-host rate limit** (minimum spacing between request starts, shared by every thread
  using the client; Yahoo ≈ 2 req/s and SEC ≤ 10 req/s by default, other hosts unthrottled
  unless configured). A ``429`` pushes the host's next slot back for *all* threads.
* **retries** with jittered exponential backoff on ``429``, ``408``, ``5xx`` (except ``501``),
  timeouts and connection errors, honouring ``Retry-After`` (seconds or an HTTP date) up to
  ``max_retry_after`` seconds; a longer wait raises :class:`TransientSourceError` at once.
* **typed errors**: :class:`TransientSourceError` (retryable) when retries are exhausted,
  :class:`NoDataError` on ``404``, :class:`SourceError` on other ``4xx`` and on malformed JSON —
  each one line naming the URL, never a secret.
* **no secrets in messages or logs**: values of ``secret_params`` (and of query parameters and
  headers whose names look like credentials: ``Authorization``, ``APCA-API-*``, ``token``,
  ``apikey`` …) are replaced by ``***`` wherever a URL or text is shown.

Time is injected (``clock`` and ``sleep``) so tests drive retries and rate limits through a
fake clock, and the transport is injected so tests serve recorded payloads through
:class:`httpx.MockTransport`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from marketlake import __version__
from marketlake.errors import ConfigError, NoDataError, SourceError, TransientSourceError

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "DEFAULT_USER_AGENT",
    "HttpClient",
    "HttpResponse",
]

log = logging.getLogger(__name__)

#: Requests per second per host unless the caller overrides them (``0`` disables a limit).
DEFAULT_RATE_LIMITS: dict[str, float] = {
    "query1.finance.yahoo.com": 2.0,
    "query2.finance.yahoo.com": 2.0,
    "data.sec.gov": 10.0,
    "www.sec.gov": 10.0,
}

DEFAULT_USER_AGENT = f"marketlake/{__version__} (+https://github.com/marketlake/marketlake)"

#: Statuses worth retrying: throttling, request timeout and transient server/proxy failures.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524})

# Query parameters and headers whose values are credentials even when the caller forgets to
# name them in ``secret_params``. Matched case-insensitively on the whole name.
_SECRET_PARAM_NAMES = frozenset(
    {"token", "apikey", "api_key", "api-key", "key", "secret", "access_token", "password"}
)
_SECRET_HEADER_RE = re.compile(
    r"^(authorization|proxy-authorization|cookie|token|apca-api-.*|x-api-key|.*-(key|secret|token))$",
    re.IGNORECASE,
)
_REDACTED = "***"
_SNIPPET = 200


@dataclass(frozen=True)
class HttpResponse:
    """A successful (2xx) answer, fully read.

    ``url`` is the final URL after redirects with secret query values replaced by ``***``.
    """

    url: str
    status: int
    headers: Mapping[str, str]
    content: bytes = field(repr=False)

    def json(self) -> Any:
        """Decode the body as JSON.

        Raises
        ------
        SourceError
            (final) naming the URL when the body is empty or not valid JSON.
        """
        try:
            return json.loads(self.content)
        except (ValueError, UnicodeDecodeError) as exc:
            kind = "an empty body" if not self.content.strip() else f"malformed JSON ({exc})"
            raise SourceError(
                f"{self.url} answered {kind}, not a JSON document; the API may have changed "
                "or returned an error page",
                url=self.url,
            ) from None


class _HostLimiter:
    """Minimum spacing between request starts per host, shared by threads (slot reservation).

    Each caller reserves the next free slot under a lock, then sleeps outside the lock until its
    slot, so N threads on a 2 req/s host start requests 0.5 s apart in total, not per thread.
    """

    def __init__(
        self,
        limits: Mapping[str, float],
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._interval = {h.lower(): 1.0 / r for h, r in limits.items() if r > 0}
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def interval(self, host: str) -> float:
        """Seconds between request starts to ``host`` (0 when unthrottled)."""
        return self._interval.get(host, 0.0)

    def acquire(self, host: str) -> None:
        """Wait until ``host`` may be sent the next request, reserving that slot."""
        interval = self._interval.get(host, 0.0)
        with self._lock:
            now = self._clock()
            slot = max(now, self._next.get(host, now))
            if interval > 0 or slot > now:
                self._next[host] = slot + interval
        if slot > now:
            self._sleep(slot - now)

    def hold(self, host: str, seconds: float) -> None:
        """Keep every thread off ``host`` for ``seconds`` from now (after a 429)."""
        with self._lock:
            until = self._clock() + seconds
            if until > self._next.get(host, 0.0):
                self._next[host] = until


class _RetryError(Exception):
    """Internal: this attempt failed in a retryable way."""

    def __init__(self, reason: str, retry_after: float | None = None, throttled: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.throttled = throttled


class HttpClient:
    """Rate-limited, retrying HTTP GET client shared by the network sources.

    Parameters
    ----------
    user_agent:
        ``User-Agent`` header; default :data:`DEFAULT_USER_AGENT`. SEC requires one naming you
        and an e-mail address (the SEC source passes ``SEC_USER_AGENT``).
    rate_limits:
        ``host -> requests per second`` merged over :data:`DEFAULT_RATE_LIMITS`; ``0`` removes a
        host's limit. Hosts not listed are not throttled.
    timeout:
        Seconds for connect/read/write/pool each.
    retries:
        Retries after the first attempt (so ``retries + 1`` attempts at most).
    backoff:
        Base of the exponential backoff: attempt *n* waits a random time in
        ``[backoff·2ⁿ⁻¹/2, backoff·2ⁿ⁻¹]``, capped at ``max_backoff``.
    transport:
        An :class:`httpx.BaseTransport` (tests pass :class:`httpx.MockTransport`).
    sleep, clock:
        Injected time (tests pass a fake clock); ``clock`` must be monotonic.
    max_retry_after:
        Longest ``Retry-After`` honoured; a longer one raises :class:`TransientSourceError` at once.
    max_backoff:
        Cap of one backoff wait in seconds.
    rng:
        Source of jitter (seed it for reproducible waits).
    """

    def __init__(
        self,
        *,
        user_agent: str | None = None,
        rate_limits: Mapping[str, float] | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_retry_after: float = 60.0,
        max_backoff: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        limits = {h.lower(): float(r) for h, r in DEFAULT_RATE_LIMITS.items()}
        for host, rate in (rate_limits or {}).items():
            try:
                value = float(rate)
            except (TypeError, ValueError):
                value = math.nan
            if not value >= 0 or math.isinf(value):
                raise ConfigError(
                    f"rate limit for host {host!r} must be a number of requests per second "
                    f">= 0 (0 = unlimited), got {rate!r}"
                )
            limits[host.lower()] = value
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        if timeout <= 0 or backoff < 0:
            raise ConfigError(f"timeout must be > 0 and backoff >= 0, got {timeout}, {backoff}")
        self.user_agent = user_agent or DEFAULT_USER_AGENT
        self.rate_limits: dict[str, float] = limits
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._limiter = _HostLimiter(limits, clock, sleep)
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            headers={"User-Agent": self.user_agent},
        )

    # --- public API ------------------------------------------------------------------------------

    def get(
        self,
        url: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        headers: Mapping[str, str] | None = None,
        secret_params: Collection[str] = (),
        auth_hint: str | None = None,
    ) -> HttpResponse:
        """GET ``url`` (``params`` merged into its query) and return the 2xx response.

        ``secret_params`` names query parameters whose values are credentials; they, and
        credential-like headers, are shown as ``***`` in every message and log line.
        ``auth_hint`` names what to check on 401/403, e.g. ``"TIINGO_API_KEY"``.

        Raises
        ------
        TransientSourceError
            Retries exhausted on 429/5xx/timeouts/connection errors, or the host asked to wait
            longer than ``max_retry_after``.
        NoDataError
            HTTP 404.
        SourceError
            Any other 4xx (401/403 name ``auth_hint``), an unusable URL.
        """
        try:
            request_url = httpx.URL(url)
            if params:
                request_url = request_url.copy_merge_params(
                    {k: str(v) if isinstance(v, float) else v for k, v in params.items()}
                )
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise SourceError(f"invalid URL {url!r}: {exc}", url=url) from None
        secret_names = {s.lower() for s in secret_params} | _SECRET_PARAM_NAMES
        secrets = _secret_values(request_url, secret_names, headers)
        safe_url = _safe_url(request_url, secret_names)
        host = (request_url.host or "").lower()
        if request_url.scheme not in ("http", "https") or not host:
            raise SourceError(f"invalid URL {safe_url}: expected http(s)://host/...", url=safe_url)

        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            self._limiter.acquire(host)
            try:
                return self._attempt(request_url, headers, secrets, secret_names, auth_hint)
            except _RetryError as retry:
                reason = _redact(retry.reason, secrets)
                if retry.retry_after is not None and retry.retry_after > self.max_retry_after:
                    raise TransientSourceError(
                        f"GET {safe_url}: {reason}; the host asks to wait "
                        f"{retry.retry_after:.0f} s (more than {self.max_retry_after:.0f} s); "
                        "try again later",
                        url=safe_url,
                    ) from None
                if attempt == attempts:
                    raise TransientSourceError(
                        f"GET {safe_url} failed after {attempts} attempts: {reason}; "
                        "the host may be down or throttling — try again later",
                        url=safe_url,
                    ) from None
                delay = (
                    retry.retry_after
                    if retry.retry_after is not None
                    else self._backoff_delay(attempt)
                )
                if retry.throttled:
                    self._limiter.hold(host, delay)
                log.warning(
                    "GET %s: %s; retry %d/%d in %.2f s",
                    safe_url,
                    reason,
                    attempt,
                    self.retries,
                    delay,
                )
                if delay > 0:
                    self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(self, url: str, **kw: Any) -> Any:
        """:meth:`get` and decode the body as JSON (:class:`SourceError` when it is not)."""
        return self.get(url, **kw).json()

    def get_bytes(self, url: str, **kw: Any) -> bytes:
        """:meth:`get` and return the raw body."""
        return self.get(url, **kw).content

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------

    def _backoff_delay(self, attempt: int) -> float:
        ceiling = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return self._rng.uniform(ceiling / 2, ceiling)

    def _attempt(
        self,
        url: httpx.URL,
        headers: Mapping[str, str] | None,
        secrets: list[str],
        secret_names: set[str],
        auth_hint: str | None,
    ) -> HttpResponse:
        try:
            response = self._client.get(url, headers=dict(headers) if headers else None)
        except httpx.TimeoutException as exc:
            raise _RetryError(f"timed out ({type(exc).__name__})") from None
        except httpx.UnsupportedProtocol as exc:
            raise SourceError(
                f"GET {_safe_url(url, secret_names)}: {_redact(str(exc), secrets)}"
            ) from None
        except httpx.TransportError as exc:
            raise _RetryError(f"connection failed ({type(exc).__name__}: {exc})") from None
        final_url = _safe_url(response.url, secret_names)
        status = response.status_code
        if 200 <= status < 300:
            log.debug("GET %s -> %d (%d bytes)", final_url, status, len(response.content))
            return HttpResponse(
                url=final_url,
                status=status,
                headers=dict(response.headers),
                content=response.content,
            )
        phrase = f"HTTP {status} {response.reason_phrase}".rstrip()
        if status in RETRY_STATUSES:
            retry_after = _parse_retry_after(response.headers)
            raise _RetryError(phrase, retry_after=retry_after, throttled=status == 429)
        detail = _snippet(response.content, secrets)
        if status == 404:
            raise NoDataError(
                f"no data at {final_url} ({phrase}): unknown symbol, CIK or path"
                + (f" — {detail}" if detail else ""),
                url=final_url,
                status=status,
            )
        if status in (401, 403):
            check = (
                f"check {auth_hint}"
                if auth_hint
                else "check the source's credentials and that the host accepts this client"
            )
            raise SourceError(
                f"GET {final_url} was refused ({phrase}): the credentials may be missing or "
                f"wrong; {check}" + (f" — {detail}" if detail else ""),
                url=final_url,
                status=status,
            )
        raise SourceError(
            f"GET {final_url} failed ({phrase})" + (f": {detail}" if detail else ""),
            url=final_url,
            status=status,
        )


# --- helpers -------------------------------------------------------------------------------------


def _is_secret_header(name: str) -> bool:
    return bool(_SECRET_HEADER_RE.match(name))


def _secret_values(
    url: httpx.URL, secret_names: set[str], headers: Mapping[str, str] | None
) -> list[str]:
    """Every credential value in the request, longest first (so prefixes do not shadow)."""
    values: set[str] = set()
    for name, value in url.params.multi_items():
        if name.lower() in secret_names and value:
            values.add(value)
    for name, value in (headers or {}).items():
        if _is_secret_header(name) and value:
            values.add(value)
            _scheme, _, credential = value.partition(" ")
            if credential:
                values.add(credential.strip())
    if url.password:
        values.add(url.password)
    return sorted((v for v in values if v), key=len, reverse=True)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return text


def _safe_url(url: httpx.URL, secret_names: set[str]) -> str:
    """``url`` as text with secret query values and any userinfo replaced by ``***``."""
    items = [
        (k, _REDACTED if k.lower() in secret_names else v) for k, v in url.params.multi_items()
    ]
    safe = url.copy_with(params=items) if items else url
    if url.userinfo:
        safe = safe.copy_with(username=_REDACTED, password=None)
    # httpx percent-encodes '*' in query values; show the marker plainly.
    return str(safe).replace("%2A%2A%2A", _REDACTED)


def _snippet(content: bytes, secrets: list[str]) -> str:
    """The start of an error body on one line, secrets removed."""
    text = " ".join(content[: _SNIPPET * 4].decode("utf-8", "replace").split())
    text = _redact(text, secrets)
    return text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else "")


def _parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta seconds or HTTP date), None when absent/bad.

    An HTTP date is measured against the response's own ``Date`` header when present (immune
    to clock skew between us and the server), else against the local wall clock.
    """
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    now_ts = time.time()
    date_header = headers.get("date")
    if date_header:
        try:
            server_now = email.utils.parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError):
            server_now = None
        if server_now is not None and server_now.tzinfo is not None:
            now_ts = server_now.timestamp()
    return max(0.0, when.timestamp() - now_ts)
