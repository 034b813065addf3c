"""kill -9 the consumer at random points while pairs stream in: in the end every accepted
pair is in exactly one phase, exactly once, and phases are sealed at exactly phase_size."""

from __future__ import annotations

import os
import random
import time
from collections import Counter

from service import buffer
from service.ingest import make_producer, produce_batch
from service.limits import Limits
from service.registry import Registry
from service.validation import validate_pair
from tests.helpers import ConsumerProcess, make_png, pair_json, wait_for
from tests.helpers import buffered as on_disk

N_PAIRS, PHASE_SIZE, KILLS = 300, 40, 4


def make_pair(i: int):
    return validate_pair(
        pair_json(f"pair-{i:04d}", text=f"caption {i}", image=make_png(color=(i % 256, i // 256, 9))), Limits()
    )


def produce(producer, topic: str, chunks: list, rng: random.Random) -> None:
    """Produce chunks of 10 as the API would, re-sending some earlier chunks (client retries)."""
    for chunk in chunks:
        produce_batch(producer, topic, chunk)
        if rng.random() < 0.3:
            produce_batch(producer, topic, rng.choice(chunks))


def test_kill_9_loses_nothing_and_duplicates_nothing(settings, tmp_path):
    s = settings.model_copy(
        update={"phase_size": PHASE_SIZE, "consumer_max_records": 4, "consumer_max_poll_interval_ms": 3000}
    )  # a quicker rejoin after a kill
    seed = int(os.environ.get("MODX_TEST_SEED", "1234"))
    rng = random.Random(seed)
    pairs = [make_pair(i) for i in range(N_PAIRS)]
    chunks = [pairs[i : i + 10] for i in range(0, N_PAIRS, 10)]
    rounds = [chunks[k :: KILLS + 1] for k in range(KILLS + 1)]  # a share of the stream per consumer life
    producer = make_producer(s)
    log = tmp_path / "consumer.log"
    proc, produced, interrupted = None, 0, 0
    try:
        for k, share in enumerate(rounds):
            before = len(on_disk(s.data_dir))
            produce(producer, s.topic, share, rng)
            produced += sum(map(len, share))
            started_at = log.stat().st_size if log.exists() else 0
            proc = ConsumerProcess(s, log).start()
            if k == KILLS:
                break
            # kill -9 once this consumer has written something, somewhere inside its next batches
            wait_for(
                lambda: len(on_disk(s.data_dir)) > before,
                timeout_s=30,
                interval_s=0.02,
                message=f"consumer {k} progress",
            )
            time.sleep(rng.uniform(0.0, 0.02))  # small batches, a short wait: the kill lands mid-stream
            proc.kill()
            interrupted += len(set(on_disk(s.data_dir))) < produced  # it died with work left
        wait_for(lambda: len(on_disk(s.data_dir)) >= N_PAIRS, timeout_s=60, message="every pair buffered")
        ids = [p.id for p in pairs]
        wait_for(lambda: all(Registry.from_url(s.redis_url).known(ids)), timeout_s=10, message="ids in Redis")
        wait_for(lambda: "consuming" in log.read_text()[started_at:], message="the last consumer running")
        assert proc.stop() == 0, proc.log_tail()  # SIGTERM: a clean exit
        assert interrupted >= KILLS // 2, f"only {interrupted} of {KILLS} kills landed mid-stream"
    finally:
        producer.close()
        if proc is not None and proc.alive():
            proc.kill()

    ids = on_disk(s.data_dir)
    counts = Counter(ids)
    assert sorted(counts) == sorted(p.id for p in pairs), "a pair was lost"
    assert max(counts.values()) == 1, f"written twice: {[i for i, c in counts.items() if c > 1]}"

    phases = buffer.list_phases(s.data_dir)
    n_sealed = N_PAIRS // PHASE_SIZE
    assert [p.status for p in phases] == ["sealed"] * n_sealed + ["open"]
    assert [p.n for p in phases] == [PHASE_SIZE] * n_sealed + [N_PAIRS % PHASE_SIZE]
    for info in phases[:-1]:
        records = buffer.read_records(s.data_dir, info.phase)
        assert info.n_probe == sum(r.split == "probe" for r in records)
    images = {p.id: p.image for p in pairs}
    assert all(p.image == images[p.id] for p in buffer.iter_gallery(s.data_dir))

    registry = Registry.from_url(s.redis_url)
    assert registry.r.smembers(registry.key("ids")) == set(images)
    assert {n: r["status"] for n, r in registry.phases().items()} == {
        **{n: "sealed" for n in range(1, n_sealed + 1)},
        n_sealed + 1: "open",
    }
