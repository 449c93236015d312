"""`payrescue demo` and other `payrescue` commands as real processes, as a newcomer runs them.

Each runs the installed `payrescue` script in a directory of its own (so `data/demo` is
relative to it, as in a fresh clone) with an environment that holds no PAYRESCUE_ setting
unless the test gives one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAYRESCUE = str(Path(sys.executable).with_name("payrescue"))
START_TIMEOUT = 90.0  # a busy two-core machine, migrations and imports included
LINK = re.compile(r"^\s{4}(\S+ \S+)\s+(http://\S+/chat\?\S+)$")


def environment(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYRESCUE_")}
    env.update(settings)
    return env


def payrescue(cwd: Path, *args: str, stdin: str | None = None,
              **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command
        [PAYRESCUE, *args], cwd=cwd, env=environment(**settings), input=stdin,
        capture_output=True, text=True, timeout=120, check=False)


def free_port_pair() -> int:
    """A port whose next port is free as well (the demo's default emulator port)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 65535 and _free(port) and _free(port + 1):
            return port
    raise RuntimeError("no two free neighbouring ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Demo:
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)  # filled by a thread as lines come
    _reader: threading.Thread | None = None
    _started: threading.Event = field(default_factory=threading.Event)

    def _read(self) -> None:
        """Drain the demo's output (a full pipe would stall it) and note the welcome."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if "Commands on this data:" in line:
                self._started.set()
        self._started.set()  # ended: whoever waits sees the output

    @property
    def text(self) -> str:
        return "".join(self.output)

    def line(self, label: str) -> str:
        return next(line for line in self.output if label in line)

    @property
    def console(self) -> str:
        return self.line("Agent console:").split()[-1]

    @property
    def password(self) -> str:
        return self.line("    password").split()[-1]

    @property
    def agent(self) -> tuple[str, str]:
        """The second login (an agent, a colleague of the admin): e-mail and password."""
        return (self.line("    or as agent").split()[3],
                self.line("    agent password").split()[-1])

    @property
    def chat_page(self) -> str:
        return self.line("Member chat page:").split()[3]

    @property
    def emulator(self) -> str:
        return self.chat_page.removesuffix("/chat")

    @property
    def links(self) -> dict[str, str]:
        return {m.group(1): m.group(2) for m in map(LINK.match, self.output) if m}

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """The emulator's control API (what a member does in Telegram)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - our own local emulator
            self.emulator + "/_emulator" + path, data=data, method="POST" if data else "GET",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=40) as response:  # noqa: S310
            return json.load(response)

    def wait_for_bot(self, user_id: int, count: int, timeout: float = 30) -> list[dict]:  # noqa: ASYNC109
        """The bot's messages in the chat once there are `count` of them (long polls)."""
        deadline = time.monotonic() + timeout
        version = -1
        while time.monotonic() < deadline:
            chat = self.control(f"/chats/{user_id}/messages?who=bot&wait=10"
                                f"&after_version={version}")
            version = chat["version"]
            if len(chat["messages"]) >= count:
                return chat["messages"]
        raise AssertionError(f"the bot sent fewer than {count} messages to {user_id}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def start_demo(cwd: Path, *args: str, **settings: str) -> Demo:
    """`payrescue demo` until it has printed its welcome (or ended: then its output)."""
    process = subprocess.Popen(  # noqa: S603 - our own command
        [PAYRESCUE, "demo", *args], cwd=cwd, env=environment(**settings), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    demo = Demo(process)
    demo._reader = threading.Thread(target=demo._read, daemon=True)
    demo._reader.start()
    if not demo._started.wait(START_TIMEOUT):
        demo.stop()
        raise AssertionError(f"the demo did not start within {START_TIMEOUT}s:\n{demo.text}")
    if "Commands on this data:" not in demo.text:  # it ended instead of starting
        demo.stop()
    return demo
