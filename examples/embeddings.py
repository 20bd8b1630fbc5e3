"""A durable embedding pipeline on Ray: load -> embed -> index, each step a Ray task.

The documents are made up here, the "embedding" is a hashing trick in NumPy (no model to
download), and the worker that embeds is killed half-way through its first try: Ray runs the
task again and raystate journals its result once. The corpus and the vectors travel as
``DurableRef``s -- the workers write them to the blob store, the journal holds only their URI,
size and sha256, and the handler's host never holds the data.

Run: python examples/embeddings.py [data_dir]   (data goes to ./raystate-data)
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors import Context, DurableRef, Runtime, Service
from actors.client.tables import write

DOCS, DIMS = 2_000, 256
TOPICS = ["ray", "duckdb", "journal", "replay", "arrow", "numpy", "actor", "timer"]

embeddings = Service("Embeddings")


@ray.remote(num_cpus=0.5)
def load(n: int) -> bytes:
    """The corpus, one document a line (deterministic: the same every run)."""
    rng = np.random.default_rng(7)
    lines = [" ".join(rng.choice(TOPICS, size=12)) + f" doc{i}" for i in range(n)]
    return "\n".join(lines).encode()


def _vector(doc: str) -> np.ndarray:
    v = np.zeros(DIMS, dtype=np.float32)
    for token in doc.split():
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=4).digest(), "big")
        v[h % DIMS] += 1.0 if h & 1 << 31 else -1.0
    return v / (np.linalg.norm(v) or 1.0)


@ray.remote  # resources are chosen per call: a GPU if the cluster has one, else a CPU
def embed(corpus: bytes, attempts: str) -> np.ndarray:
    """One vector per document. The first try dies half-way (the process exits)."""
    docs = corpus.decode().splitlines()
    with open(attempts, "a") as f:
        f.write("embed\n")
    first_try = Path(attempts).read_text().count("embed") == 1
    vectors = []
    for i, doc in enumerate(docs):
        if first_try and i == len(docs) // 2:
            os._exit(1)  # a worker lost mid-task: Ray retries the task (max_retries)
        vectors.append(_vector(doc))
    return np.stack(vectors)


@ray.remote(num_cpus=0.5)
def index(vectors: np.ndarray, query: int) -> dict[str, Any]:
    """A brute-force index: the documents nearest to one of them, and the matrix's shape."""
    scores = vectors @ vectors[query]
    nearest = np.argsort(-scores)[:4]
    return {
        "shape": list(vectors.shape),
        "query": query,
        "nearest": [[int(i), round(float(scores[i]), 3)] for i in nearest],
    }


@embeddings.handler()
async def pipeline(ctx: Context, attempts: str) -> dict[str, Any]:
    corpus: DurableRef = await ctx.run("load", load, DOCS, durable_ref=True)
    gpus = ray.cluster_resources().get("GPU", 0)
    embed_on = embed.options(num_gpus=1) if gpus else embed.options(num_cpus=1)
    vectors: DurableRef = await ctx.run("embed", embed_on, corpus, attempts, durable_ref=True)
    found = await ctx.run("index", index, vectors, 0)
    return {**found, "corpus_bytes": corpus.size, "vectors_bytes": vectors.size}


def main(data_dir: str = "raystate-data") -> None:
    rt = Runtime.start([embeddings], data_dir=data_dir, namespace="embeddings-example")
    try:
        attempts = Path(data_dir).absolute() / "embed-attempts.txt"
        attempts.unlink(missing_ok=True)
        handle = rt.send(pipeline, arg=str(attempts))
        out = handle.result(timeout=300)
        print(
            f"index over {out['shape'][0]} documents x {out['shape'][1]} dims; nearest to "
            f"doc {out['query']}: {out['nearest']}"
        )
        print(
            f"corpus {out['corpus_bytes']:,} bytes, vectors {out['vectors_bytes']:,} bytes,"
            " both in the blob store"
        )
        print(
            f"embed ran {attempts.read_text().count('embed')} times "
            "(its first worker was killed half-way)"
        )
        print("\nThe journal keeps references, not the data:")
        write(
            rt.sql(
                "SELECT index, name, left(result::VARCHAR, 72) AS result FROM sys_journal "
                f"WHERE invocation_id = '{handle.id}' ORDER BY index"
            )
        )
    finally:
        rt.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
