"""Where the Milvus tests keep their collections: Milvus Lite files, or a real Milvus server.

Milvus Lite runs inside the test process from a file in the test's temporary
folder. A server is named by ``LOOKALIKE_TEST_MILVUS_URI`` (``.ci/run`` starts
one, with authorization on, and sets it; point it at your own server or
cluster to test against that) and ``LOOKALIKE_TEST_MILVUS_TOKEN``
(``user:password`` or an API key). On a server each test gets collections of
its own, named after a random prefix, and drops them when it ends.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from pathlib import Path

import pytest

SERVER_URI = "LOOKALIKE_TEST_MILVUS_URI"
SERVER_TOKEN = "LOOKALIKE_TEST_MILVUS_TOKEN"
KINDS = ["lite", "server"]

_LITE_PROBLEM: list[str] = []  # why Milvus Lite cannot run here, found once per session


def lite_problem(tmp_path_factory) -> str | None:
    """``None`` if Milvus Lite starts and takes a collection here, else the reason it does not."""
    if not _LITE_PROBLEM:
        try:
            import milvus_lite  # noqa: F401
            from pymilvus import MilvusClient
        except ImportError as e:
            _LITE_PROBLEM.append(f"Milvus Lite is not installed ({e}): pip install 'lookalike[milvus]'")
        else:
            try:
                client = MilvusClient(str(tmp_path_factory.mktemp("probe") / "probe.db"))
                client.list_collections()
                client.close()
                _LITE_PROBLEM.append("")
            except Exception as e:  # e.g. an unsupported platform for milvus-lite
                _LITE_PROBLEM.append(f"Milvus Lite cannot start here: {type(e).__name__}: {e}")
    return _LITE_PROBLEM[0] or None


def server_problem() -> str | None:
    if not os.environ.get(SERVER_URI):
        return (f"no Milvus server named: set {SERVER_URI} (and {SERVER_TOKEN}) to test against one; "
                ".ci/run starts one with tools/milvus_server.sh")
    try:
        import pymilvus  # noqa: F401
    except ImportError as e:
        return f"pymilvus is not installed ({e}): pip install 'lookalike[milvus]'"
    return None


class Target:
    """Collections for one test. ``name`` tells a test's collections apart ("m", "a", ...)."""

    def __init__(self, kind: str, tmp_path: Path):
        self.kind, self.tmp_path = kind, tmp_path
        self.server = kind == "server"
        self.token = (os.environ.get(SERVER_TOKEN) or None) if self.server else None
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self._used: set[str] = set()

    def uri(self, name: str = "m") -> str:
        return os.environ[SERVER_URI] if self.server else str(self.tmp_path / f"{name}.db")

    def collection(self, name: str = "m") -> str:
        if not self.server:
            return "lookalike"  # the default collection, one file per name
        self._used.add(name)
        return f"{self.prefix}_{name}"

    def open(self, name: str = "m", extractor=None, **kw):
        from lookalike import open_index

        if self.server:
            kw.setdefault("token", self.token)
        return open_index(self.uri(name), extractor, collection=self.collection(name), **kw)

    def args(self, name: str = "m") -> list[str]:
        """The CLI options naming collection ``name`` (the token comes from the environment)."""
        return ["--milvus", self.uri(name), "--collection", self.collection(name)]

    def local_dir(self, name: str = "m", shard=None) -> str:
        """Where the local catalog of collection ``name`` lives by default."""
        from lookalike.backends.milvus import default_local_dir

        return default_local_dir(self.uri(name), self.collection(name), shard)

    def client(self, name: str = "m"):
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.uri(name), **({"token": self.token} if self.token else {}))

    def release(self, client, name: str = "m") -> None:
        client.close()
        if not self.server:  # Milvus Lite locks its file while this process runs it
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.uri(name))

    def lose(self, name: str = "m", how: str = "delete") -> None:
        """What someone else does behind lookalike's back, with pymilvus directly."""
        client = self.client(name)
        try:
            coll = self.collection(name)
            if how == "delete":
                client.delete(coll, filter="id >= 0")
                assert client.query(coll, filter="", output_fields=["count(*)"])[0]["count(*)"] == 0
            else:
                client.drop_collection(coll)
        finally:
            self.release(client, name)

    def cleanup(self) -> None:
        if not self.server or not self._used:
            return
        client = self.client()
        try:
            for name in self._used:
                coll = f"{self.prefix}_{name}"
                if client.has_collection(coll):
                    client.drop_collection(coll)
        finally:
            client.close()


def make_target(kind: str, tmp_path: Path, tmp_path_factory, monkeypatch) -> Target:
    """A :class:`Target` of ``kind``, or a skip saying why it cannot run here."""
    problem = server_problem() if kind == "server" else lite_problem(tmp_path_factory)
    if problem:
        pytest.skip(problem)
    target = Target(kind, tmp_path)
    if target.server:
        # local catalogs go under ~/.lookalike/milvus by default: keep them in the test's folder,
        # and let CLI runs (in this process or a child) find the token where users put it
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        if target.token:
            monkeypatch.setenv("LOOKALIKE_MILVUS_TOKEN", target.token)
    return target


class Cable:
    """A TCP forwarder on a loopback port in front of the server: ``cut()`` drops every
    connection and refuses new ones, as a dead or unreachable server would; ``mend()``
    takes connections again on the same port."""

    def __init__(self, uri: str):
        from urllib.parse import urlparse

        parsed = urlparse(uri)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 19530)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def mend(self) -> "Cable":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for s in self._open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    server.close()
                    return
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
