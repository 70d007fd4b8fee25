"""Storage downloads (the tinker-weights bridge) go through the client's own HTTP stack (issue 20).

The client's requests Session carries them (its proxies, ``verify=``, ``REQUESTS_CA_BUNDLE``);
the publish's ``deadline=`` bounds them; redirects are followed only to the same host over
http(s), never https -> http, a few hops at most; anything else is a typed error whose message
shows no query string. Loopback servers only.
"""

from __future__ import annotations

import os
import ssl
import time

import pytest

from sail_lite import APIStatusError, InvalidRequestError, SailError
from sail_lite._transport import MAX_DOWNLOAD_REDIRECTS, new_session, open_download
from sail_lite.adapters import make_adapter
from sail_lite.tinker_weights import upload_external_weights

from ._scripted import ScriptedServer, respond
from ._tls_servers import ForwardProxy, TLSForwarder
from .conftest import make_client
from .tinker_standin import FILES, StorageServer

MODEL = "moonshotai/Kimi-K2.6"
SIG = "X-Sig=topsecret"


def adapter_files(tmp_path):
    folder = make_adapter(tmp_path / "a", seed=1)
    with open(os.path.join(folder, FILES[0]), "rb") as handle:
        config = handle.read()
    with open(os.path.join(folder, FILES[1]), "rb") as handle:
        weights = handle.read()
    return config, weights


def _no_secret(error: BaseException) -> None:
    assert "topsecret" not in str(error) and "X-Sig" not in str(error)


# --- the deadline bounds the downloads ------------------------------------------------------------


def test_a_dripping_storage_server_cannot_hold_a_publish_past_its_deadline(emulator, tmp_path):
    config, weights = adapter_files(tmp_path)
    asked = []

    def reply(request, connection):
        asked.append(request.path)
        if FILES[0] not in request.path:
            respond(connection, 200, weights)
            return
        connection.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(config)}\r\n\r\n".encode())
        for byte in config:  # one byte every 50 ms: each read is quick, the whole is not (~15 s)
            time.sleep(0.05)
            connection.sendall(bytes([byte]))

    with ScriptedServer(reply) as storage, make_client(emulator) as client:
        base = storage.base_url[: -len("/v1")]
        urls = {name: f"{base}/ckpt/{name}?{SIG}" for name in FILES}
        with pytest.raises(TimeoutError) as caught:
            upload_external_weights(
                client,
                {"urls": urls},
                name="drip-test",
                supported_models=[MODEL],
                deadline=1,
                download_timeout=5,
            )
    assert isinstance(caught.value, SailError)
    _no_secret(caught.value)
    assert asked == [f"/ckpt/{FILES[0]}?{SIG}"]  # stopped inside the config: nothing after it


# --- the client's TLS and proxy settings ----------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return pytest.importorskip("trustme").CA()


@pytest.fixture
def https_storage(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with StorageServer() as storage:
        port = int(storage.url.rsplit(":", 1)[1])
        with TLSForwarder(port, context) as forwarder:
            yield storage, forwarder


def _over_https(published, storage, forwarder):
    urls = {k: v.replace(storage.url, forwarder.url) for k, v in published["urls"].items()}
    return dict(published, urls=urls)


@pytest.mark.parametrize("how", ["verify=", "REQUESTS_CA_BUNDLE"])
def test_https_storage_signed_by_the_clients_ca_is_trusted(
    emulator, https_storage, ca, tmp_path, how
):
    storage, forwarder = https_storage
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    options = (
        dict(verify=str(ca_path))
        if how == "verify="
        else dict(environ={"REQUESTS_CA_BUNDLE": str(ca_path)})
    )
    published = _over_https(
        storage.publish(*adapter_files(tmp_path), tinker_path="tinker://r/external_weights/s"),
        storage,
        forwarder,
    )
    with make_client(emulator, **options) as client:
        result = upload_external_weights(client, published, supported_models=[MODEL])
    assert result.lora.name and forwarder.handshakes_ok >= 1


def test_https_storage_from_an_unknown_ca_is_a_tls_error_with_its_reason(
    emulator, https_storage, tmp_path
):
    storage, forwarder = https_storage
    published = _over_https(
        storage.publish(*adapter_files(tmp_path), tinker_path="tinker://r/external_weights/s"),
        storage,
        forwarder,
    )
    with make_client(emulator) as client:
        with pytest.raises(SailError) as caught:
            upload_external_weights(client, published, supported_models=[MODEL])
    assert "certificate" in str(caught.value) and "verify=" in str(caught.value)
    _no_secret(caught.value)


def test_downloads_go_through_the_clients_proxy_without_the_api_key(
    emulator, tmp_path, monkeypatch
):
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    with StorageServer() as storage, ForwardProxy() as proxy:
        published = storage.publish(
            *adapter_files(tmp_path), tinker_path="tinker://r/external_weights/s"
        )
        with make_client(emulator, proxies={"http": proxy.url}) as client:
            upload_external_weights(client, published, supported_models=[MODEL])
        downloads = [
            (url, headers) for _, url, headers in proxy.seen if url.startswith(storage.url)
        ]
    assert downloads  # the storage GETs went through the client's proxy
    assert all("Authorization" not in headers for _, headers in downloads)


# --- redirects -----------------------------------------------------------------------------------


def redirecting(target_of):
    """A server whose ``/start`` (and each ``/hop-N``) redirects to ``target_of(request, base)``."""
    holder = {}

    def reply(request, connection):
        if request.path.startswith("/final"):
            respond(connection, 200, b"the bytes")
            return
        respond(connection, 302, b"", {"Location": target_of(request, holder["base"])})

    server = ScriptedServer(reply)
    holder["base"] = server.base_url[: -len("/v1")]
    return server


def _download(url):
    session = new_session(pool_size=2)
    try:
        with open_download(session, url, label="the file", timeout=5) as download:
            return download.status, download.read()
    finally:
        session.close()


def test_a_redirect_on_the_same_host_is_followed():
    with redirecting(lambda request, base: f"/final?{SIG}") as server:
        base = server.base_url[: -len("/v1")]
        assert _download(f"{base}/start?{SIG}") == (200, b"the bytes")


@pytest.mark.parametrize(
    "target",
    [
        lambda request, base: base.replace("127.0.0.1", "localhost") + f"/final?{SIG}",
        lambda request, base: f"ftp://127.0.0.1/final?{SIG}",
        lambda request, base: f"file:///etc/passwd?{SIG}",
        lambda request, base: base.rsplit(":", 1)[0] + f":1/final?{SIG}",
    ],
    ids=["another host", "ftp", "file", "another port"],
)
def test_a_redirect_elsewhere_is_refused_typed_without_the_query(target):
    with redirecting(target) as server:
        base = server.base_url[: -len("/v1")]
        with pytest.raises(APIStatusError) as caught:
            _download(f"{base}/start?{SIG}")
    assert caught.value.code == "redirect_refused" and caught.value.status == 302
    _no_secret(caught.value)
    assert len(server.requests) == 1  # nothing was fetched from the target


def test_https_to_http_is_refused(ca, tmp_path):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    holder = {}

    def reply(request, connection):
        respond(connection, 302, b"", {"Location": holder["plain"] + f"/final?{SIG}"})

    with ScriptedServer(reply) as server:
        holder["plain"] = server.base_url[: -len("/v1")]
        port = int(holder["plain"].rsplit(":", 1)[1])
        with TLSForwarder(port, context) as forwarder:
            session = new_session(pool_size=2, verify=str(ca_path))
            with pytest.raises(APIStatusError) as caught:
                open_download(session, f"{forwarder.url}/start?{SIG}", label="f", timeout=5)
            session.close()
    assert caught.value.code == "redirect_refused"
    _no_secret(caught.value)


def test_redirects_stop_after_a_few_hops():
    with redirecting(lambda request, base: f"/hop?{SIG}") as server:
        base = server.base_url[: -len("/v1")]
        with pytest.raises(APIStatusError) as caught:
            _download(f"{base}/start?{SIG}")
    assert caught.value.code == "too_many_redirects"
    assert len(server.requests) == MAX_DOWNLOAD_REDIRECTS + 1
    _no_secret(caught.value)


@pytest.mark.parametrize("url", [f"ftp://127.0.0.1/x?{SIG}", f"file:///x?{SIG}", "no url", 5])
def test_a_url_that_is_not_http_is_refused_before_anything_is_sent(url):
    with pytest.raises(InvalidRequestError) as caught:
        _download(url)
    _no_secret(caught.value)


def test_a_redirect_to_another_host_is_not_published_from(emulator, tmp_path):
    config, weights = adapter_files(tmp_path)
    with StorageServer() as elsewhere:
        published = elsewhere.publish(config, weights, tinker_path="tinker://r/external_weights/s")
        other = {k: v.replace("127.0.0.1", "localhost") for k, v in published["urls"].items()}

        def reply(request, connection):
            name = FILES[0] if FILES[0] in request.path else FILES[1]
            respond(connection, 302, b"", {"Location": other[name]})

        with ScriptedServer(reply) as storage, make_client(emulator) as client:
            base = storage.base_url[: -len("/v1")]
            urls = {name: f"{base}/{name}?{SIG}" for name in FILES}
            with pytest.raises(APIStatusError) as caught:
                upload_external_weights(
                    client, {"urls": urls}, name="r-t", supported_models=[MODEL]
                )
        assert elsewhere.requests == []
    assert caught.value.code == "redirect_refused"
    _no_secret(caught.value)
