"""Transport security and conventions, over real sockets.

- HTTPS: the emulator behind a TLS-terminating forwarder whose certificate
  comes from a CA made here with ``trustme``. ``verify=`` (a CA path, or
  ``False``), ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE`` and
  ``SSL_CERT_FILE`` are honoured; the default (certifi) refuses the
  certificate with a typed, never retried :class:`TLSError`; a missing
  bundle is a :class:`ConfigurationError`.
- Proxies: a forward proxy made here; ``HTTP_PROXY`` from ``environ``,
  ``NO_PROXY`` and ``proxies=``.
- Errors: ``status_code``, the builtin bases, pickles with every field.
- Every public resource method takes ``timeout``, ``deadline`` and
  ``extra_headers``, and an extra header does reach the server.
"""

from __future__ import annotations

import inspect
import os
import pickle
import ssl
import warnings

import pytest

from sail_lite import errors as E

from ._tls_servers import ForwardProxy, TLSForwarder
from .conftest import make_client


def new_ca():
    # trustme (and cryptography under it) is imported by the tests that make certificates, not at
    # collection: every xdist worker collects this module.
    return pytest.importorskip("trustme").CA()


MODEL = "moonshotai/Kimi-K2.6"


# --- HTTPS ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return new_ca()


@pytest.fixture(scope="module")
def ca_path(ca, tmp_path_factory):
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_context(ca, *names):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture
def https(emulator, ca):
    """The emulator over HTTPS (certificate for 127.0.0.1 from the test CA)."""
    with TLSForwarder(_port(emulator), _server_context(ca, "127.0.0.1", "localhost")) as forwarder:
        yield forwarder
    assert forwarder.threads_alive == 0


def _port(emulator):
    return int(emulator.url.rsplit(":", 1)[1])


def https_client(emulator, forwarder, **overrides):
    return make_client(emulator, base_url=forwarder.url + "/v1", **overrides)


@pytest.mark.parametrize(
    "how", ["verify=path", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"]
)
def test_a_ca_bundle_from_the_argument_or_the_environment_is_trusted(emulator, https, ca_path, how):
    if how == "verify=path":
        options = dict(verify=ca_path)
    else:
        options = dict(environ={how: ca_path})
    with https_client(emulator, https, **options) as client:
        assert any(model.id == MODEL for model in client.models.list())
        response = client.responses.create(model=MODEL, input="over tls", max_output_tokens=4)
        assert response.status == "completed"
    assert https.handshakes_ok >= 1 and https.handshakes_failed == 0


def test_verify_true_uses_certifi_and_refuses_the_test_ca_once(emulator, https):
    with https_client(emulator, https, environ={}) as client:
        assert client.verify is True
        with pytest.raises(E.TLSError) as caught:
            client.responses.create(model=MODEL, input="hi", max_output_tokens=4)
    error = caught.value
    assert error.attempts == 1  # never retried: a retry cannot fix a certificate
    assert isinstance(error, E.APIConnectionError) and isinstance(error, ConnectionError)
    assert "verify=" in str(error) and emulator.api_key not in str(error)
    assert https.wait_for_handshakes(1)
    assert https.handshakes_failed == 1 and https.handshakes_ok == 0
    assert emulator.stats()["inference_runs"] == 0


def test_a_certificate_for_another_host_is_a_tls_error(emulator, ca, ca_path):
    with TLSForwarder(_port(emulator), _server_context(ca, "api.example.org")) as forwarder:
        with https_client(emulator, forwarder, verify=ca_path) as client:
            with pytest.raises(E.TLSError) as caught:
                client.models.list()
        assert caught.value.attempts == 1
    assert forwarder.threads_alive == 0


def test_the_argument_wins_over_the_environment(emulator, https, ca_path, tmp_path):
    # A wrong bundle in the environment does not matter when verify= names the right one.
    wrong = tmp_path / "other.pem"
    new_ca().cert_pem.write_to_path(str(wrong))
    with https_client(
        emulator, https, verify=ca_path, environ={"REQUESTS_CA_BUNDLE": str(wrong)}
    ) as client:
        client.models.list()
    with https_client(emulator, https, environ={"SSL_CERT_FILE": str(wrong)}) as client:
        with pytest.raises(E.TLSError):
            client.models.list()
    # requests' order among the variables: REQUESTS_CA_BUNDLE, then CURL_CA_BUNDLE, then SSL_CERT_FILE.
    with https_client(
        emulator, https, environ={"REQUESTS_CA_BUNDLE": ca_path, "SSL_CERT_FILE": str(wrong)}
    ) as client:
        client.models.list()


def test_ssl_cert_file_in_the_process_environment_is_honoured(
    emulator, https, ca_path, monkeypatch
):
    for name in list(os.environ):
        if name.lower().endswith("_proxy") or name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SSL_CERT_FILE", ca_path)
    with https_client(emulator, https, environ=None) as client:
        assert client.verify == ca_path
        client.models.list()


def test_verify_false_skips_the_check(emulator, https):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # urllib3's InsecureRequestWarning is the point here
        with https_client(emulator, https, verify=False) as client:
            assert client.models.list()


@pytest.mark.parametrize(
    "options",
    [
        dict(verify="/no/such/ca.pem"),
        dict(environ={"REQUESTS_CA_BUNDLE": "/no/such/ca.pem"}),
        dict(environ={"SSL_CERT_FILE": "/no/such/ca.pem"}),
        dict(verify=1),
        dict(verify="ca.pem\x00"),
    ],
)
def test_a_missing_or_bad_bundle_is_a_configuration_error(emulator, options):
    with pytest.raises(E.ConfigurationError, match="verify"):
        make_client(emulator, base_url="https://127.0.0.1:1/v1", **options)


def test_a_tls_client_pickles_with_its_bundle(emulator, https, ca_path):
    with https_client(emulator, https, verify=ca_path) as client:
        clone = pickle.loads(pickle.dumps(client))
    with clone:
        assert clone.verify == ca_path
        clone.models.list()


# --- proxies -------------------------------------------------------------------------------------------------


@pytest.fixture
def proxy():
    with ForwardProxy() as forward:
        yield forward
    assert forward.threads_alive == 0


@pytest.fixture
def no_os_proxies(monkeypatch):
    # Client(environ=...) must not depend on the process environment; make the runner's irrelevant too.
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


def test_http_proxy_from_environ_carries_every_call(emulator, proxy, no_os_proxies):
    with make_client(emulator, environ={"HTTP_PROXY": proxy.url}) as client:
        assert client.proxies == {"http": proxy.url}
        client.models.list()
        client.responses.create(model=MODEL, input="via proxy", max_output_tokens=4)
    assert proxy.forwarded == 2 and proxy.refused == 0
    assert [method for method, _, _ in proxy.seen] == ["GET", "POST"]
    assert proxy.seen[1][1] == emulator.base_url + "/responses"  # absolute-URI form


def test_lowercase_http_proxy_and_all_proxy_work_too(emulator, proxy, no_os_proxies):
    for name in ("http_proxy", "ALL_PROXY"):
        with make_client(emulator, environ={name: proxy.url}) as client:
            client.models.list()
    assert proxy.forwarded == 2


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "127.0.0.0/8", "*"])
def test_no_proxy_bypasses_it(emulator, proxy, no_os_proxies, no_proxy):
    with make_client(emulator, environ={"HTTP_PROXY": proxy.url, "NO_PROXY": no_proxy}) as client:
        assert client.proxies == {}
        client.models.list()
    assert proxy.forwarded == 0


def test_explicit_proxies_work_and_win_over_the_environment(emulator, proxy, no_os_proxies):
    with make_client(emulator, proxies={"http": proxy.url}, environ={"NO_PROXY": "*"}) as client:
        client.models.list()
    assert proxy.forwarded == 1


def test_environ_given_means_the_process_environment_is_ignored(
    emulator, proxy, monkeypatch, no_os_proxies
):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with make_client(emulator, environ={"HTTP_PROXY": proxy.url}) as client:
        client.models.list()
    assert proxy.forwarded == 1


def test_https_through_the_proxy_tunnels_and_still_checks_the_certificate(
    emulator, https, proxy, ca_path, no_os_proxies
):
    with https_client(
        emulator, https, verify=ca_path, environ={"HTTPS_PROXY": proxy.url}
    ) as client:
        client.models.list()
    assert proxy.tunnels == 1 and proxy.forwarded == 0
    with https_client(emulator, https, environ={"HTTPS_PROXY": proxy.url}) as client:
        with pytest.raises(E.TLSError) as caught:
            client.models.list()
    assert caught.value.attempts == 1


def test_a_dead_proxy_is_a_connection_error_that_names_no_secret(emulator, no_os_proxies):
    with make_client(emulator, proxies={"http": "http://user:hunter2@127.0.0.1:1"}) as client:
        with pytest.raises(E.APIConnectionError) as caught:
            client.models.list()
    assert "hunter2" not in str(caught.value)
    assert caught.value.request_sent is False


# --- errors: status_code, builtin bases, pickles --------------------------------------------------------------

FIELDS = dict(
    status=None,
    code="some_code",
    type="invalid_request_error",
    param="model",
    request_id="req_1",
    response_id="resp_1",
    attempts=3,
    retry_after=1.5,
    idempotency_key="sail-lite-abc",
)

ERROR_TABLE = [
    # class, status, builtin bases it must also be
    (E.InvalidRequestError, None, (ValueError,)),
    (E.LoRANameError, None, (ValueError,)),
    (E.AdapterError, None, (ValueError,)),
    (E.ConfigurationError, None, ()),
    (E.APIConnectionError, None, (ConnectionError,)),
    (E.APITimeoutError, None, (TimeoutError, ConnectionError)),
    (E.TLSError, None, (ConnectionError,)),
    (E.UploadNotRewindableError, None, (ConnectionError,)),
    (E.MalformedResponseError, 200, ()),
    (E.ResponseTooLargeError, 200, ()),
    (E.BadRequestError, 400, (ValueError,)),
    (E.IdempotencyError, 400, (ValueError,)),
    (E.AuthenticationError, 401, ()),
    (E.PermissionDeniedError, 403, (PermissionError,)),
    (E.NotFoundError, 404, (LookupError,)),
    (E.RequestTimeoutError, 408, (TimeoutError,)),
    (E.ConflictError, 409, ()),
    (E.RequestTooLargeError, 413, ()),
    (E.UnprocessableEntityError, 422, ()),
    (E.RateLimitError, 429, ()),
    (E.ServerError, 500, ()),
    (E.OverloadedError, 503, ()),
    (E.ResponseFailedError, None, ()),
    (E.ResponseCancelledError, None, ()),
    (E.ResponseExpiredError, None, ()),
    (E.ClientClosedError, None, ()),
    (E.DeadlineExceededError, None, (TimeoutError,)),
    (E.LoRAValidationError, None, ()),
]


def test_the_table_covers_every_error():
    exported = {getattr(E, name) for name in E.__all__ if isinstance(getattr(E, name), type)}
    assert exported - {E.SailError, E.APIStatusError} == {row[0] for row in ERROR_TABLE}


@pytest.mark.parametrize(
    "cls, status, builtins", ERROR_TABLE, ids=[row[0].__name__ for row in ERROR_TABLE]
)
def test_errors_carry_status_code_subclass_builtins_and_pickle_whole(cls, status, builtins):
    extra = {
        E.AdapterError: dict(problems=("p1", "p2")),
        E.APIConnectionError: dict(request_sent=False),
        E.APITimeoutError: dict(request_sent=False),
        E.TLSError: dict(request_sent=False),
        E.UploadNotRewindableError: dict(request_sent=False),
        E.ResponseFailedError: dict(response={"id": "resp_1"}),
        E.ResponseCancelledError: dict(response={"id": "resp_1"}),
        E.ResponseExpiredError: dict(response={"id": "resp_1"}),
        E.LoRAValidationError: dict(
            lora={"name": "l"}, model=MODEL, result_code="bad_rank", result_message="r=64"
        ),
    }.get(cls, {})
    fields = dict(FIELDS, status=status, **extra)
    error = cls("something went wrong", **fields)
    assert isinstance(error, E.SailError)
    for builtin in builtins:
        assert isinstance(error, builtin), f"{cls.__name__} should be a {builtin.__name__}"
    assert error.status_code == error.status == status
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls
    assert clone.message == error.message and str(clone) == str(error) and clone.args == error.args
    for name, value in fields.items():
        assert getattr(clone, name) == value, name
    assert clone.status_code == status


@pytest.mark.parametrize(
    "status, cls",
    [
        (400, E.BadRequestError),
        (403, E.PermissionDeniedError),
        (404, E.NotFoundError),
        (408, E.RequestTimeoutError),
        (503, E.OverloadedError),
        (529, E.OverloadedError),
        (502, E.ServerError),
    ],
)
def test_status_errors_from_the_wire_are_the_right_builtin(status, cls):
    error = E.status_error(status, {"error": {"message": "m", "code": "c"}}, request_id="req_9")
    assert type(error) is cls and error.status_code == status and error.request_id == "req_9"


def test_a_real_404_is_a_lookup_error(client):
    with pytest.raises(LookupError) as caught:
        client.responses.retrieve("resp_missing")
    assert caught.value.status_code == 404


# --- timeout, deadline and extra_headers on every public method -------------------------------------------------

RESOURCES = (
    "responses",
    "tokens",
    "chat.completions",
    "messages",
    "files",
    "loras",
    "batches",
    "models",
)


def _public_methods(client):
    for resource in RESOURCES:
        target = client
        for part in resource.split("."):
            target = getattr(target, part)
        for name, method in inspect.getmembers(target, inspect.ismethod):
            if not name.startswith("_"):
                yield f"{resource}.{name}", method


def test_every_public_method_takes_timeout_deadline_and_extra_headers(emulator):
    with make_client(emulator) as client:
        methods = dict(_public_methods(client))
    assert len(methods) >= 25
    missing = {}
    for label, method in methods.items():
        parameters = inspect.signature(method).parameters
        if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            parameters = inspect.signature(
                method.__self__.submit
            ).parameters  # tokens.sample(**submit's)
        lacking = [
            name
            for name in ("timeout", "deadline", "extra_headers")
            if name not in parameters or parameters[name].kind != inspect.Parameter.KEYWORD_ONLY
        ]
        if lacking:
            missing[label] = lacking
    assert missing == {}


def test_extra_headers_reach_the_server_on_every_attempt(emulator, proxy, no_os_proxies):
    from sail_lite import RetryPolicy
    from sail_lite.emulator.faults import Fault

    emulator.faults.add(
        Fault("error", method="POST", path="/v1/chat/completions", status=503, times=1)
    )
    with make_client(
        emulator, proxies={"http": proxy.url}, retry=RetryPolicy(initial_delay=0.0, max_delay=0.0)
    ) as client:
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_completion_tokens=4,
            extra_headers={"X-Trace-Id": "trace-42"},
        )
        client.models.list(extra_headers={"X-Trace-Id": "trace-43"})
    posts = [headers for method, url, headers in proxy.seen if url.endswith("/chat/completions")]
    assert len(posts) == 2 and all(headers.get("X-Trace-Id") == "trace-42" for headers in posts)
    assert proxy.headers_of("GET", "/models").get("X-Trace-Id") == "trace-43"
