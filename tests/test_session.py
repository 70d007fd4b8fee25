"""``Client(session=...)``: a user's configured requests.Session carries every call.

Its adapters, auth, hooks, client certificate and CA settings are used; sail_lite still sets its
own headers (Authorization, User-Agent, Idempotency-Key), timeouts and redirect policy.
"""

from __future__ import annotations

import ssl

import pytest
import requests
from requests.adapters import HTTPAdapter

from sail_lite import Client
from sail_lite.errors import ClientClosedError, ConfigurationError

from ._scripted import ScriptedServer, respond
from ._tls_servers import ForwardProxy, TLSForwarder
from .conftest import make_client

MODEL = "moonshotai/Kimi-K2.6"


class CountingAdapter(HTTPAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.sent = []

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        self.sent.append((request.method, request.url, kwargs.get("timeout")))
        return super().send(request, **kwargs)


class TraceAuth(requests.auth.AuthBase):
    def __call__(self, request):  # type: ignore[no-untyped-def]
        request.headers["X-Trace-Auth"] = "plugin"
        return request


def test_a_users_session_carries_every_call_with_its_adapter_auth_and_hooks(emulator):
    session = requests.Session()
    adapter = CountingAdapter()
    session.mount("http://", adapter)
    session.auth = TraceAuth()
    session.headers["User-Agent"] = "theirs"
    statuses = []
    session.hooks["response"].append(lambda response, **kw: statuses.append(response.status_code))
    with make_client(emulator, session=session) as client:
        assert client.session is session
        client.models.list()
        client.responses.create(model=MODEL, input="hi", background=True)
    assert [method for method, _, _ in adapter.sent] == ["GET", "POST"]
    assert all(timeout is not None for _, _, timeout in adapter.sent)  # sail_lite's timeouts
    assert statuses == [200, 202]
    assert emulator.stats()["inference_runs"] == 1
    session.get(emulator.base_url + "/models")  # the client does not close the user's Session


def test_sail_lite_headers_win_and_the_session_auth_and_headers_travel():
    seen = []

    def reply(request, connection):
        seen.append(request.headers)
        respond(connection, 200, b'{"object": "list", "data": []}')

    session = requests.Session()
    session.auth = TraceAuth()
    session.headers.update({"User-Agent": "theirs", "X-Team": "search"})
    with ScriptedServer(reply) as server:
        with Client("sk-test", base_url=server.base_url, session=session) as client:
            client.models.list()
    headers = seen[0]
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["user-agent"].startswith("sail-lite/")
    assert headers["x-team"] == "search" and headers["x-trace-auth"] == "plugin"


def test_redirects_are_not_followed_even_when_the_session_would():
    def reply(request, connection):
        respond(connection, 302, b"{}", {"Location": "http://127.0.0.1:1/elsewhere"})

    session = requests.Session()
    with ScriptedServer(reply) as server:
        with Client("sk-test", base_url=server.base_url, session=session) as client:
            with pytest.raises(Exception) as caught:
                client.models.list()
    assert getattr(caught.value, "status", None) == 302


def test_the_sessions_proxies_are_used(emulator, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    session = requests.Session()
    with ForwardProxy() as proxy:
        session.proxies = {"http": proxy.url}
        with make_client(emulator, session=session) as client:
            client.models.list()
            assert client.proxies == {"http": proxy.url}
        assert proxy.forwarded == 1


@pytest.fixture(scope="module")
def ca():
    return pytest.importorskip("trustme").CA()


def test_the_sessions_client_certificate_and_ca_bundle_are_used(emulator, ca, tmp_path):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no connection
    ca_path, cert_path = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    ca.issue_cert("client@example.org").private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    port = int(emulator.url.rsplit(":", 1)[1])
    with TLSForwarder(port, context) as forwarder:
        session = requests.Session()
        session.verify, session.cert = str(ca_path), str(cert_path)
        with make_client(emulator, base_url=forwarder.url + "/v1", session=session) as client:
            assert client.verify == str(ca_path)
            assert client.models.list()
        assert forwarder.handshakes_ok >= 1


def test_the_clients_own_session_is_public_read_only_and_closed_with_it(emulator):
    client = make_client(emulator)
    session = client.session
    assert isinstance(session, requests.Session)
    assert session is client.session  # one Session, made once
    with pytest.raises(AttributeError):
        client.session = requests.Session()  # type: ignore[misc]
    client.close()
    with pytest.raises(ClientClosedError):
        _ = client.session


@pytest.mark.parametrize(
    "options",
    [
        dict(session="not a session"),
        dict(session=requests.Session(), verify=False),
        dict(session=requests.Session(), proxies={"http": "http://127.0.0.1:1"}),
    ],
)
def test_bad_session_settings_are_configuration_errors(options):
    with pytest.raises(ConfigurationError, match="session"):
        Client("sk-test", environ={}, **options)
