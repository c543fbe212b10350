"""Ingestion at the embedder's speed: one embedding queue across documents, the warm parser
process, group commits of claims and results."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from streamforge.chains.embeddings import EmbeddingModel, SimulatedEmbeddings
from streamforge.db.group import GroupCommit
from streamforge.documents.extract import ExtractionFailed
from streamforge.documents.sandbox import Limits, WarmSandbox
from streamforge.services.embeddings import EmbeddingService
from tests.hostile_files import HOSTILE, text_pdf

POSIX = os.name == "posix"


class CountingEmbeddings(Embeddings):
    """Records each batch it is given; optionally fails a batch holding ``poison``."""

    def __init__(self, poison: str | None = None) -> None:
        self.inner = SimulatedEmbeddings(16)
        self.batches: list[list[str]] = []
        self.poison = poison

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        if self.poison is not None and self.poison in texts:
            raise RuntimeError("poisoned batch")
        return self.inner.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


def service(embeddings: Embeddings, batch_size: int = 4) -> EmbeddingService:
    model = EmbeddingModel("counting", 16, embeddings, in_process=True)
    return EmbeddingService(model, batch_size=batch_size)


async def test_documents_share_batches_sorted_by_length() -> None:
    counting = CountingEmbeddings()
    embedder = service(counting)
    documents = [[f"doc {d} chunk {c} " + "x" * (d * 7 + c) for c in range(3)] for d in range(4)]
    results = await asyncio.gather(*(embedder.embed_documents(texts) for texts in documents))
    reference = SimulatedEmbeddings(16)
    for texts, vectors in zip(documents, results, strict=True):
        assert vectors == reference.embed_documents(texts)  # each caller gets its own, in order
    # 12 texts of four callers in three full batches, not four part-filled ones.
    assert [len(batch) for batch in counting.batches] == [4, 4, 4]
    assert counting.batches[0][0] == min((t for d in documents for t in d), key=len)
    lengths = [len(text) for batch in counting.batches for text in batch]
    assert lengths == sorted(lengths)


async def test_a_failed_batch_fails_only_its_callers() -> None:
    counting = CountingEmbeddings(poison="bad")
    embedder = service(counting, batch_size=2)
    good = embedder.embed_documents(["a longer text than the others, by far", "another long one"])
    bad = embedder.embed_documents(["bad", "bad."])
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert isinstance(results[0], list) and len(results[0]) == 2
    assert isinstance(results[1], Exception)
    assert await embedder.embed_documents(["fine again"])


async def test_group_commit_batches_and_isolates_a_bad_item() -> None:
    calls: list[list[int]] = []

    async def write(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        if 13 in items:
            raise ValueError("unlucky")
        return [item * 2 for item in items]

    group: GroupCommit[int, int] = GroupCommit(write)
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)  # the first goes alone; the rest arrive while it is written
    rest = [asyncio.ensure_future(group.submit(i)) for i in (2, 3, 13, 4)]
    assert await first == 2
    outcomes = await asyncio.gather(*rest, return_exceptions=True)
    assert outcomes[:2] == [4, 6] and outcomes[3] == 8
    assert isinstance(outcomes[2], ValueError)
    assert calls[:2] == [[1], [2, 3, 13, 4]]  # then one at a time after the batch failed
    assert [13] in calls[2:]
    await group.aclose()


class Spawns(list[Any]):
    pass


@pytest.fixture
def spawns(monkeypatch: pytest.MonkeyPatch) -> Spawns:
    found = Spawns()
    original = asyncio.create_subprocess_exec

    async def recording(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        process = await original(*args, **kwargs)
        found.append(process)
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", recording)
    return found


async def test_warm_sandbox_reuses_one_process_per_owner(spawns: Spawns) -> None:
    sandbox = WarmSandbox(Limits())
    try:
        for index in range(5):
            text = (await sandbox.extract(f"file {index}".encode(), f"f{index}.txt", "alice")).text
            assert text == f"file {index}"
        assert len(spawns) == 1
        assert (await sandbox.extract(text_pdf(("a pdf page",)), "p.pdf", "alice")).pages == 1
        assert len(spawns) == 1
        await sandbox.extract(b"bob's file", "b.txt", "bob")  # never where alice's were
        assert len(spawns) == 2 and spawns[0].returncode is not None
    finally:
        await sandbox.aclose()
    assert all(process.returncode is not None for process in spawns)


@pytest.mark.parametrize("name", ["pdf_decompression_bomb", "docx_zip_bomb"])
async def test_warm_sandbox_replaces_a_process_after_a_hostile_file(
    name: str, spawns: Spawns
) -> None:
    make = next((m for m in HOSTILE if m.__name__ == name), None)
    if make is None:
        pytest.skip(f"no hostile file named {name}")
    filename, data, _reason = make()
    sandbox = WarmSandbox(Limits(memory_mb=128, timeout=15))
    try:
        assert (await sandbox.extract(b"before", "a.txt", "o")).text == "before"
        with pytest.raises(ExtractionFailed) as failure:
            await sandbox.extract(data, filename, "o")
        assert "Traceback" not in failure.value.reason
        assert (await sandbox.extract(b"after", "b.txt", "o")).text == "after"
    finally:
        await sandbox.aclose()
    assert all(process.returncode is not None for process in spawns)


async def test_warm_sandbox_times_out_and_recovers(spawns: Spawns) -> None:
    sandbox = WarmSandbox(Limits(timeout=0.05))
    try:
        with pytest.raises(ExtractionFailed, match=r"parsing took longer than 0\.05 s"):
            # The first file pays for starting the interpreter, more than 50 ms.
            await sandbox.extract(text_pdf(("slow",)), "slow.pdf", "o")
        assert spawns[0].returncode is not None
    finally:
        await sandbox.aclose()
