"""The Client: configuration, read once, and the resources composed on one :class:`Requester`.

Every call a resource makes goes through the requester's single bounded
request loop (see :mod:`sail_lite._requester`); the client itself does no
I/O.
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional, Union

import requests

from ._checks import header_value, int_in, positive_int, shown
from ._requester import Requester, Timeout
from .errors import ConfigurationError
from .polling import PollPolicy
from .retry import RetryPolicy

if TYPE_CHECKING:  # the resources load on first use (see Client._resource), not with sail_lite
    from .resources.batches import Batches
    from .resources.chat import Chat
    from .resources.files import Files
    from .resources.loras import LoRAs
    from .resources.messages import Messages
    from .resources.models import Models
    from .resources.responses import Responses
    from .resources.tokens import Tokens
    from .webhooks import WebhookReceiver

__all__ = ["Client", "Timeout", "DEFAULT_BASE_URL", "DEFAULT_MAX_RESPONSE_BYTES"]

DEFAULT_BASE_URL = "https://api.sailresearch.com/v1"
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_LOGGER_NAME = "sail_lite"
_CA_BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")
# Each resource: its module under sail_lite.resources (its name), its class, the resources it is built on.
_RESOURCES = {
    "responses": ("Responses", ()),
    "tokens": ("Tokens", ("responses",)),
    "chat": ("Chat", ()),
    "messages": ("Messages", ()),
    "models": ("Models", ()),
    "files": ("Files", ()),
    "loras": ("LoRAs", ("files",)),
    "batches": ("Batches", ()),
}


def _configure_logging(level_name: Optional[str]) -> None:
    """Honour ``SAIL_LOG=debug|info`` by giving the ``sail_lite`` logger a stderr handler.

    Only adds a handler when the logger has none of its own, so an
    application's logging setup always wins and repeated clients do not
    stack handlers.
    """
    if not level_name:
        return
    level = {"debug": logging.DEBUG, "info": logging.INFO}.get(level_name.strip().lower())
    if level is None:
        return
    logger = logging.getLogger(_LOGGER_NAME)
    logger.setLevel(level)
    if not any(not isinstance(h, logging.NullHandler) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)


class Client:
    """A synchronous client for the Sail API.

    Configuration is read once, here (from ``environ`` in place of
    ``os.environ`` when given): ``api_key`` (else ``SAIL_API_KEY``),
    ``base_url`` (else ``SAIL_BASE_URL``, else the official SDK's
    ``SAIL_API_URL`` plus ``/v1``), ``verify`` (``True``, ``False`` or a CA
    bundle path; else ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` or
    ``SSL_CERT_FILE``), ``proxies`` (else the environment's, ``NO_PROXY``
    honoured, as requests does), or ``session``: a configured
    ``requests.Session`` whose adapters, certificates, auth, proxies, verify
    and hooks every call then uses (sail_lite still sets its own headers,
    timeouts and redirect policy; ``verify``/``proxies`` then belong on the
    Session). Bad settings raise
    :class:`~sail_lite.errors.ConfigurationError`, never echoing the key.

    The constructor does no I/O and starts no thread: connections and the
    poller's threads are made on first use, and rebuilt in a forked child so
    parent and child never share sockets.

    Thread-safe: share one client among any number of threads. At most
    ``max_workers`` HTTP requests are on the wire at once (the size of the
    connection pool and of the poller's pool). A reply body larger than
    ``max_response_bytes`` (after decompression) raises
    :class:`~sail_lite.errors.ResponseTooLargeError`.

    Picklable: a pickle holds the configuration (including the API key, so a
    worker process can use it), never sessions or threads. ``repr`` never
    shows the key. ``sleep``, ``clock`` (monotonic seconds) and ``rng`` are
    injectable so tests can check back-off delays without waiting.

    ``webhooks``: a :class:`~sail_lite.webhooks.WebhookReceiver` whose
    completion webhooks finish background responses (see
    :meth:`sail_lite.submission.Submitter.use_webhooks`): background creates
    carry its URL and token, a delivery triggers one confirming ``GET``, and
    polling drops to the safety schedule of ``PollPolicy.webhook_interval``.
    The client starts it on first use and never closes it (its owner does,
    after the client); it is not pickled (a worker process polls).
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        *,
        base_url: Optional[str] = None,
        timeout: Union[Timeout, float, None] = None,
        retry: Optional[RetryPolicy] = None,
        poll: Optional[PollPolicy] = None,
        max_workers: int = 16,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: Union[bool, str, None] = None,
        proxies: Optional[Mapping[str, str]] = None,
        session: Optional[requests.Session] = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Optional[random.Random] = None,
        environ: Optional[Mapping[str, str]] = None,
        webhooks: Optional[WebhookReceiver] = None,
    ) -> None:
        timeout = _check_settings(environ, sleep, clock, rng, timeout, retry, poll)
        int_in("max_workers", max_workers, 1, 1024, ConfigurationError)
        positive_int("max_response_bytes", max_response_bytes, ConfigurationError)
        env = os.environ if environ is None else environ
        self.base_url = _base_url(base_url, env)
        self.webhooks = _webhooks(webhooks)
        _configure_logging(env.get("SAIL_LOG"))

        self._api_key = _api_key(api_key, env)
        self.timeout = timeout or Timeout()
        self.retry = retry or RetryPolicy()
        self.poll = poll or PollPolicy()
        self.max_workers = max_workers
        self.max_response_bytes = max_response_bytes
        self._session = _session(session, verify, proxies)
        if session is None:
            self.verify = _verify(verify, env)
            self.proxies = _proxies(proxies, self.base_url, env)
        else:  # the Session's own settings (and, with its trust_env, the environment's) apply
            self.verify, self.proxies = session.verify, dict(session.proxies)
        self._requester = Requester(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            retry=self.retry,
            poll=self.poll,
            max_workers=max_workers,
            max_response_bytes=max_response_bytes,
            verify=self.verify,
            proxies=self.proxies,
            session=session,
            sleep=sleep,
            clock=clock,
            rng=rng or random.Random(),
        )
        self._resources: Dict[str, Any] = {}
        self._resources_lock = (
            threading.RLock()
        )  # re-entered: tokens needs responses, loras needs files

    # --- the resources: each module is imported, and its object made, on first access -------

    @property
    def responses(self) -> Responses:
        """The Responses API: create, retrieve, cancel, wait, submit (futures), attach."""
        return self._resource("responses")

    @property
    def tokens(self) -> Tokens:
        """Raw-token sampling (token ids in, :class:`~sail_lite.types.SampledTokens` out)."""
        return self._resource("tokens")

    @property
    def chat(self) -> Chat:
        """``client.chat.completions``: the Chat Completions API."""
        return self._resource("chat")

    @property
    def messages(self) -> Messages:
        """The Messages API (and its input token count)."""
        return self._resource("messages")

    @property
    def models(self) -> Models:
        """The model list."""
        return self._resource("models")

    @property
    def files(self) -> Files:
        """Streamed file uploads."""
        return self._resource("files")

    @property
    def loras(self) -> LoRAs:
        """The LoRA registry: upload, validate, list, delete."""
        return self._resource("loras")

    @property
    def batches(self) -> Batches:
        """The Batch API."""
        return self._resource("batches")

    @property
    def session(self) -> requests.Session:
        """The ``requests.Session`` every call goes out through (the one given, else the client's own).

        Read-only. The client's own Session is made on first use (here, or at
        the first call), closed by :meth:`close`, and made again in a forked
        child; a Session given as ``session=`` is never closed or changed by
        the client. Raises :class:`~sail_lite.errors.ClientClosedError` after
        :meth:`close`.
        """
        return self._requester.transport.session

    def _resource(self, name: str) -> Any:
        found = self._resources.get(name)
        if found is not None:
            return found
        with self._resources_lock:  # one object per resource, whichever thread asks first
            found = self._resources.get(name)
            if found is None:
                found = self._resources[name] = self._make_resource(name)
            return found

    def _make_resource(self, name: str) -> Any:
        class_name, needs = _RESOURCES[name]
        module = importlib.import_module(".resources." + name, __package__)
        made = getattr(module, class_name)(
            self._requester, *(self._resource(other) for other in needs)
        )
        if name == "responses" and self.webhooks is not None:
            made.submission.use_webhooks(self.webhooks)
        return made

    def close(self) -> None:
        """Stop the poller's threads and close the connections.

        Futures still waiting on background responses fail with
        :class:`~sail_lite.errors.ClientClosedError` carrying their response
        id: the work continues on the server and can be resumed with
        ``client.responses.wait(id)`` on a new client. Idempotent.
        """
        self._requester.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, max_workers={self.max_workers})"

    def __getstate__(self) -> Dict[str, Any]:
        return {
            "api_key": self._api_key,
            "base_url": self.base_url,
            "timeout": self.timeout,
            "retry": self.retry,
            "poll": self.poll,
            "max_workers": self.max_workers,
            "max_response_bytes": self.max_response_bytes,
            "verify": None if self._session is not None else self.verify,
            "proxies": None if self._session is not None else self.proxies,
            "session": self._session,
        }

    def __setstate__(self, state: Dict[str, Any]) -> None:
        api_key = state.pop("api_key")
        self.__init__(api_key, environ={}, **state)  # type: ignore[misc]


def _check_settings(
    environ: Any, sleep: Any, clock: Any, rng: Any, timeout: Any, retry: Any, poll: Any
) -> Optional[Timeout]:
    """The constructor's checks of its hooks and policies; a number ``timeout`` becomes a Timeout."""
    if environ is not None and not _strings_to_strings(environ):
        raise ConfigurationError("environ must map variable names to strings, like os.environ")
    for name, value in (("sleep", sleep), ("clock", clock)):
        if not callable(value):
            raise ConfigurationError(f"{name} must be a callable, got {type(value).__name__}")
    if rng is not None and not all(callable(getattr(rng, m, None)) for m in ("random", "uniform")):
        raise ConfigurationError(f"rng must be a random.Random, got {type(rng).__name__}")
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        timeout = Timeout(read=timeout)
    if timeout is not None and not isinstance(timeout, Timeout):
        raise ConfigurationError(
            f"timeout must be a Timeout or a number of seconds, got {type(timeout).__name__}"
        )
    for name, value, cls in (("retry", retry, RetryPolicy), ("poll", poll, PollPolicy)):
        if value is not None and not isinstance(value, cls):
            raise ConfigurationError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")
    return timeout


def _session(session: Any, verify: Any, proxies: Any) -> Optional[requests.Session]:
    if session is None:
        return None
    if not isinstance(session, requests.Session):
        raise ConfigurationError(
            f"session must be a requests.Session, got {type(session).__name__}"
        )
    if verify is not None or proxies is not None:
        raise ConfigurationError(
            "with session=, set verify and proxies on the Session (session.verify, "
            "session.proxies), not as Client arguments"
        )
    return session


def _webhooks(webhooks: Any) -> Optional[WebhookReceiver]:
    if webhooks is None:
        return None
    from .webhooks import WebhookReceiver  # the HTTP server module only for those who use it

    if not isinstance(webhooks, WebhookReceiver):
        raise ConfigurationError(
            f"webhooks must be a sail_lite.WebhookReceiver, got {type(webhooks).__name__}"
        )
    return webhooks


def _strings_to_strings(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _api_key(api_key: Any, env: Mapping[str, str]) -> str:
    key = api_key if api_key is not None else env.get("SAIL_API_KEY")
    if isinstance(key, str):
        key = key.strip()
    if not key:
        raise ConfigurationError(
            "No Sail API key: pass Client(api_key=...) or set the SAIL_API_KEY environment variable "
            "(for offline work, start sail_lite.emulator.EmulatorServer and use its api_key and base_url)"
        )
    return header_value("the API key", key, secret=True, error=ConfigurationError)


def _base_url(base_url: Any, env: Mapping[str, str]) -> str:
    url = base_url or env.get("SAIL_BASE_URL")
    if not url and env.get("SAIL_API_URL"):
        # The official SDK's variable names the server without the /v1 root.
        url = env["SAIL_API_URL"].rstrip("/")
        if not url.endswith("/v1"):
            url += "/v1"
    url = url or DEFAULT_BASE_URL
    if not isinstance(url, str):
        raise ConfigurationError(f"base_url must be a string, got {type(url).__name__}")
    url = url.rstrip("/")
    if (
        not url.startswith(("http://", "https://"))
        or "?" in url
        or "#" in url
        or not url.isprintable()
        or " " in url
        or _host_and_port(url) is None
    ):
        raise ConfigurationError(
            f"base_url must be an http(s) URL with a host (and a valid port) and without a query "
            f"string, like {DEFAULT_BASE_URL!r}; got {shown(url.split('?')[0])}"
        )
    return url


_PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")


def _host_and_port(url: str) -> Optional[str]:
    """``url``'s host (its port checked), or ``None`` when it has none or the port is not one."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    return parts.hostname or None


def _check_proxy(scheme: str, proxy: str) -> None:
    url = proxy if "://" in proxy else "http://" + proxy  # requests' own default scheme
    if (
        not url.isprintable()
        or " " in url
        or url.split("://", 1)[0].lower() not in _PROXY_SCHEMES
        or _host_and_port(url) is None
    ):
        # The value is not shown: a proxy URL may carry a password.
        raise ConfigurationError(
            f"proxies[{shown(scheme)}] must be a proxy URL like 'http://proxy.example:3128' "
            f"(schemes: {', '.join(_PROXY_SCHEMES)}), with printable characters only"
        )


def _verify(verify: Any, env: Mapping[str, str]) -> Union[bool, str]:
    if verify is None:
        for name in _CA_BUNDLE_VARIABLES:
            if env.get(name):
                verify = env[name]
                break
        else:
            return True
    if isinstance(verify, bool):
        return verify
    if isinstance(verify, (str, os.PathLike)):
        path = os.fspath(verify)
        if not os.path.exists(path):
            raise ConfigurationError(f"verify: no CA bundle (file or folder) at {path!r}")
        return path
    raise ConfigurationError(
        f"verify must be True, False or a CA bundle path, got {type(verify).__name__}"
    )


def _proxies(proxies: Any, base_url: str, env: Mapping[str, str]) -> Dict[str, str]:
    if proxies is not None:
        if not _strings_to_strings(proxies):
            raise ConfigurationError(
                "proxies must map schemes ('http', 'https') to proxy URLs, as in requests"
            )
        for scheme, proxy in proxies.items():
            _check_proxy(scheme, proxy)
        return dict(proxies)
    # requests' own rules: http_proxy / https_proxy / all_proxy, NO_PROXY honoured.
    from requests.utils import get_environ_proxies, should_bypass_proxies

    if env is os.environ:
        return dict(get_environ_proxies(base_url))
    found = {
        name.lower(): value
        for name, value in env.items()
        if name.lower().endswith("_proxy") and value
    }
    # Only the given mapping's NO_PROXY: with no_proxy=None requests would read os.environ's.
    no_proxy = found.pop("no_proxy", None)
    if no_proxy and should_bypass_proxies(base_url, no_proxy=no_proxy):
        return {}
    return {name[: -len("_proxy")]: value for name, value in found.items()}
