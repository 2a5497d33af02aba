"""Slow clients and a latency probe: the attack SPEC §9 says the front door must absorb.

Half the attackers send a request line and headers a byte at a time, the other half send
whole headers (with valid credentials) and then the body a byte at a time, one byte every
``interval_s`` each; a connection the server closes is opened again at once. Meanwhile a
probe asks ``find-pending-callbacks`` over and over, as a data action would, and records
how long each answer took (a timeout counts as its full length).

Also a command, for measuring by hand (e.g. against gunicorn without the proxy):

    python -m tests.slowclients URL --user demo --password demo-password [--tls-ca CERT]
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

PROBE_BODY = {"customerNumber": "+14155552671"}


@dataclass
class Attack:
    """``count`` slow connections against ``url`` until ``stop`` is set."""

    url: str
    authorization: str
    count: int = 256
    interval_s: float = 10.0
    ca_file: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    opened: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Attack:
        """Open every slow connection (each in its own thread) and return at once."""
        for i in range(self.count):
            thread = threading.Thread(target=self._run, args=(i % 2 == 1,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        """Stop every attacker and wait for them."""
        self.stop.set()
        for thread in self._threads:
            thread.join(self.interval_s + 5)

    def _connect(self) -> socket.socket:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        raw = socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=10)
        if parts.scheme != "https":
            return raw
        context = ssl.create_default_context(cafile=self.ca_file)
        return context.wrap_socket(raw, server_hostname=parts.hostname)

    def _run(self, slow_body: bool) -> None:
        path = urlsplit(self.url).path.rstrip("/") + "/v1/actions/find-pending-callbacks"
        body = json.dumps(PROBE_BODY).encode() + b" " * 900
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: {self.authorization}\r\n")
        while not self.stop.is_set():
            try:
                with self._connect() as conn:
                    with self._lock:
                        self.opened += 1
                    if slow_body:
                        conn.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
                        trickle = body
                    else:
                        conn.sendall(b"POST ")
                        trickle = f"{path} HTTP/1.1\r\nHost: x\r\n".encode() * 1000
                    for i in range(len(trickle)):
                        if self.stop.wait(self.interval_s):
                            return
                        conn.sendall(trickle[i:i + 1])
            except OSError:
                # The server gave up on us (as it should): come straight back.
                self.stop.wait(0.05)


@dataclass
class Probe:
    """Sequential ``find-pending-callbacks`` calls; latencies in seconds."""

    url: str
    auth: tuple[str, str]
    timeout_s: float = 10.0
    verify: str | bool = True
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    def run_for(self, seconds: float) -> None:
        """Probe until ``seconds`` have passed."""
        end = time.monotonic() + seconds
        with requests.Session() as session:
            while time.monotonic() < end:
                started = time.monotonic()
                try:
                    resp = session.post(f"{self.url}/v1/actions/find-pending-callbacks",
                                        json=PROBE_BODY, auth=self.auth,
                                        timeout=self.timeout_s, verify=self.verify)
                    if resp.status_code != 200:
                        self.failures += 1
                except requests.RequestException:
                    self.failures += 1
                    session.close()
                self.latencies.append(time.monotonic() - started)
                time.sleep(0.1)

    def quantile(self, q: float) -> float:
        """The q-quantile of the latencies (nearest rank)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return float("inf")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def basic(user: str, password: str) -> str:
    """The Authorization header value for Basic credentials."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def main() -> None:
    """Run the attack against a URL and print the probe's figures."""
    parser = argparse.ArgumentParser(prog="python -m tests.slowclients")
    parser.add_argument("url")
    parser.add_argument("--user", default="demo")
    parser.add_argument("--password", default="demo-password")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--tls-ca", default=None)
    args = parser.parse_args()
    attack = Attack(args.url, basic(args.user, args.password), args.connections,
                    ca_file=args.tls_ca).start()
    time.sleep(2)
    probe = Probe(args.url, (args.user, args.password), verify=args.tls_ca or True)
    probe.run_for(args.seconds)
    attack.close()
    print(json.dumps({"connections": args.connections, "seconds": args.seconds,
                      "probes": len(probe.latencies), "failures": probe.failures,
                      "p50_s": round(probe.quantile(0.5), 3),
                      "p99_s": round(probe.quantile(0.99), 3),
                      "max_s": round(max(probe.latencies, default=0), 3),
                      "reconnects": attack.opened}))


if __name__ == "__main__":
    main()
