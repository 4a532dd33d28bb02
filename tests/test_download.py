"""Weights on demand: the real download path against a local HTTP server on 127.0.0.1.

The server (``http.server`` in a thread) serves a checkpoint saved from a tiny fairbits
model under a name that carries its own SHA-256 prefix, as CompressAI's zoo names do; the
URL tables are pointed at it. Nothing here leaves the machine.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fairbits import download
from fairbits.codecs import checkpoints
from fairbits.codecs.architectures import build_model
from fairbits.codecs.checkpoints import learned_settings_summary, save_checkpoint
from fairbits.codecs.learned import LearnedCodec
from fairbits.errors import CodecUnavailable, FairbitsError
from fairbits.measures import features as feat_mod

ARCH = "bmshj2018-hyperprior"


class _Server:
    """A static file server on 127.0.0.1 that counts the requests it answers."""

    def __init__(self, folder: Path):
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.requests: list[str] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    server = _Server(folder)
    yield folder, server
    server.close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch.hub cache; downloads allowed (whatever the environment says)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)
    monkeypatch.delenv(download.TIMEOUT_ENV, raising=False)
    return tmp_path / "hub" / "checkpoints"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def tiny_bytes(tmp_path_factory) -> bytes:
    """A fairbits checkpoint of a tiny, updated hyperprior model, as bytes."""
    torch.manual_seed(0)
    path = save_checkpoint(build_model(ARCH, 16, 24), ARCH, tmp_path_factory.mktemp("w") / "tiny.pt")
    return path.read_bytes()


def _publish(folder: Path, data: bytes, stem: str = "tiny-hyperprior-1", prefix: str | None = None) -> str:
    """Write ``data`` as ``<stem>-<sha prefix>.pth.tar`` (a wrong prefix if given); return the name."""
    name = f"{stem}-{prefix or _sha(data)[:8]}.pth.tar"
    (folder / name).write_bytes(data)
    return name


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _image() -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    return (np.stack([xx, yy, 0.5 * (xx + yy)], -1) * 255).astype(np.uint8)


# --------------------------------------------------------------------------- codecs


def test_zoo_weights_download_on_first_use(served, hub, tiny_bytes, monkeypatch, capfd):
    folder, server = served
    name = _publish(folder, tiny_bytes)
    monkeypatch.setitem(checkpoints.ZOO_URL_OVERRIDES, ARCH, {1: f"{server.url}/{name}", 2: f"{server.url}/x.pth"})
    codec = LearnedCodec(ARCH)
    assert codec.zoo_settings == () and "none of 2 cached (downloaded on first use)" in \
        learned_settings_summary(ARCH)
    path = codec.checkpoint_path("zoo-q1")
    assert path == hub / name and path.read_bytes() == tiny_bytes
    assert server.requests == [f"/{name}"] and _leftovers(hub) == [name]
    err = capfd.readouterr().err
    assert f"{server.url}/{name}" in err and str(path) in err          # says what it fetches, and where
    # the downloaded weights code exactly as the same file given by path
    coded = codec.code(_image(), "zoo-q1")
    (hub.parent / "copy.pt").write_bytes(tiny_bytes)
    assert coded.data == LearnedCodec(ARCH).code(_image(), str(hub.parent / "copy.pt")).data
    # cached now: a setting, and never fetched again
    again = LearnedCodec(ARCH)
    assert again.zoo_settings == ("zoo-q1",) and again.checkpoint_path("zoo-q1") == path
    assert len(server.requests) == 1
    assert "1 of 2 cached (the rest downloaded on first use)" in learned_settings_summary(ARCH)


def test_zoo_hash_mismatch_keeps_nothing(served, hub, tiny_bytes, monkeypatch):
    folder, server = served
    name = _publish(folder, tiny_bytes, prefix="deadbeef")     # the name promises another file
    url = f"{server.url}/{name}"
    monkeypatch.setitem(checkpoints.ZOO_URL_OVERRIDES, ARCH, {1: url})
    with pytest.raises(CodecUnavailable) as err:
        LearnedCodec(ARCH).checkpoint_path("zoo-q1")
    msg = str(err.value)
    assert "deadbeef" in msg and "SHA-256" in msg and url in msg and str(hub / name) in msg
    assert "nothing was kept" in msg
    assert not hub.exists()                                     # no file, no .partial, no new folder
    assert server.requests == [f"/{name}"]


def test_zoo_offline_refuses_without_touching_the_network(served, hub, tiny_bytes, monkeypatch):
    folder, server = served
    name = _publish(folder, tiny_bytes)
    url = f"{server.url}/{name}"
    monkeypatch.setitem(checkpoints.ZOO_URL_OVERRIDES, ARCH, {1: url})
    monkeypatch.setenv(download.OFFLINE_ENV, "1")
    codec = LearnedCodec(ARCH)
    with pytest.raises(CodecUnavailable) as err:
        codec.code(_image(), "zoo-q1")
    msg = str(err.value)
    assert download.OFFLINE_ENV in msg and url in msg and str(hub / name) in msg
    assert "pass the downloaded file's path as the setting" in msg
    assert server.requests == [] and _leftovers(hub) == []
    assert "(downloads off)" in learned_settings_summary(ARCH)
    # a file put there by hand is used offline
    hub.mkdir(parents=True)
    (hub / name).write_bytes(tiny_bytes)
    assert codec.checkpoint_path("zoo-q1") == hub / name and server.requests == []


def test_unreachable_server_and_http_error(served, hub, monkeypatch):
    folder, server = served
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w-1-0123abcd.pth.tar"
    monkeypatch.setitem(checkpoints.ZOO_URL_OVERRIDES, ARCH, {1: url, 2: f"{server.url}/missing-89abcdef.pth.tar"})
    with pytest.raises(CodecUnavailable) as err:
        LearnedCodec(ARCH).checkpoint_path("zoo-q1")
    msg = str(err.value)
    assert "cannot reach" in msg and url in msg and str(hub / "w-1-0123abcd.pth.tar") in msg
    with pytest.raises(CodecUnavailable, match="answered 404"):
        LearnedCodec(ARCH).checkpoint_path("zoo-q2")
    assert _leftovers(hub) == []


def test_silent_server_times_out(hub, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)                  # accepts connections, never answers
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/w-1-0123abcd.pth.tar"
        monkeypatch.setenv(download.TIMEOUT_ENV, "0.5")
        t = time.monotonic()
        with pytest.raises(FairbitsError) as err:
            download.fetch(url, hub / "w-1-0123abcd.pth.tar", what="test weights", progress=False)
        assert time.monotonic() - t < 10
        msg = str(err.value)
        assert url in msg and str(hub / "w-1-0123abcd.pth.tar") in msg and ("0.5 s" in msg or "timed out" in msg)
        assert socket.getdefaulttimeout() is None           # the global default is restored
        assert _leftovers(hub) == []
    finally:
        listener.close()
    monkeypatch.setenv(download.TIMEOUT_ENV, "soon")
    with pytest.raises(FairbitsError, match=download.TIMEOUT_ENV):
        download.fetch(url, hub / "x-0123abcd.pth", what="test weights")


def test_hash_prefix_of_published_names():
    from compressai.zoo.image import model_urls

    urls = [u for arch in model_urls.values() for u in arch["mse"].values()]
    assert len(urls) > 40
    for url in urls:   # every CompressAI zoo name carries an 8-digit prefix
        prefix = download.hash_prefix(download.file_name(url))
        assert prefix is not None and len(prefix) == 8 and url.endswith(f"-{prefix}.pth.tar")
    assert download.hash_prefix("bmshj2018-factorized-prior-1-446d5c7f.pth.tar") == "446d5c7f"
    assert download.hash_prefix(feat_mod.FID_INCEPTION_FILE) == "6726825d"
    assert download.hash_prefix(feat_mod.TORCHVISION_INCEPTION_FILE) == "0cc3c7bd"
    assert download.hash_prefix("weights.pth") is None and download.hash_prefix("a-b12.pt") is None


# --------------------------------------------------------------------------- Inception


def test_inception_weights_download_and_offline(served, hub, monkeypatch):
    folder, server = served
    monkeypatch.delenv(feat_mod.INCEPTION_ENV, raising=False)
    data = b"not really inception weights, only bytes to move" * 100
    name = f"pt_inception-test-{_sha(data)[:8]}.pth"
    (folder / name).write_bytes(data)
    monkeypatch.setitem(feat_mod.INCEPTION_URLS, name, f"{server.url}/{name}")
    monkeypatch.setattr(feat_mod, "INCEPTION_DOWNLOAD", name)

    monkeypatch.setenv(download.OFFLINE_ENV, "yes")
    with pytest.raises(FairbitsError) as err:
        feat_mod.inception_weights_path()
    msg = str(err.value)
    assert feat_mod.TORCHVISION_INCEPTION_FILE in msg and feat_mod.INCEPTION_ENV in msg and str(hub) in msg
    assert f"{server.url}/{name}" in msg and server.requests == []

    monkeypatch.delenv(download.OFFLINE_ENV)
    path = feat_mod.inception_weights_path(progress=False)
    assert path == hub / name and path.read_bytes() == data and server.requests == [f"/{name}"]
    assert feat_mod.inception_weights_path() == path and len(server.requests) == 1
    (hub / feat_mod.TORCHVISION_INCEPTION_FILE).write_bytes(b"x")      # a cached torchvision file wins
    assert feat_mod.inception_weights_path() == hub / feat_mod.TORCHVISION_INCEPTION_FILE
