"""An SMTP server that accepts connections and never answers (or greets and then falls
silent): what a stalled mail server looks like to a sender. release() hangs up on every
connection, held and new, so a test decides when a sender stuck on it gets free."""

from __future__ import annotations

import socket
import threading

from tests.support.pg import free_port


class Tarpit:
    def __init__(self, *, greet: bool = False) -> None:
        self.port = free_port()
        self.greet = greet  # send the 220 greeting, then never answer a command
        self.connections = 0
        self.released = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port), backlog=64)
        self._server.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> Tarpit:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
                if self.released:
                    conn.close()
                    continue
                self._sockets.append(conn)  # held open, never read from nor answered
            if self.greet:
                conn.sendall(b"220 tarpit.invalid ESMTP\r\n")

    def release(self) -> None:
        """Close every held connection, and from now on each new one at once (the sender
        reads end-of-file: SMTPServerDisconnected)."""
        with self._lock:
            self.released = True
            for conn in self._sockets:
                conn.close()
            self._sockets.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with self._lock:
            for conn in self._sockets:
                conn.close()
        self._server.close()
