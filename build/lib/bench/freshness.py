"""Freshness: how soon a posted pair is searchable, and a sealed phase's snapshot is served.

    python -m bench.freshness --preset cpu --out results/freshness-cpu.json
    python -m bench.freshness --preset gpu --out results/freshness-gpu.json    # MODX_DEVICE=cuda, ViT-B-32
    python -m bench.freshness --preset smoke

Starts Tansu, a private redis-server and `modx consumer`, `trainer`, `indexer`, `api` as
processes (bench.ingest.service_stack) on a temporary MODX_DATA_DIR, then:

1. phase 1: posts --pairs synthetic pairs (trainer.datasets.synthetic, one domain per
   phase), waits until they are buffered, POST /v1/phases/seal, and times seal -> the new
   snapshot's index serving (/v1/snapshots) -> /v1/search answering with that snapshot.
   The time is split with the files the workers write: trainer picks the phase up (phase
   status seen `training`), training (until snapshot.json; the loop alone is the
   snapshot's `train.seconds`), evaluation (recall.json + drift.json), re-indexing (until
   serving.json; the rebuild alone from the indexer's log), the API swap (until a search
   answers with the new snapshot).
2. freshness: posts --fresh single pairs one at a time; for each, the seconds from the 202
   until POST /v1/search with the pair's image (k = --k) returns its id, and until its
   record is in the phase buffer (the record's written_at).
3. phases 2.. (--phases): as in 1, now with replay and older probes (the fresh pairs
   ride along in phase 2).

The poll intervals are the service's defaults unless given: MODX_INDEX_POLL_S (indexer
segments), MODX_WORKER_POLL_S (trainer), MODX_CONSUMER_POLL_MS, MODX_SERVING_POLL_S (the
API following the pointer and loading new segments).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np

from bench.common import apply_preset, finish, machine
from bench.ingest import Stack, all_records, buffered, percentile, service_stack, wait_for
from service import buffer
from service.settings import Settings
from trainer import layout
from trainer.datasets.synthetic import SyntheticDataset

PRESETS = {  # pairs per phase; fresh: single pairs timed after phase 1; epochs and batch of the trainer
    "smoke": dict(pairs=48, fresh=3, phases=1, epochs=1, batch_size=16, model="modx-tiny", device="cpu", timeout=300),
    "cpu": dict(pairs=1000, fresh=20, phases=2, epochs=3, batch_size=64, model="modx-tiny", device="cpu", timeout=900),
    "gpu": dict(
        pairs=10_000, fresh=20, phases=2, epochs=3, batch_size=256, model="ViT-B-32", device="cuda", timeout=900
    ),
}
TARGET_FRESH_S = 5.0
TARGET_SEAL_S = {"gpu": 60.0}
POST_BATCH = 256


def body(pairs) -> dict:
    return {
        "pairs": [
            {"id": p.id, "text": p.text, "image": base64.b64encode(p.image).decode(), "metadata": {"domain": p.domain}}
            for p in pairs
        ]
    }


def post(client: httpx.Client, pairs) -> None:
    for i in range(0, len(pairs), POST_BATCH):
        r = client.post("/v1/pairs", json=body(pairs[i : i + POST_BATCH]))
        assert r.status_code == 202, r.text
        assert all(a["status"] == "queued" for a in r.json()["accepted"]), r.text


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def rebuild_seconds(logs: Path, version: int) -> float | None:
    """The indexer's own timing of the full re-embed of `version` (its log line)."""
    text = (logs / "indexer.log").read_text(errors="replace") if (logs / "indexer.log").exists() else ""
    found = re.findall(rf"index v{version}: \d+ pairs in ([\d.]+)s", text)
    return float(found[-1]) if found else None


def seal_and_serve(client: httpx.Client, stack: Stack, data_dir: Path, expected_n: int, timeout_s: float) -> dict:
    """Seal the open phase (holding `expected_n` pairs) and time it until search answers with its snapshot."""
    phase = client.get("/v1/phases").json()["open"]
    t_seal = time.time()
    r = client.post("/v1/phases/seal")  # 202: the consumer did not answer within MODX_SEAL_WAIT_S, it will
    assert r.status_code in (200, 202), r.text
    seen: dict[str, float] = {"sealed_answer": time.time()}

    def served():
        now = time.time()
        if "training" not in seen:
            info = next((p for p in client.get("/v1/phases").json()["phases"] if p["phase"] == phase), {})
            if info.get("status") == "training":
                seen["training"] = now
                assert info["n"] == expected_n, info
        if "pointer" not in seen and client.get("/v1/snapshots").json()["serving"].get("index") == phase:
            seen["pointer"] = now
        if "pointer" in seen:
            answer = client.post("/v1/search", json={"text": "a red circle", "k": 1})
            if answer.status_code == 200 and answer.json()["snapshot"] == answer.json()["index"] == phase:
                return time.time()
        return None

    t_search = wait_for(f"snapshot {phase} served", served, stack, timeout_s, interval_s=0.1)
    index = layout.index_dir(data_dir, phase)
    record = json.loads(layout.record_file(data_dir, phase).read_text())
    t_published, t_evaluated = mtime(layout.record_file(data_dir, phase)), mtime(layout.drift_file(data_dir, phase))
    t_pointer = mtime(layout.serving_file(data_dir))
    t_training = seen.get("training", buffer.epoch(buffer.read_manifest(data_dir, phase)["sealed"]))  # if missed
    status = json.loads(layout.recall_file(data_dir, phase).read_text()).get("status")
    return {
        "phase": phase,
        "pairs": expected_n,
        "snapshot_status": status,
        "seal_to_search_s": round(t_search - t_seal, 2),
        "seal_answer_s": round(seen["sealed_answer"] - t_seal, 2),
        "wait_for_trainer_s": round(t_training - t_seal, 2),  # polled every 0.1 s
        "train_s": round(t_published - t_training, 2),
        "train_loop_s": record.get("train", {}).get("seconds"),
        "train_steps": record.get("train", {}).get("steps"),
        "evaluate_s": round(t_evaluated - t_published, 2),
        "reindex_s": round(t_pointer - t_evaluated, 2),  # includes the indexer's poll wait
        "reindex_rebuild_s": rebuild_seconds(stack.logs, phase),
        "index_size": json.loads((index / layout.META_FILE).read_text()).get("size"),
        "api_swap_s": round(t_search - t_pointer, 2),
    }


def freshness(client: httpx.Client, stack: Stack, pairs, k: int, timeout_s: float) -> list[dict]:
    """Post each pair alone; seconds from its 202 until an image search with it returns its id."""
    out = []
    for pair in pairs:
        query = {"image": base64.b64encode(pair.image).decode(), "k": k}
        r = client.post("/v1/pairs", json=body([pair]))
        t_ack, t0 = time.time(), time.perf_counter()
        assert r.status_code == 202 and r.json()["accepted"][0]["status"] == "queued", r.text

        def found():
            hits = client.post("/v1/search", json=query)
            return hits.status_code == 200 and any(h["id"] == pair.id for h in hits.json()["results"])

        try:
            wait_for(f"{pair.id} searchable", found, stack, timeout_s, interval_s=0.05)
            seconds = time.perf_counter() - t0
        except TimeoutError:
            seconds = None
        out.append({"id": pair.id, "searchable_s": None if seconds is None else round(seconds, 3), "acked_at": t_ack})
    return out


def run(args) -> dict:
    data = SyntheticDataset(n_domains=min(args.phases, 5), pairs_per_domain=args.pairs, seed=args.seed)
    domains = [data.domains[t % len(data.domains)] for t in range(args.phases)]
    # ids carry the phase, so a domain reused past the 5th phase still brings new pairs
    phase_pairs = [[replace(p, id=f"p{t}-{p.id}") for p in data.generate(d)] for t, d in enumerate(domains, start=1)]
    fresh = SyntheticDataset(n_domains=1, pairs_per_domain=args.fresh, seed=args.seed + 99).generate("basic")
    env = {
        "MODX_MODEL": args.model,
        "MODX_DEVICE": args.device,
        "MODX_RECIPE__EPOCHS": str(args.epochs),
        "MODX_RECIPE__BATCH_SIZE": str(args.batch_size),
        "MODX_PHASE_SIZE": str(10**9),
    }
    for name, value in (
        ("INDEX_POLL_S", args.index_poll_s),
        ("WORKER_POLL_S", args.worker_poll_s),
        ("CONSUMER_POLL_MS", args.consumer_poll_ms),
    ):
        if value is not None:
            env[f"MODX_{name}"] = str(value)
    phases, fresh_rows = [], []
    with ExitStack() as cleanup:
        data_dir = Path(args.data_dir or cleanup.enter_context(tempfile.TemporaryDirectory(prefix="modx-fresh-")))
        t0 = time.perf_counter()
        stack = cleanup.enter_context(service_stack(data_dir, ["consumer", "trainer", "indexer"], env))
        client = cleanup.enter_context(stack.client())
        wait_for(
            "CLIP_0 and its index",
            lambda: client.get("/v1/snapshots").json()["serving"].get("index") == 0,
            stack,
            args.timeout,
        )
        startup_s = time.perf_counter() - t0
        settings = {
            k: stack.env.get(f"MODX_{k.upper()}", Settings.model_fields[k].default)
            for k in ("index_poll_s", "worker_poll_s", "consumer_poll_ms", "serving_poll_s")
        }
        posted, open_n = 0, 0
        for t, pairs in enumerate(phase_pairs, start=1):
            post(client, pairs)
            posted, open_n = posted + len(pairs), open_n + len(pairs)
            wait_for(f"phase {t} buffered", lambda: buffered(client) >= posted, stack, args.timeout)
            phases.append(seal_and_serve(client, stack, data_dir, open_n, args.timeout))
            print(f"phase {t}: {phases[-1]}", flush=True)
            open_n = 0
            if t == 1:
                fresh_rows = freshness(client, stack, fresh, args.k, args.fresh_timeout)
                posted += len(fresh)
                open_n += len(fresh)
        written = {r.id: buffer.epoch(r.written_at) for r in all_records(data_dir)}
    for row in fresh_rows:
        row["buffered_s"] = round(written[row["id"]] - row["acked_at"], 3) if row["id"] in written else None
    searchable = [r["searchable_s"] for r in fresh_rows if r["searchable_s"] is not None]
    to_buffer = [r["buffered_s"] for r in fresh_rows if r["buffered_s"] is not None]
    result = {
        "benchmark": "freshness",
        "preset": args.preset,
        "args": vars(args),
        "settings": settings,
        "startup_s": round(startup_s, 1),
        "fresh": {
            "n": len(fresh_rows),
            "found": len(searchable),
            "searchable_s": {
                "p50": percentile(searchable, 50),
                "max": max(searchable, default=None),
                "mean": round(float(np.mean(searchable)), 3) if searchable else None,
            },
            "buffered_s": {"p50": percentile(to_buffer, 50), "max": max(to_buffer, default=None)},
            "target_s": TARGET_FRESH_S,
            "pairs": fresh_rows,
        },
        "phases": phases,
        "target_seal_s": TARGET_SEAL_S.get(args.preset),
        "machine": machine(args.device),
    }
    result["machine"]["loadavg_1m_at_end"] = os.getloadavg()[0]
    return result


def table(r: dict) -> str:
    a, f, s = r["args"], r["fresh"], r["settings"]
    fmt = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    rows = [
        (
            f"2xx -> searchable, p50 / max (s), {f['found']}/{f['n']} found",
            f"{fmt(f['searchable_s']['p50'])} / {fmt(f['searchable_s']['max'])}",
            f"<= {f['target_s']:g}",
        ),
        (
            "2xx -> in the phase buffer, p50 / max (s)",
            f"{fmt(f['buffered_s']['p50'])} / {fmt(f['buffered_s']['max'])}",
            "",
        ),
    ]
    for p in r["phases"]:
        target = f"<= {r['target_seal_s']:g}" if r["target_seal_s"] else ""
        rows += [
            (f"phase {p['phase']} ({p['pairs']} pairs): seal -> search on it (s)", fmt(p["seal_to_search_s"]), target),
            ("  seal -> trainer picks it up", fmt(p["wait_for_trainer_s"]), ""),
            (f"  train ({p['train_steps']} steps; loop {fmt(p['train_loop_s'])})", fmt(p["train_s"]), ""),
            ("  evaluate (recall + drift)", fmt(p["evaluate_s"]), ""),
            (f"  re-index {p['index_size']} pairs (rebuild {fmt(p['reindex_rebuild_s'])})", fmt(p["reindex_s"]), ""),
            ("  API swap", fmt(p["api_swap_s"]), ""),
        ]
    head = (
        f"freshness: {a['model']} on {a['device']}, {a['epochs']} epochs, batch {a['batch_size']}, "
        f"search k={a['k']}; index poll {s['index_poll_s']}, worker poll {s['worker_poll_s']}, "
        f"consumer poll ms {s['consumer_poll_ms']}, API serving poll {s['serving_poll_s']} s; "
        f"{r['machine']['cores']} cores, load {r['machine']['loadavg_1m_at_end']:.1f} at end"
    )
    w = max(len(x[0]) for x in rows) + 2
    lines = [head, f"{'measure':<{w}}{'seconds':>14}{'target':>10}"]
    return "\n".join(lines + [f"{n:<{w}}{v:>14}{t:>10}" for n, v, t in rows])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--pairs", type=int, help="pairs per phase")
    p.add_argument("--fresh", type=int, help="single pairs timed for freshness")
    p.add_argument("--phases", type=int, help="phases sealed and timed (freshness runs after the first)")
    p.add_argument("--epochs", type=int, help="MODX_RECIPE__EPOCHS")
    p.add_argument("--batch-size", type=int, help="MODX_RECIPE__BATCH_SIZE")
    p.add_argument("--model", help="MODX_MODEL")
    p.add_argument("--device", help="MODX_DEVICE")
    p.add_argument("--timeout", type=float, help="seconds to wait for each phase")
    p.add_argument("--fresh-timeout", type=float, default=60.0, help="seconds to wait for one fresh pair")
    p.add_argument("--k", type=int, default=5, help="results per freshness search")
    p.add_argument("--index-poll-s", type=float, default=None, help="MODX_INDEX_POLL_S (default: the service's)")
    p.add_argument("--worker-poll-s", type=float, default=None, help="MODX_WORKER_POLL_S (default: the service's)")
    p.add_argument("--consumer-poll-ms", type=int, default=None, help="MODX_CONSUMER_POLL_MS (default: the service's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="keep data and logs here (default: a temp dir)")
    p.add_argument("--out", default=None, help="JSON result path")
    args = p.parse_args(argv)
    apply_preset(args, PRESETS[args.preset])
    result = run(args)
    return finish(result, "bench.freshness", argv, table(result), args.out)


if __name__ == "__main__":
    main()
