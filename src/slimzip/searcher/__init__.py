"""The search for the smallest file at a target accuracy: strategies, the candidate pipeline, the journal."""

from .driver import Search, SearchConfig, SearchResult, run_search, smallest
from .journal import Candidate, Journal, Knobs
from .strategies import STRATEGIES

__all__ = ["STRATEGIES", "Candidate", "Journal", "Knobs", "Search", "SearchConfig", "SearchResult", "run_search",
           "smallest"]
