"""The paper's regime as a dataset: a stream of domains after CLIP_0's pretraining corpus.

Domain 0 is the corpus CLIP_0 was pretrained on (`modx pretrain`: the icon corpus). The
continual protocol (trainer.simulate) takes CLIP_0 as that pretrained checkpoint, never
trains or replays domain 0, and evaluates it after every phase: its `test` split (concepts
no pretraining set was trained on) measures what continual training costs the pretrained
knowledge, as ZSCL measures zero-shot retention. Domains 1..N are the stream's (emoji
styles, or icon sets outside the pretraining list), trained one phase each.

The corpus's splits are large (35k train pairs, 4.4k test pairs), so each is evaluated on a
fixed sample of `corpus_pairs` pairs chosen by hash of pair id, pooled over its sets
(identical captions across sets count as one another's matches, trainer.metrics.recall).
"""

from __future__ import annotations

from functools import cached_property

from trainer.data import Dataset, Pair, id_fraction

CORPUS = "pretraining"  # domain 0's name


class AfterPretraining:
    """`corpus` (what CLIP_0 was pretrained on) as domain 0, then `stream`'s domains."""

    name = "after-pretraining"
    corpus_first = True  # trainer.simulate: CLIP_0 is the pretrained checkpoint; domain 0 is evaluated only

    def __init__(self, corpus: Dataset, stream: Dataset, corpus_pairs: int = 600):
        if CORPUS in stream.domains:
            raise ValueError(f"the stream may not have a domain named {CORPUS!r}")
        self.corpus, self.stream, self.corpus_pairs = corpus, stream, corpus_pairs
        self.domains = [CORPUS, *stream.domains]
        self.eval_splits = tuple(s for s in stream.eval_splits if s in getattr(corpus, "eval_splits", ()))

    def _split(self, split: str, domain: str) -> list[Pair]:
        if domain == CORPUS:
            return self._corpus[split]
        return getattr(self.stream, split)(domain)

    @cached_property
    def _corpus(self) -> dict[str, list[Pair]]:
        splits = ("train", "probe", "validation", *self.eval_splits)
        pooled = {s: [p for d in self.corpus.domains for p in getattr(self.corpus, s)(d)] for s in splits}
        return {
            s: sorted(ps, key=lambda p: id_fraction(p.id, "corpus-sample:"))[: self.corpus_pairs]
            for s, ps in pooled.items()
        }

    def train(self, domain: str) -> list[Pair]:
        return self._split("train", domain)

    def probe(self, domain: str) -> list[Pair]:
        return self._split("probe", domain)

    def validation(self, domain: str) -> list[Pair]:
        return self._split("validation", domain)

    def test(self, domain: str) -> list[Pair]:
        return self._split("test", domain)

    def info(self) -> dict:
        corpus = dict(self.corpus.info())
        corpus.pop("cache_dir", None)
        return {
            "name": self.name,
            "domains": list(self.domains),
            "corpus": corpus,
            "corpus_pairs": self.corpus_pairs,
            "stream": self.stream.info(),
        }


def after_pretraining(stream: str, corpus_sets=None, corpus_pairs: int = 600, size: int = 32, **stream_kw):
    """The icon corpus (every pretraining set, as `modx pretrain` uses it), then `stream`:
    "emoji" (trainer.datasets.emoji_stream's kwargs) or "icons" (IconDataset's; the sets
    outside the pretraining list by default)."""
    from trainer.datasets.emoji import emoji_stream
    from trainer.datasets.icons import EVAL_SETS, PRETRAIN_SETS, IconDataset

    cache = stream_kw.get("cache_dir")
    corpus = IconDataset(tuple(corpus_sets or PRETRAIN_SETS), size=size, cache_dir=cache)
    if stream == "emoji":
        data = emoji_stream(size=size, **stream_kw)
    elif stream == "icons":
        data = IconDataset(tuple(stream_kw.pop("sets", EVAL_SETS)), size=size, **stream_kw)
    else:
        raise ValueError(f"unknown stream {stream!r}; known: emoji, icons")
    return AfterPretraining(corpus, data, corpus_pairs)
