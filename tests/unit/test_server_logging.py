"""The server's log handler: lines written off the calling thread, none lost, same content, warnings at once."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pytest

from stockcache.web.server import LOG_FORMAT, BackgroundHandler

NEVER = 3600.0  # a writer interval no test waits for: only flush()/close() write


class RecordingStream(io.StringIO):
    """A stream that remembers which threads wrote to it and signals each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: list[str] = []
        self.written = threading.Event()

    def write(self, text: str) -> int:
        self.writers.append(threading.current_thread().name)
        self.written.set()
        return super().write(text)


@pytest.fixture
def stream() -> RecordingStream:
    return RecordingStream()


def _logger(handler: logging.Handler, name: str = "test.background") -> logging.Logger:
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


@pytest.fixture
def make(stream: RecordingStream) -> Iterator[object]:
    made: list[BackgroundHandler] = []

    def factory(interval: float = NEVER) -> tuple[BackgroundHandler, logging.Logger]:
        target = logging.StreamHandler(stream)
        target.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler = BackgroundHandler(target, interval=interval)
        made.append(handler)
        return handler, _logger(handler)

    yield factory
    for handler in made:
        handler.close()


def test_background_log_writes_every_line_once_in_order_on_close(make, stream: RecordingStream) -> None:
    handler, logger = make()

    def worker(n: int) -> None:
        for i in range(200):
            logger.info("GET %s %d", f"/t{n}", i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stream.getvalue() == ""  # nothing written by the logging threads themselves
    handler.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 800
    for n in range(4):
        assert [line for line in lines if f" /t{n} " in line] == [
            f"INFO test.background: GET /t{n} {i}" for i in range(200)]


def test_background_log_lines_match_a_plain_stream_handler(stream: RecordingStream) -> None:
    plain = io.StringIO()
    direct = logging.StreamHandler(plain)
    direct.setFormatter(logging.Formatter(LOG_FORMAT))
    target = logging.StreamHandler(stream)
    target.setFormatter(logging.Formatter(LOG_FORMAT))
    background = BackgroundHandler(target, interval=NEVER)
    logger = _logger(background, "stockcache.access.test")
    logger.addHandler(direct)
    logger.info("%s %s %s %.1fms %s", "GET", "/api/quote/<symbol>", "200", 0.25, "memory")
    background.close()
    assert stream.getvalue() == plain.getvalue()
    assert "GET /api/quote/<symbol> 200 0.2ms memory" in plain.getvalue()


def test_background_log_info_is_written_by_the_writer_thread(make, stream: RecordingStream) -> None:
    _, logger = make(interval=0.01)
    logger.info("one line")
    assert stream.written.wait(10)
    assert stream.writers == ["stockcache-log-writer"]
    assert stream.getvalue() == "INFO test.background: one line\n"


def test_background_log_warning_is_written_at_once_after_pending_lines(make, stream: RecordingStream) -> None:
    _, logger = make()
    logger.info("before")
    logger.warning("trouble")
    assert stream.getvalue() == "INFO test.background: before\nWARNING test.background: trouble\n"


def test_background_log_arguments_are_read_when_logged(make, stream: RecordingStream) -> None:
    handler, logger = make()
    symbols = ["AAPL"]
    logger.info("symbols %s", symbols)
    symbols.append("MSFT")
    handler.flush()
    assert stream.getvalue() == "INFO test.background: symbols ['AAPL']\n"


def test_background_log_exception_text_is_kept(make, stream: RecordingStream) -> None:
    handler, logger = make()
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    text = stream.getvalue()
    assert text.startswith("ERROR test.background: failed\nTraceback") and "ValueError: boom" in text


def test_background_log_after_close_is_written_directly(make, stream: RecordingStream) -> None:
    handler, logger = make()
    handler.close()
    logger.info("late")
    assert stream.getvalue() == "INFO test.background: late\n"


def test_background_log_access_line_reads_as_the_logging_module_would_write_it(stream: RecordingStream) -> None:
    # The fast access path formats lines itself; they must be the very lines logging would write.
    target = logging.StreamHandler(stream)
    target.setFormatter(logging.Formatter(LOG_FORMAT))
    handler = BackgroundHandler(target, interval=NEVER)
    access = logging.getLogger("stockcache.access")
    saved = access.level
    access.setLevel(logging.INFO)
    try:
        handler.access("GET", "/api/quote/<symbol>", "200", 1.25, "memory")
        handler.flush()
        fast = stream.getvalue()
        stream.seek(0)
        stream.truncate()
        record = logging.LogRecord("stockcache.access", logging.INFO, "x", 0, "%s %s %s %.1fms %s",
                                   ("GET", "/api/quote/<symbol>", "200", 1.25, "memory"), None)
        record.created = float(int(record.created))
        record.msecs = 0.0
        slow = logging.Formatter(LOG_FORMAT).format(record)
        # Same line, apart from the time it was logged at.
        assert fast.split(" ", 2)[2] == slow.split(" ", 2)[2] + "\n"
        assert fast.split(" ", 2)[2] == "INFO stockcache.access: GET /api/quote/<symbol> 200 1.2ms memory\n"
        access.setLevel(logging.WARNING)
        handler.access("GET", "/healthz", "200", 0.5, "-")
        handler.flush()
        assert "healthz" not in stream.getvalue()  # the logger's level still decides
    finally:
        access.setLevel(saved)
        handler.close()
