"""`modx demo`: stream the synthetic domains through the REST API of a running stack.

One domain per phase: post its pairs, seal the phase, wait for the snapshot and its index,
print the recall table (rows snapshots, columns phase probes), then run a few searches.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from service.client import ApiError, Client
from trainer.datasets.synthetic import SyntheticDataset

QUERIES = (
    "a large red circle at the top left",
    "a small blue star at the center",
    "a large yellow square at the bottom right",
)


def post_pairs(client: Client, pairs, batch: int = 64) -> dict[str, int]:
    counts: dict[str, int] = {}
    for i in range(0, len(pairs), batch):
        chunk = [
            {"id": p.id, "text": p.text, "image": p.image, "metadata": {"domain": p.domain}}
            for p in pairs[i : i + batch]
        ]
        for item in client.post(chunk).accepted:
            counts[item.status] = counts.get(item.status, 0) + 1
    return counts


def wait_for(what: str, check, timeout_s: float, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every_s)
    raise TimeoutError(f"gave up waiting for {what} after {timeout_s:.0f}s")


def recall_table(recall: dict) -> str:
    rows = [r.model_dump() for r in recall.snapshots]
    probes = sorted({p for r in rows for p in r["recall"]}, key=int)
    lines = [
        "snapshot  status     " + "".join(f"{'phase ' + p:>16}" for p in probes),
        "                     " + "".join(f"{'R@1 i2t/t2i':>16}" for _ in probes),
    ]
    for r in rows:
        cells = "".join(
            f"{r['recall'][p]['i2t']['r1']:>8.2f}/{r['recall'][p]['t2i']['r1']:<7.2f}"
            if p in r["recall"]
            else f"{'-':>16}"
            for p in probes
        )
        lines.append(f"v{r['snapshot']:<8} {r['status']:<10}{cells}")
    return "\n".join(lines)


def _ram(drift: dict | None) -> str:
    """RAM's mean angle per modality, 'image / text' degrees ('-' without that probe)."""
    if drift is None:
        return "      -       "
    return f"{drift['ram']['image']['mean']:6.1f} / {drift['ram']['text']['mean']:<6.1f}"


def run_demo(
    url: str, api_key: str | None = None, phases: int = 3, pairs_per_phase: int = 300, timeout_s: float = 900
) -> None:
    data = SyntheticDataset(n_domains=phases, pairs_per_domain=pairs_per_phase, seed=0)
    run = uuid.uuid4().hex[:6]  # fresh ids, so a second demo against the same stack brings new pairs
    with Client(url, api_key) as client:
        print(f"modx demo against {url}: {phases} phases of {pairs_per_phase} synthetic pairs (ids demo-{run}-*)")
        for domain in data.domains:
            pairs = [replace(p, id=f"demo-{run}-{p.id}") for p in data.generate(domain)]
            t0 = time.monotonic()
            counts = post_pairs(client, pairs)
            print(f"\n[{domain}] posted {len(pairs)} pairs {counts} in {time.monotonic() - t0:.1f}s")
            phase = wait_for("the consumer to buffer the pairs", lambda: _seal_when_buffered(client, len(pairs)), 120)
            info = wait_for(f"phase {phase} sealed", lambda: _sealed(client, phase), 120)
            print(f"[{domain}] sealed phase {phase}: {info['n_train']} train / {info['n_probe']} probe pairs")
            t0 = time.monotonic()
            snap = wait_for(f"snapshot {phase}", lambda: _snapshot(client, phase), timeout_s)
            print(
                f"[{domain}] snapshot v{phase} {snap['status']} after {time.monotonic() - t0:.0f}s "
                f"(method {snap.get('method')}, recipe {snap.get('recipe')})"
            )
            if snap["status"] == "accepted":
                wait_for(f"index {phase} served by the API", lambda: _served(client) == phase, timeout_s)
                print(f"[{domain}] index v{phase} serving after {time.monotonic() - t0:.0f}s")
            print(recall_table(client.recall()))
        drift = [t.model_dump() for t in client.drift().transitions]
        print("\ndrift (mean degrees): RAM image / text, on the first phase's probe | on every probe pooled")
        for d in drift:
            first = d["domains"].get(d["first"]) if d.get("first") is not None else None
            print(f"  v{d['from']} -> v{d['to']}   {_ram(first)}  |  {_ram(d['pooled'])}")
        print("\nsearches:")
        for q in QUERIES:
            r = client.search(text=q, k=3)
            print(f"  {q!r} (snapshot v{r.snapshot}, index v{r.index})")
            for hit in r.results:
                print(f"     {hit.score:.3f}  {hit.id}  {hit.text}")


def _seal_when_buffered(client: Client, n: int) -> int | None:
    """Seal the open phase once it holds the `n` pairs just posted; its number.

    A 202 means the consumer has not answered yet: it seals the phase when it next polls; a
    429 (a seal asked too soon after the last one) is retried after its Retry-After.
    """
    open_phase = next((p for p in client.phases().phases if p.status == "open"), None)
    if open_phase is None or (open_phase.n or 0) < n:
        return None
    try:
        client.seal()
    except ApiError as e:
        if e.status != 429:
            raise
        time.sleep(e.retry_after or 1)  # seals are rate-limited: ask again after Retry-After
        return None
    return open_phase.phase


def _served(client: Client) -> int | None:
    """The index the API has loaded (not just the pointer the indexer set)."""
    return (client.ready().serving or {}).get("index")


def _sealed(client: Client, phase: int) -> dict | None:
    found = (p for p in client.phases().phases if p.phase == phase and p.status != "open")
    return next((p.model_dump() for p in found), None)


def _snapshot(client: Client, snapshot: int) -> dict | None:
    for s in client.snapshots().snapshots:
        if s.snapshot == snapshot and s.status in ("accepted", "superseded", "rejected"):
            return s.model_dump()
    return None
