"""A server process holding more than its share of keep-alive connections asks clients now and then to connect anew."""

from __future__ import annotations

from crowdpatch.server.balance import SHED_INTERVAL, ConnectionShare
from helpers.clock import Clock


def test_a_process_two_connections_above_the_fewest_sheds_one_per_interval():
    clock = Clock(100.0)
    share = ConnectionShare([5, 3], 0, clock)
    assert share.should_shed()
    assert not share.should_shed()  # the counts are read again after the last one moved
    clock.now += SHED_INTERVAL / 2
    assert not share.should_shed()
    clock.now += SHED_INTERVAL
    assert share.should_shed()


def test_a_process_within_one_of_the_fewest_or_below_them_keeps_its_connections():
    assert not ConnectionShare([4, 3], 0, Clock(100.0)).should_shed()
    assert not ConnectionShare([5, 3], 1, Clock(100.0)).should_shed()
    assert not ConnectionShare([9], 0, Clock(100.0)).should_shed()  # one process: nowhere else to go
    assert ConnectionShare([3, 9, 7], 1, Clock(100.0)).should_shed()  # three processes: against the one with fewest


def test_each_process_counts_its_own_connections_in_its_slot():
    counts = [0, 0]
    share = ConnectionShare(counts, 1, Clock(100.0))
    share.opened()
    share.opened()
    share.closed()
    assert counts == [0, 1]
