"""``streamforge eval``: score retrieval on labelled test collections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from streamforge.cli.common import fail


def evaluate(
    collections: Annotated[
        list[str] | None,
        typer.Argument(
            help="'shipped' (the labelled set in the package) or folders of SMART-format "
            "test collections (CISI, CACM, Cranfield: documents, queries, judgements).",
        ),
    ] = None,
    embedder: Annotated[
        str | None,
        typer.Option(help="local (all-MiniLM-L6-v2) or simulated; default from settings."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="Database to ingest into (default: a temporary SQLite file)."),
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=100, help="Cut-off of the metrics.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Score full-text, vector and hybrid retrieval on test collections (default: the
    shipped labelled set), at the document level and, where passages are judged, the
    passage level."""
    import asyncio
    import tempfile

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from streamforge.config.settings import Settings
    from streamforge.evaluation.collections import load
    from streamforge.evaluation.run import evaluate as run_evaluation

    console = Console(stderr=True)
    reports = []
    for ref in collections or ["shipped"]:
        try:
            collection = load(ref)
        except (OSError, ValueError) as exc:
            fail(f"cannot read the test collection {ref}: {exc}")
        with tempfile.TemporaryDirectory(prefix="streamforge-eval-") as scratch:
            overrides: dict[str, Any] = {
                "data_dir": Path(scratch),
                "llm": {"provider": "simulated"},
                "database": {"url": database_url},
            }
            settings = Settings(**overrides)
            if embedder is not None:
                settings.embeddings.provider = embedder  # type: ignore[assignment]
            with Progress(console=console, transient=True) as progress:
                tasks: dict[str, Any] = {}

                def report(
                    stage: str, done: int, total: int, tasks: dict[str, Any] = tasks
                ) -> None:
                    if stage not in tasks:
                        tasks[stage] = progress.add_task(stage, total=total)
                    progress.update(tasks[stage], completed=done)

                reports.append(
                    asyncio.run(
                        run_evaluation(settings, collection=collection, k=k, progress=report)
                    )
                )
    if as_json:
        dicts = [result.as_dict() for result in reports]
        typer.echo(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
        return
    for result in reports:
        passages = any(score.passage_ndcg is not None for score in result.scores)
        table = Table(
            title=f"{result.collection}: {result.queries} queries, {result.documents} documents, "
            f"{result.chunks} chunks; embedder {result.embedder}, {result.backend}; "
            f"ingested in {result.ingest_seconds:.1f} s"
        )
        columns = ["mode", f"nDCG@{k}", f"recall@{k}"]
        if passages:
            columns += [f"passage nDCG@{k}", f"passage recall@{k}"]
        for column in [*columns, "p50 ms"]:
            table.add_column(column)
        for score in result.scores:
            row = [score.mode, f"{score.ndcg:.3f}", f"{score.recall:.3f}"]
            if passages:
                row += [f"{score.passage_ndcg or 0:.3f}", f"{score.passage_recall or 0:.3f}"]
            table.add_row(*row, f"{score.latency_p50_ms:.1f}")
        Console().print(table)
