"""The restart policy of the line's supervisor: at once, then a doubling delay, then given up on."""

from __future__ import annotations

from inspection.line.restarts import RestartPolicy, Restarts


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_child_is_restarted_at_once_then_later_and_later_then_given_up_on() -> None:
    clock = Clock()
    restarts = Restarts(RestartPolicy(max_restarts=3, window_s=60.0, backoff_s=1.0, max_delay_s=10.0), clock)
    for delay in (0.0, 1.0, 2.0):
        assert restarts.crashed("recorder", -9) == delay
        assert restarts.waiting("recorder")  # noted once, however often the loop looks
        if delay:
            clock.now += delay / 2
            assert restarts.due() == []  # not yet
            clock.now += delay / 2
        assert restarts.due() == ["recorder"] and not restarts.waiting("recorder")
    assert restarts.counts == {"recorder": 3}
    assert restarts.crashed("recorder", 1) is None  # a 4th crash within 60 s: given up
    assert restarts.given_up == {"recorder"} and restarts.waiting("recorder") and restarts.due(force=True) == []
    summary = restarts.summary()
    assert summary["restarts"] == {"recorder": 3} and summary["given_up"] == ["recorder"]
    assert [c["restart_in_s"] for c in summary["crashes"]] == [0.0, 1.0, 2.0, None]


def test_restarts_older_than_the_window_are_forgotten() -> None:
    clock = Clock()
    restarts = Restarts(RestartPolicy(max_restarts=1, window_s=60.0), clock)
    assert restarts.crashed("worker-1", -9) == 0.0 and restarts.due() == ["worker-1"]
    clock.now += 61.0
    assert restarts.crashed("worker-1", -9) == 0.0  # the first restart is out of the window
    assert restarts.due(["recorder"]) == [] and restarts.due(["worker-1"]) == ["worker-1"]


def test_the_delay_doubles_up_to_its_cap() -> None:
    policy = RestartPolicy(backoff_s=1.0, max_delay_s=5.0)
    assert [policy.delay(n) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]
