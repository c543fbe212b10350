"""``streamforge ingest``: upload files and folders into a collection."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from streamforge.cli.client import (
    KeyOption,
    UrlOption,
    call,
    segment,
    server,
    server_error,
    target,
)
from streamforge.cli.common import fail

SUFFIXES = {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"}


def _files(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The files to upload among ``paths`` (folders searched whole), and the files left out
    with the reason. A file named on the command line is always sent: the server judges it."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    kinds = ", ".join(sorted({suffix.lstrip(".") for suffix in SUFFIXES}))

    def walk(folder: Path) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                skipped.append((entry, "hidden (its name starts with a dot)"))
            elif entry.is_dir():
                walk(entry)
            elif not entry.is_file():
                skipped.append((entry, "not a regular file"))
            elif entry.suffix.lower() in SUFFIXES:
                found.append(entry)
            else:
                kind = f"{entry.suffix} files" if entry.suffix else "files without a suffix"
                skipped.append((entry, f"{kind} are not supported (only {kinds})"))

    for path in paths:
        if path.is_dir():
            walk(path)
        elif path.is_file():
            found.append(path)
        else:
            fail(f"{path} does not exist")
    return found, skipped


def _shown(path: Path) -> str:
    """A path as the user would recognise it: relative to here when it is below here."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to upload.")],
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection name.")],
    url: UrlOption = None,
    key: KeyOption = None,
    wait: Annotated[bool, typer.Option(help="Wait until every document is ingested.")] = True,
) -> None:
    """Upload documents into a collection (created when missing), with a progress bar per
    file; files that are left out are named, with the reason."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn

    url = target(url, key)
    files, skipped = _files(paths)
    console = Console(stderr=True, highlight=False)
    for path, reason in skipped:
        console.print(f"skipped {_shown(path)}: {reason}", markup=False, soft_wrap=True)
    if not files:
        fail("no supported files (txt, md, html, pdf, docx) among the paths given")
    failed: list[tuple[str, str]] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[status]}"),
    )
    with server(url) as client:
        created = client.post("/collections", json={"name": collection})
        if created.status_code not in (201, 409):
            fail(f"cannot create collection {collection!r}: {server_error(created)}")
        with Progress(*columns, console=console, transient=False) as progress:
            tasks = {
                path: progress.add_task(_shown(path), total=1.0, status="waiting") for path in files
            }
            # Upload is the first tenth of a file's bar, ingestion the rest.
            pending: dict[str, tuple[str, TaskID]] = {}
            # All files, with the rate since the first upload (ingestion runs meanwhile).
            overall = progress.add_task("all files", total=float(len(files)), status="")
            started, settled = time.monotonic(), [0]

            def advance() -> None:
                settled[0] += 1
                rate = settled[0] / max(time.monotonic() - started, 1e-6)
                progress.update(overall, completed=settled[0], status=f"{rate:.1f} documents/s")

            def failed_file(name: str, task: TaskID, reason: str) -> None:
                failed.append((name, reason))
                progress.update(task, status=f"failed: {reason}")
                advance()

            for path, task in tasks.items():
                name = _shown(path)
                progress.update(task, status="uploading")
                with path.open("rb") as handle:
                    response = client.post(
                        "/documents",
                        data={"collection": collection},
                        files={"file": (path.name, handle)},
                    )
                if response.status_code not in (200, 202):
                    failed_file(name, task, server_error(response))
                    continue
                document = response.json()
                if document["status"] == "failed":
                    failed_file(name, task, str(document["error"]))
                elif document["status"] == "ready":
                    progress.update(task, completed=1.0, status="ready")
                    advance()
                else:
                    progress.update(task, completed=0.1, status="ingesting")
                    pending[document["id"]] = (name, task)
            if not wait:
                for _, task in pending.values():
                    progress.update(task, status="uploaded (ingesting on the server)")
                pending.clear()
            while pending:
                for document_id, (name, task) in list(pending.items()):
                    document = call(client, "GET", f"/documents/{segment(document_id)}")
                    if document["status"] == "failed":
                        failed_file(name, task, str(document["error"]))
                        del pending[document_id]
                    elif document["status"] == "ready":
                        progress.update(task, completed=1.0, status="ready")
                        advance()
                        del pending[document_id]
                    else:
                        done = 0.1 + 0.9 * float(document["progress"])
                        progress.update(task, completed=done, status=document["status"])
                if pending:
                    time.sleep(0.25)
    for name, reason in failed:
        typer.echo(f"failed: {name}: {reason}", err=True)
    verb = "ingested into" if wait else "uploaded to"
    typer.echo(f"{len(files) - len(failed)} of {len(files)} documents {verb} {collection}")
    if failed:
        raise typer.Exit(1)
