"""Open an HTML file in headless Chromium and report what a reader would meet: console errors, uncaught exceptions,
images that do not decode, and which element ids the page holds.

Talks the DevTools protocol over `--remote-debugging-pipe` (file descriptors 3 and 4, NUL-separated JSON) with the
standard library only. Used by the tests to check the evaluation report; a missing Chromium is a UserError naming
the command that installs it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from newtonrewards.errors import UserError

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
    "--window-size=1280,900",
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
PROBE = """JSON.stringify({
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  broken_images: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))
    .map(i => i.alt || i.src.slice(0, 40)),
  svgs: document.querySelectorAll('svg').length,
  images: document.images.length,
  text: document.body ? document.body.innerText.length : 0,
  sections: Object.fromEntries(Array.from(document.querySelectorAll('section[id]')).map(s => [s.id, {
    svgs: s.querySelectorAll('svg').length, images: s.querySelectorAll('img').length, text: s.innerText.length}]))
})"""


@dataclass
class PageCheck:
    """What loading a page showed: error messages (console errors, exceptions, failed loads), ids, image counts."""

    errors: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    svgs: int = 0
    images: int = 0
    text: int = 0
    sections: dict[str, dict[str, int]] = field(default_factory=dict)  # <section id>: {svgs, images, text}
    screenshot: bytes = b""


def find_chromium() -> str:
    """Path of a Chromium binary, or a UserError saying how to install one."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise UserError("chromium: not found on PATH; install it (Debian: apt-get update && apt-get install -y chromium)")


class _Pipe:
    """A DevTools session over Chromium's debugging pipe: send commands, collect events, wait for replies."""

    def __init__(self, proc: subprocess.Popen, to_chrome: int, from_chrome: int):
        self.proc, self.to_chrome, self.from_chrome = proc, to_chrome, from_chrome
        self.buffer, self.next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        return self.next_id

    def read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_chrome], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the debugging pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0) -> dict:
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self.read(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self.read(deadline)
            self.events.append(message)
            if message.get("method") == method:
                return message


def _errors(events: list[dict]) -> list[str]:
    """Console errors and warnings' error-level kin, uncaught exceptions and failed loads among DevTools events."""
    found = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            found.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            found.append(
                "console."
                + p["type"]
                + ": "
                + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            )
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            found.append(f"log: {p['entry'].get('text')}")
    return found


def _above(fd: int, low: int) -> int:
    """A duplicate of `fd` numbered at least `low` (the original is closed)."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, low)
    os.close(fd)
    return high


def check_page(path: str | Path, timeout: float = 60.0, screenshot: bool = False) -> PageCheck:
    """Load `path` in headless Chromium and return what it showed (see PageCheck)."""
    binary = find_chromium()
    if not Path(path).is_file():
        raise UserError(f"{path}: no such page to check")
    url = Path(path).resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="nr-chromium-")
    log = open(Path(profile).with_suffix(".log"), "w+b")  # chromium's own messages, quoted when it fails
    to_r, to_w = os.pipe()  # commands: we write, chromium reads fd 3
    from_r, from_w = os.pipe()  # replies: chromium writes fd 4, we read
    to_r, from_w = (
        _above(fd, 10) for fd in (to_r, from_w)
    )  # so that moving them onto 3 and 4 cannot clash (bash, unlike dash, redirects fds above 9)
    proc = subprocess.Popen(
        [
            "bash",
            "-c",
            f'exec "$@" 3<&{to_r} 4>&{from_w}',
            "bash",
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        pass_fds=(to_r, from_w),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    os.close(to_r)
    os.close(from_w)
    pipe = _Pipe(proc, to_w, from_r)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
        session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.events.clear()
        navigation = pipe.call("Page.navigate", {"url": url}, session=session)
        pipe.wait_event("Page.loadEventFired", timeout)
        time.sleep(0.2)  # late console messages of scripts run on load
        probe = pipe.call("Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session=session)
        found = json.loads(probe["result"]["value"])
        shot = b""
        if screenshot:
            import base64

            shot = base64.b64decode(
                pipe.call("Page.captureScreenshot", {"captureBeyondViewport": True}, session=session)["data"]
            )
        try:
            pipe.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError):
            pass
        failed = [f"navigation: {navigation['errorText']}"] if navigation.get("errorText") else []
        return PageCheck(errors=failed + _errors(pipe.events), screenshot=shot, **found)
    except (OSError, RuntimeError, TimeoutError) as exc:
        log.seek(0)
        tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"chromium failed on {url} ({exc}): {' | '.join(tail)}") from None
    finally:
        os.close(to_w)
        os.close(from_r)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
        log.close()
        os.unlink(log.name)
