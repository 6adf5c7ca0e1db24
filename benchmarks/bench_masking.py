"""What keeping secrets out of recorded output costs, against what recording it costs anyway.

Every ``exec.output`` chunk is (1) masked for the task's secrets by a
:class:`~armor_rx.model.secrets.Masker` per stream, (2) made into an event,
whose payload freeze runs :func:`~armor_rx.model.secrets.redact_text` (URL
passwords, bearer tokens), and (3) serialised for the log. The baseline is
recording without secrets, (2) + (3), on the same chunks in the same run;
``serialise`` ((3) alone) is shown for scale.

Output is log-like text in 4 KiB chunks (what the exec streamer reads); one
variant has a credential-looking URL in every line, the worst case for
``redact_text``'s fast path. Best of several rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from armor_rx.model.events import TaskEvent
from armor_rx.model.secrets import Masker, Secret, redact_text

CHUNK = 4096
ROUNDS = 5


def _chunks(total: int, *, with_urls: bool) -> list[str]:
    line = ("2026-11-30T12:00:00Z INFO building module {i}: compiled 42 files, 0 warnings "
            + ("(fetched https://mirror.example.org/pkg/{i}.tar.gz) " if not with_urls else
               "(fetched https://ci:abc{i}@mirror.example.org/pkg.tar.gz) ")
            + "ok\n")
    text = "".join(line.format(i=i) for i in range(total // len(line) + 1))[:total]
    return [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)]


def _best(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(total: int = 16 * 1024 * 1024) -> dict[str, float]:
    result: dict[str, float] = {}
    for variant, with_urls in (("plain", False), ("urls", True)):
        chunks = _chunks(total, with_urls=with_urls)

        def serialise_only() -> None:
            for chunk in chunks:
                orjson.dumps({"kind": "exec.output", "task_id": "t", "payload": {"stream": "stdout", "data": chunk}})

        def redact_only() -> None:
            for chunk in chunks:
                redact_text(chunk)

        def event_and_serialise() -> None:  # what recording a chunk costs today without secrets (redact_text included)
            for chunk in chunks:
                TaskEvent.new("exec.output", "t", {"stream": "stdout", "data": chunk}).to_json()

        def masked(count: int) -> Callable[[], None]:
            secrets = {f"S{i}": Secret(f"s3cr3t-value-{i:04d}-x") for i in range(count)}

            def go() -> None:
                masker = Masker(secrets)
                for chunk in chunks:
                    data = masker.feed(chunk)
                    TaskEvent.new("exec.output", "t", {"stream": "stdout", "data": data}).to_json()
                masker.flush()
            return go

        base = _best(serialise_only)
        event = _best(event_and_serialise)
        mb = total / (1024 * 1024)
        result[f"{variant}_serialise_mb_s"] = mb / base
        result[f"{variant}_record_mb_s"] = mb / event
        result[f"{variant}_redact_text_share_of_record"] = _best(redact_only) / event
        for count in (1, 10):
            result[f"{variant}_masked_{count}_secrets_vs_record"] = _best(masked(count)) / event
    return result


# Masking ten secrets adds little to what recording a chunk costs anyway (event + redact_text + JSON);
# redact_text is a small share of it unless every line carries a credential URL.
TARGETS = [
    ("plain_masked_10_secrets_vs_record", "<=", 1.5),
    ("urls_masked_10_secrets_vs_record", "<=", 1.5),
    ("plain_redact_text_share_of_record", "<=", 0.25),
]


if __name__ == "__main__":
    res = run()
    for key, value in res.items():
        print(f"{key:<44} {value:>10.2f}")
    for key, op, target in TARGETS:
        print(f"target {key} {op} {target}: {'PASS' if res[key] <= target else 'MISS'} ({res[key]:.2f})")
