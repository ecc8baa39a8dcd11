"""A TCP relay between a client and a server, for the ways a network fails a long-lived connection."""
from __future__ import annotations

import socket
import struct
import threading


class TcpRelay:
    """Relays 127.0.0.1:``port`` to 127.0.0.1:``target_port``.

    ``frozen``: silent in both directions while every socket stays open, what a watch sees when its
    host is cut off (no FIN, no RST, just nothing). ``dropped``: every open connection is reset and new
    ones are closed as soon as they are accepted, what a client sees when its server goes away."""

    def __init__(self, target_port: int, *, listener: socket.socket | None = None) -> None:
        """``listener``: a listening socket made elsewhere (e.g. inside another network namespace,
        ``netns_hosts.listen_in``) instead of a new one on 127.0.0.1; the relay owns and closes it."""
        self.target_port = target_port
        self.frozen = threading.Event()
        self.dropped = threading.Event()
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._listener = listener or socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def drop(self) -> None:
        """Reset every relayed connection, and refuse new ones until ``restore``."""
        self.dropped.set()
        with self._lock:
            relayed, self._sockets = self._sockets[1:], self._sockets[:1]
        for sock in relayed:
            _reset(sock)

    def restore(self) -> None:
        self.dropped.clear()
        self.frozen.clear()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                inbound, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.dropped.is_set():
                _reset(inbound)
                continue
            try:
                outbound = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # nothing listens there (a daemon restarting): refused, as it would be directly
                _reset(inbound)
                continue
            with self._lock:
                self._sockets += [inbound, outbound]
            for source, sink in ((inbound, outbound), (outbound, inbound)):
                thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            source.settimeout(0.2)
        except OSError:  # reset by ``drop`` before this pump started
            return
        while not self.closing.is_set():
            if self.frozen.is_set():
                self.closing.wait(0.2)  # hold the bytes: neither forwarded nor refused
                continue
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                _reset(sink)
                return
            if self.frozen.is_set():
                continue  # read while the link went down: lost on the way, as on a cut wire
            try:
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.closing.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a peer that went away does, not an orderly FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
