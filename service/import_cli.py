"""`modx import SOURCE`: stream a dataset (service.importer) into a running stack through the
REST API, so every check and guarantee of POST /v1/pairs applies.

Each row is checked first with the API's own validation (service.validation, under the limits
of the local settings); a bad row is reported (file, row, reason) and skipped. Good rows go
in batches within the API's limits (pairs, body bytes, pixels per request). A batch the API
still refuses for one item (its limits may be tighter) loses that item, reported, and is
sent again without it; one refused as a whole is split in halves. 429 and 503 are retried
after Retry-After. Nothing half-posts: the API takes a batch whole or not at all, and the
ids come from the source, so an interrupted run is resumed by running it again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service import importer
from service.cli_client import ApiKeyOption, UrlOption
from service.client import DEFAULT_URL, ApiError, Client
from service.limits import Limits, PairError
from service.settings import Settings
from service.validation import validate_fields

JSON_OVERHEAD = 160  # bytes of JSON around one pair's fields


@dataclass
class Batcher:
    """Collects valid rows into batches the API takes, posts them, and keeps the tally."""

    client: Client
    limits: Limits
    max_pairs: int
    max_bytes: int
    batch: list[tuple[importer.Row, int, int]] = field(default_factory=list)  # (row, bytes, pixels)
    counts: dict[str, int] = field(default_factory=lambda: {"queued": 0, "duplicate": 0, "deleted": 0})
    bad: list[importer.Row] = field(default_factory=list)

    def add(self, row: importer.Row) -> None:
        if row.problem is None:
            try:
                valid = validate_fields(
                    id=row.id, text=row.text, image=row.image, metadata=row.metadata, limits=self.limits
                )
            except PairError as e:
                row.problem = f"{e.error}: {e.message}"
        if row.problem is not None:
            self.bad.append(row)
            return
        size = len(row.image) * 4 // 3 + 2 * len(row.text.encode()) + len(json.dumps(row.metadata)) + JSON_OVERHEAD
        if self.batch and (
            len(self.batch) >= self.max_pairs
            or sum(b for _, b, _ in self.batch) + size > self.max_bytes
            or sum(p for _, _, p in self.batch) + valid.width * valid.height > self.limits.max_request_pixels
        ):
            self.flush()
        self.batch.append((row, size, valid.width * valid.height))

    def flush(self) -> None:
        rows, self.batch = [r for r, _, _ in self.batch], []
        self.send(rows)

    def send(self, rows: list[importer.Row]) -> None:
        while rows:
            try:
                answer = self.client.post([r.pair() for r in rows])
            except ApiError as e:
                rows = self.refused(rows, e)
                continue
            for item in answer.accepted:
                self.counts[item.status] += 1
            return

    def refused(self, rows: list[importer.Row], e: ApiError) -> list[importer.Row]:
        """What to send again after a refusal: the batch without the item the API named, or
        its first half (the second half is sent next); a 429/503 that outlasted the retries
        or an auth error stops the import."""
        if e.status in (401, 403, 429) or not 400 <= e.status < 500:
            raise e
        item = e.detail.get("item")
        if isinstance(item, int) and 0 <= item < len(rows):
            rows[item].problem = f"refused by the API: {e.error}: {e.message}"
            self.bad.append(rows[item])
            return rows[:item] + rows[item + 1 :]
        if len(rows) == 1:
            rows[0].problem = f"refused by the API: {e.error}: {e.message}"
            self.bad.append(rows[0])
            return []
        half = len(rows) // 2
        self.send(rows[:half])
        return rows[half:]


def import_(
    source: Path = typer.Argument(..., exists=True, help="a folder, a .csv/.tsv, a .parquet or a webdataset .tar"),
    image_col: str = typer.Option("filepath", help="CSV/parquet: the image path (or bytes) column"),
    text_col: str = typer.Option("title", help="CSV/parquet: the caption column"),
    sep: Optional[str] = typer.Option(None, help="CSV separator (default: ',' for .csv, tab for .tsv)"),
    id_prefix: str = typer.Option("", help="put before every id, to keep two datasets' ids apart"),
    batch: Optional[int] = typer.Option(None, help="pairs per request (default: the API's max_pairs_per_request)"),
    retries: int = typer.Option(8, help="tries of a request answered 429 or 503, after its Retry-After"),
    report: Optional[Path] = typer.Option(None, help="write every bad row here as JSON lines"),
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
):
    """Stream a dataset into a running stack; a second run posts nothing new."""
    settings = Settings()
    limits = Limits.from_settings(settings)
    try:
        rows, total = importer.rows(source, id_prefix, image_col, text_col, sep), importer.count(source)
    except ValueError as e:
        typer.echo(f"modx import: {e}", err=True)
        raise typer.Exit(2) from None
    with Client(url, api_key, retries=retries) as client:
        batcher = Batcher(
            client,
            limits,
            max_pairs=min(batch or limits.max_pairs_per_request, limits.max_pairs_per_request),
            max_bytes=int(settings.max_request_bytes * 0.9),
        )
        try:
            run(batcher, rows, total, source)
        except ApiError as e:
            summarize(batcher, source, report)
            typer.echo(f"modx import: stopped: {e}; run the same command again to resume", err=True)
            raise typer.Exit(1) from None
    summarize(batcher, source, report)


def run(batcher: Batcher, rows, total: int | None, source: Path) -> None:
    columns = (TextColumn("importing {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(source.name, total=total)
        try:
            for row in rows:
                batcher.add(row)
                bar.advance(task)
        except ValueError as e:  # a source that cannot be read at all (missing columns)
            typer.echo(f"modx import: {e}", err=True)
            raise typer.Exit(2) from None
        batcher.flush()


def summarize(batcher: Batcher, source: Path, report: Path | None) -> None:
    console, counts, bad = Console(), batcher.counts, batcher.bad
    if bad:
        table = Table("file", "row", "reason", title=f"{len(bad)} bad rows (skipped)")
        for row in bad[:20]:
            table.add_row(row.where, row.row, row.problem)
        console.print(table)
        if len(bad) > 20:
            console.print(f"... and {len(bad) - 20} more" + (f" (all in {report})" if report else " (see --report)"))
    if report is not None:
        report.write_text("".join(json.dumps({"file": r.where, "row": r.row, "reason": r.problem}) + "\n" for r in bad))
    total = sum(counts.values()) + len(bad)
    deleted = f", {counts['deleted']} deleted before (not posted again)" if counts["deleted"] else ""
    typer.echo(
        f"imported {source}: {total} rows, {counts['queued']} queued, "
        f"{counts['duplicate']} duplicate (already there){deleted}, {len(bad)} bad rows skipped"
    )
