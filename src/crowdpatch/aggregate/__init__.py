"""Votes -> posteriors (crowd-kit) and the worker-quality table."""

from crowdpatch.aggregate.quality import worker_quality
from crowdpatch.aggregate.votes import collect_votes, make_aggregator, posteriors

__all__ = ["collect_votes", "make_aggregator", "posteriors", "worker_quality"]
