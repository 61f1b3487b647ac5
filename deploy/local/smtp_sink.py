"""A local SMTP server that keeps every accepted message as a file.

    python deploy/local/smtp_sink.py --host 127.0.0.1 --port 1025 --dir var/mail

Each message becomes ``<dir>/<UTC timestamp>-<uuid>.eml``, with the envelope recipients in an
``X-Envelope-To`` header (and the envelope sender in ``X-Envelope-From``) put in front. It is
written under a hidden temporary name and renamed, so a reader never sees half a file.

A message counts as received when the sink answers 250 to its DATA: with ``--accept-delay`` the
answer waits, and a client that disconnects meanwhile (a worker killed mid-send) has sent nothing.
SIGUSR1 makes it refuse every message with ``451`` (a server that is up but will not take mail,
the reply a sender must retry on) until SIGUSR2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class MaildirHandler:
    def __init__(self, directory: Path, accept_delay: float = 0.0) -> None:
        self.directory = Path(directory)
        self.accept_delay = accept_delay
        self.in_progress = 0  # DATA commands received and not yet answered
        self.refusing = False  # answer 451 to every message (SIGUSR1 / SIGUSR2 in main)
        # Called once a message is kept and before its 250 goes out (tests: a client dying in between).
        self.on_kept: Callable[[], None] | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refusing:
            return "451 4.3.0 Mail not accepted now, try again later"
        content = envelope.original_content or b""
        header = (
            f"X-Envelope-From: {envelope.mail_from or ''}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        final = self.directory / f"{stamp}-{uuid.uuid4()}.eml"
        temporary = self.directory / f".{final.name}.tmp"
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(header + content)
        self.in_progress += 1
        try:
            if self.accept_delay:
                # Cancelled when the client goes away before hearing the answer: then not kept.
                await asyncio.sleep(self.accept_delay)
            os.replace(temporary, final)
            if self.on_kept:
                self.on_kept()
        finally:
            self.in_progress -= 1
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        return "250 Message accepted for delivery"


class SmtpSink:
    """The sink on a background thread (aiosmtpd's Controller): ``start()``, ``stop()``."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 1025, accept_delay: float = 0.0) -> None:
        self.handler = MaildirHandler(Path(directory), accept_delay)
        self.host, self.port = host, port
        self._controller: Controller | None = None

    @property
    def directory(self) -> Path:
        return self.handler.directory

    def start(self) -> SmtpSink:
        self.handler.directory.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(
            self.handler, hostname=self.host, port=self.port, server_hostname="smtp-sink.bildungsraum.local",
            enable_SMTPUTF8=True, data_size_limit=25 * 1024 * 1024,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local SMTP sink: keeps every message as an .eml file.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", default="var/mail", help="where the .eml files go")
    parser.add_argument("--accept-delay", type=float, default=0.0,
                        help="seconds to wait before answering DATA (to test senders dying mid-send)")
    args = parser.parse_args(argv)

    sink = SmtpSink(Path(args.dir), args.host, args.port, args.accept_delay).start()
    print(f"SMTP sink listening on {args.host}:{args.port}, mails in {Path(args.dir).resolve()}", flush=True)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    signal.signal(signal.SIGUSR1, lambda *_: setattr(sink.handler, "refusing", True))
    signal.signal(signal.SIGUSR2, lambda *_: setattr(sink.handler, "refusing", False))
    try:
        while not stopped.wait(0.5):
            pass
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
