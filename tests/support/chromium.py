"""Real headless Chromium (Debian's `chromium`) driven over the DevTools protocol.

    with headless_chromium(tmp_path) as browser:
        page = browser.open(report.as_uri())
        page.wait_for("document.getElementById('report').dataset.render")

The browser runs as our child in its own process group, with a fresh profile
(removed afterwards) and `--remote-debugging-port=0`: the port it chose is read from the profile's
DevToolsActivePort file. It is ended by its PID (then its group, which only its
own renderers can be in). Every page records its uncaught exceptions, console
errors, log errors (CSP refusals among them) and the URLs it requested.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket  # websocket-client

WIDTH, HEIGHT = 1400, 1000


class CDPError(RuntimeError):
    pass


class CDP:
    """One browser-level DevTools connection; page sessions are multiplexed on it."""

    def __init__(self, url: str) -> None:
        # No Origin header: Chromium refuses DevTools websockets from unlisted origins.
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout} s")
            self.ws.settimeout(left)
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.events.append(reply)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()


@dataclass
class Page:
    cdp: CDP
    session: str
    target: str
    url: str = ""
    _seen: int = field(default=0, repr=False)

    def _events(self) -> list[dict[str, Any]]:
        return [e for e in self.cdp.events if e.get("sessionId") == self.session]

    def evaluate(self, expression: str, *, timeout: float = 30.0) -> Any:
        r = self.cdp.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True},
                          session=self.session, timeout=timeout)
        if "exceptionDetails" in r:
            raise CDPError(f"{expression[:80]!r} threw: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 30.0, what: str = "") -> Any:
        """Poll the expression until it is truthy (a deadline, never a fixed sleep)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or expression!r} not true within {timeout} s; "
                                   f"errors: {self.errors()}")
            time.sleep(0.05)

    def navigate(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url
        self.cdp.call("Page.navigate", {"url": url}, session=self.session)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'",
                      timeout=timeout, what=f"{url} loaded")

    def mouse(self, kind: str, x: float, y: float, **params: Any) -> None:
        """A real input event at viewport (x, y): mouseWheel (deltaX, deltaY),
        mousePressed, mouseMoved, mouseReleased (button, clickCount)."""
        self.cdp.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, **params},
                      session=self.session)

    def errors(self) -> list[str]:
        out = []
        for e in self._events():
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                text = d.get("exception", {}).get("description") or d.get("text")
                out.append(f"exception: {text}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                  for a in p.get("args", [])))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')}")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self._events()
                if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> Path:
        r = self.cdp.call("Page.captureScreenshot",
                          {"format": "png", "captureBeyondViewport": True},
                          session=self.session, timeout=60)
        path.write_bytes(base64.b64decode(r["data"]))
        return path


@dataclass
class Browser:
    cdp: CDP
    pid: int

    def open(self, url: str, *, timeout: float = 60.0) -> Page:
        target = self.cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.cdp.call("Target.attachToTarget",
                                {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self.cdp, session, target)
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.cdp.call(f"{domain}.enable", session=session)
        self.cdp.call("Emulation.setDeviceMetricsOverride",
                      {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
                      session=session)
        page.navigate(url, timeout=timeout)
        return page

    def grant_clipboard(self) -> None:
        """Let pages write and read the clipboard (a copy button can then be checked)."""
        self.cdp.call("Browser.grantPermissions",
                      {"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})

    def close_page(self, page: Page) -> None:
        with contextlib.suppress(Exception):
            self.cdp.call("Target.closeTarget", {"targetId": page.target})


def _executable() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        raise RuntimeError("Debian's chromium is needed (scripts/setup.sh installs it: "
                           "apt-get install chromium)")
    return exe


def _read_port_file(path: Path) -> tuple[int, str] | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    if len(lines) < 2 or not lines[0].isdigit():
        return None  # written but not complete yet
    return int(lines[0]), lines[1]


@contextmanager
def headless_chromium(workdir: Path, *, timeout: float = 60.0) -> Iterator[Browser]:
    # A fresh profile each time: a DevToolsActivePort left by an earlier browser would
    # send us to a dead port.
    workdir.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=workdir))
    argv = [_executable(), "--headless", "--no-sandbox", "--disable-gpu",  # root: no sandbox
            f"--user-data-dir={profile}", "--remote-debugging-port=0",
            "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--mute-audio", "--hide-scrollbars",
            f"--window-size={WIDTH},{HEIGHT}", "about:blank"]
    log_path = workdir / "chromium.log"
    # Its shared-memory files (--disable-dev-shm-usage) and singleton socket go in TMPDIR:
    # a short directory of its own (a socket path has ~100 bytes), removed with the
    # profile, so no org.chromium.Chromium.* is left in /tmp.
    scratch = tempfile.mkdtemp(prefix="sdcr-")
    env = {**os.environ, "TMPDIR": scratch}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, env=env,
                                stderr=subprocess.STDOUT, start_new_session=True)
    cdp: CDP | None = None
    try:
        deadline = time.monotonic() + timeout
        while (found := _read_port_file(profile / "DevToolsActivePort")) is None:
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited ({proc.returncode}) during start:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium wrote no DevToolsActivePort within {timeout} s")
            time.sleep(0.05)
        port, path = found
        cdp = CDP(f"ws://127.0.0.1:{port}{path}")
        yield Browser(cdp, proc.pid)
    finally:
        if cdp is not None:
            cdp.close()
        _stop(proc)
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the browser by PID, SIGKILL if it lingers, then whatever is left of its
    process group (its own zygote and renderers: the group was created for it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
