import asyncio
import io

import orjson
import structlog

from armor_rx import Armor, Secret, State
from armor_rx.aio import AsyncArmor
from armor_rx.logs import processors


def _logger(json):
    stream = io.StringIO()
    log = structlog.wrap_logger(structlog.PrintLogger(stream), processors=processors(json=json), wrapper_class=structlog.make_filtering_bound_logger(0))
    return log, stream


def test_json_logging_redacts_secrets():
    log, stream = _logger(json=True)
    log.info("connecting", api_token="tok-123", password=Secret("pw"), nested={"secret": "s", "user": "bob"}, value=Secret("v"))
    line = orjson.loads(stream.getvalue())
    text = stream.getvalue()
    assert "tok-123" not in text and "pw" not in text.replace("password", "") and '"s"' not in text
    assert line["nested"]["user"] == "bob" and line["event"] == "connecting"


def test_console_logging_is_human_and_redacted():
    log, stream = _logger(json=False)
    log.warning("hello", token="abc")
    out = stream.getvalue()
    assert "hello" in out and "abc" not in out and "[redacted]" in out


def test_secret_never_reaches_the_event_log(state_dir):
    with Armor(state_dir=state_dir) as armor:
        armor.create_task("t1", metadata={"github_token": "ghp_live", "key": Secret("k-123")})
        armor.emit("t1", "note.added", {"auth": Secret("xyz")})
    raw = b"".join(p.read_bytes() for p in (state_dir / "events").glob("*.jsonl"))
    raw += (state_dir / "snapshot.json").read_bytes()
    assert b"ghp_live" not in raw and b"k-123" not in raw and b"xyz" not in raw


def test_async_api(state_dir):
    async def main():
        async with AsyncArmor(state_dir=state_dir) as armor:
            await armor.create_task("t1")
            seen = []

            async def watch():
                async for event in armor.events("task.*", from_seq=1):
                    seen.append(event.kind)
                    if event.kind == "task.completed":
                        return

            watcher = asyncio.create_task(watch())
            await armor.start("t1")
            await armor.complete("t1")
            await asyncio.wait_for(watcher, 10)
            record = await armor.task("t1")
            return seen, record.state

    seen, state = asyncio.run(main())
    assert state is State.COMPLETED
    assert seen == ["task.created", "task.start.requested", "task.started", "task.complete.requested", "task.completed"]


def test_many_tasks_under_asyncio_concurrently(state_dir):
    async def main():
        async with AsyncArmor(state_dir=state_dir) as armor:
            ids = [f"t{i}" for i in range(20)]
            await asyncio.gather(*(armor.create_task(t) for t in ids))
            await asyncio.gather(*(armor.start(t) for t in ids))
            return [(await armor.task(t)).state for t in ids]

    assert set(asyncio.run(main())) == {State.RUNNING}
