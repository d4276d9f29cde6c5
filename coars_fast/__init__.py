"""coars-fast: a fast trainer for co-evolving Recommender and User LLM agents (CoARS)."""

__version__ = "0.1.0"
