"""A small HTTP client for tests that talk to real server processes."""

import http.cookiejar
import json
import time
import urllib.error
import urllib.parse
import urllib.request


class Client:
    """Keeps cookies, sends Django's CSRF token, decodes JSON."""

    def __init__(self, base):
        self.base = base.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar)
        )

    def _csrf(self):
        for cookie in self.jar:
            if cookie.name == "csrftoken":
                return cookie.value
        return ""

    def request(self, method, path, data=None, accept="application/json"):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, method=method)
        req.add_header("Accept", accept)
        req.add_header("Referer", self.base + "/")
        if method == "POST":
            req.add_header("X-CSRFToken", self._csrf())
        with self.opener.open(req, timeout=30) as response:
            text = response.read().decode()
            kind = response.headers.get("Content-Type", "")
            return json.loads(text) if "json" in kind else text

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, data, **kw):
        if not self._csrf():
            self.get("/admin/login/", accept="text/html")
        return self.request("POST", path, data, **kw)

    def login(self, username, password):
        self.get("/admin/login/", accept="text/html")
        self.post("/admin/login/?next=/admin/", {
            "username": username, "password": password,
            "csrfmiddlewaretoken": self._csrf(),
        }, accept="text/html")


def wait_until(predicate, timeout=30, interval=0.2, message="condition"):
    """Poll ``predicate`` until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}"
                         + (f" (last error: {last_error})" if last_error else ""))
