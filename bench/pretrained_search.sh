#!/bin/bash
# The README's pretrained example: a CLIP_0 checkpoint (a `modx pretrain` output or its weights)
# -> `modx up --pretrained` -> `modx import` of the held-out teenyicons test concepts (icons of
# concepts no pretraining set drew) -> text -> image R@1 over them, and three `modx search`es.
#   bench/pretrained_search.sh CHECKPOINT [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PT=${1:?usage: bench/pretrained_search.sh CHECKPOINT [WORK_DIR]}
D=${2:-/tmp/modx-pretrained-search}
rm -rf $D/data $D/icons; mkdir -p $D/icons
D="$D" .venv/bin/python - <<'PY'
import os
from pathlib import Path
from trainer.datasets.icons import IconDataset
out = Path(os.environ["D"]) / "icons"
ds = IconDataset(("teenyicons",), size=32)
pairs = ds.test("teenyicons")
for p in pairs:
    name = p.metadata.get("concept", p.id).replace("/", "_")
    (out / f"{name}.png").write_bytes(p.image)
    (out / f"{name}.txt").write_text(p.text)
print(len(pairs), "held-out teenyicons test concepts written to", out)
PY
export MODX_PHASE_SIZE=100000
.venv/bin/modx up --data-dir $D/data --port 8765 --pretrained $PT --model modx-small > $D/up.log 2>&1 &
UP=$!
for i in $(seq 1 180); do curl -sf http://127.0.0.1:8765/readyz >/dev/null && break; sleep 2; done
.venv/bin/modx import $D/icons --url http://127.0.0.1:8765 --api-key "$(cat $D/data/admin.key)" 2>&1 | tail -3
sleep 15
.venv/bin/python - <<PY
from pathlib import Path
from service.client import Client
captions = [p.read_text() for p in sorted(Path("$D/icons").glob("*.txt"))]
with Client("http://127.0.0.1:8765", api_key=Path("$D/data/admin.key").read_text().strip()) as modx:
    ranks = []
    for c in captions:
        hits = [h.text for h in modx.search(text=c, k=len(captions)).results]
        ranks.append(hits.index(c) + 1 if c in hits else len(captions) + 1)
n = len(ranks)
print(f"text -> image over the {n} held-out icons: R@1 {sum(r == 1 for r in ranks) / n:.3f}, "
      f"R@5 {sum(r <= 5 for r in ranks) / n:.3f}, median rank {sorted(ranks)[n // 2]} (chance R@1 {1 / n:.3f})")
print("found first:", ", ".join(c for c, r in zip(captions, ranks) if r == 1))
print("not in the top 5:", ", ".join(c for c, r in zip(captions, ranks) if r > 5))
PY
for q in "fingerprint" "mobile" "camera" ; do
  echo "\$ modx search \"$q\" -k 5"
  .venv/bin/modx search "$q" -k 5 --url http://127.0.0.1:8765 --api-key "$(cat $D/data/admin.key)"
done
kill -INT $UP; wait $UP || true
