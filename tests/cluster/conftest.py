"""Fixtures of the cluster tests: the package's 3-node cluster, whole at each test's start."""

from __future__ import annotations

import pytest

from tests.support.cluster import Cluster, cluster

__all__ = ["cluster", "healthy_cluster"]


@pytest.fixture
def healthy_cluster(cluster: Cluster) -> Cluster:
    """The session's cluster with every node up (nodes an earlier test killed restarted)."""
    cluster.heal()
    return cluster
