"""The network side of a checkpoint download: an urllib opener that speaks http and https
only (redirects included), whose sockets an overall deadline can shut down.

Used by `bench.checkpoints.download`. urllib's default opener also handles ftp://, file://
and data: URLs, follows redirects to ftp:// (logging in anonymously) and bounds only each
socket operation, so a server trickling a byte at a time holds a download forever; this
one does none of that.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import threading
import time
import urllib.parse
import urllib.request

FOLLOWED = ("http", "https")             # what is fetched over the network, redirects included
USER_AGENT = "bench-checkpoint-download (python urllib)"


def request_for(url: str) -> urllib.request.Request:
    """The request for `url`, its user:password@ (if any) moved into an Authorization header
    that is not repeated on redirects (urllib would otherwise resolve 'user:pw@host')."""
    p = urllib.parse.urlsplit(url)
    userinfo, _, host = p.netloc.rpartition("@")
    req = urllib.request.Request(urllib.parse.urlunsplit((p.scheme, host, p.path, p.query, "")),
                                 headers={"User-Agent": USER_AGENT})
    if userinfo:
        user, _, password = userinfo.partition(":")
        token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
        req.add_unredirected_header("Authorization", "Basic " + base64.b64encode(token).decode())
    return req


class RedirectRefused(Exception):
    def __init__(self, target: str):
        super().__init__("redirect refused")
        self.target = target


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http and https only: urllib's own handler follows ftp:// (and logs
    in anonymously); file:// and the rest are refused here before urllib looks at them."""

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("location") or headers.get("uri")
        if location is not None:
            target = urllib.parse.urljoin(req.full_url, location.strip())
            if urllib.parse.urlsplit(target).scheme.lower() not in FOLLOWED:
                fp.close()
                raise RedirectRefused(target)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in FOLLOWED:
            fp.close()
            raise RedirectRefused(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class Watchdog:
    """The overall deadline: when it passes, every socket this download opened is shut down
    (a blocked connect, TLS handshake, header or body read then returns at once)."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def expired(self) -> bool:
        return self._fired or time.monotonic() >= self.end

    def add(self, sock: socket.socket) -> None:
        # a duplicate of the descriptor: TLS wrapping detaches the original socket object,
        # and shutdown acts on the connection whichever descriptor names it
        dup = socket.socket(fileno=os.dup(sock.fileno()))
        with self._lock:
            self._socks.append(dup)
            if self._fired:
                self._shutdown(dup)

    def _fire(self) -> None:
        with self._lock:
            self._fired = True
            for s in self._socks:
                self._shutdown(s)

    @staticmethod
    def _shutdown(s: socket.socket) -> None:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            for s in self._socks:
                s.close()
            self._socks.clear()


def _watched(base: type, watch: Watchdog) -> type:
    class Watched(base):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            create = self._create_connection

            def create_watched(*args, **kwargs):
                sock = create(*args, **kwargs)
                watch.add(sock)
                return sock
            self._create_connection = create_watched
    return Watched


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, watch: Watchdog):
        super().__init__()
        self.watch = watch

    def http_open(self, req):
        return self.do_open(_watched(http.client.HTTPConnection, self.watch), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, watch: Watchdog):
        super().__init__()
        self.watch = watch

    def https_open(self, req):
        return self.do_open(_watched(http.client.HTTPSConnection, self.watch), req, context=self._context)


def http_opener(watch: Watchdog) -> urllib.request.OpenerDirector:
    """An opener for http and https only (no ftp, file or data handler), whose sockets the
    watchdog can shut down, and whose redirects stay on http(s)."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), _HTTP(watch),
                    _HTTPS(watch), urllib.request.HTTPDefaultErrorHandler(), _HttpOnlyRedirects(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener
