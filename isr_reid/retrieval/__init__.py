"""Retrieval: distances, top-k search, ranking metrics, k-reciprocal re-ranking, a gallery index.

The picture helper :func:`isr_reid.retrieval.visualize.draw_ranked_results` is imported on demand (PIL).
"""

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
    "rerank",
    "rerank_features",
    "topk",
]
