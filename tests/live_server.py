"""Run `lookalike serve` for real in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time

import httpx

URL_LINE = re.compile(r"serving .* on (http://127\.0\.0\.1:\d+)/")


class LiveServer:
    """``with LiveServer(index_dir, "--token", "t") as s: httpx.get(s.url + "/api/health")``."""

    def __init__(self, index_dir, *args: str, env: dict | None = None, timeout: float = 90):
        self.cmd = [sys.executable, "-m", "lookalike.cli", "serve", "--index", str(index_dir),
                    "--port", "0", "--no-access-log", *map(str, args)]
        self.env = {**os.environ, **(env or {})}
        self.timeout = timeout
        self.lines: list[str] = []
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None
        self._found = threading.Event()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            m = URL_LINE.search(line)
            if m and self.url is None:
                self.url = m.group(1)
                self._found.set()
        self._found.set()

    def start(self, headers: dict | None = None) -> "LiveServer":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=self.env, stdin=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + self.timeout
        if not self._found.wait(self.timeout) or self.url is None:
            self.stop()
            raise RuntimeError(f"server did not start:\n{self.log}")
        while time.monotonic() < deadline:  # the app is ready once startup (model warm-up) is done
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log}")
            try:
                r = httpx.get(self.url + "/api/health", headers=headers, timeout=5)
                if r.status_code in (200, 401):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer in {self.timeout} s:\n{self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def raw_request(port: int, target: str, method: str = "GET", headers: dict | None = None) -> tuple[int, bytes]:
    """Send ``target`` byte for byte (no client-side normalisation of ``..``); ``(status, body)``."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body
