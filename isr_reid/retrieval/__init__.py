"""Retrieval: distances, top-k search, ranking metrics, k-reciprocal re-ranking, a gallery index."""

from __future__ import annotations

from .distance import pairwise_distance, topk
from .index import GalleryIndex, SearchResult
from .metrics import RankResult, evaluate_rank
from .reranking import rerank, rerank_features

__all__ = [
    "GalleryIndex",
    "RankResult",
    "SearchResult",
    "evaluate_rank",
    "pairwise_distance",
    "rerank", "rerank_features",
    "topk",
]
