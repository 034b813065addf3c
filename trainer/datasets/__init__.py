"""Datasets for the continual protocol, by name."""

from __future__ import annotations


def get_dataset(name: str, **kwargs):
    if name == "synthetic":
        from trainer.datasets.synthetic import SyntheticDataset

        return SyntheticDataset(**kwargs)
    if name == "emoji":
        from trainer.datasets.emoji import emoji_stream

        return emoji_stream(**kwargs)
    if name == "icons":
        from trainer.datasets.icons import IconDataset

        return IconDataset(**kwargs)
    if name == "after-pretraining":
        from trainer.datasets.after_pretraining import after_pretraining

        return after_pretraining(**kwargs)
    raise ValueError(f"unknown dataset {name!r}; known: synthetic, emoji, icons, after-pretraining")
