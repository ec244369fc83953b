from parcelvault.entrypoints.jobs_process import (
    MAX_RESTART_DELAY_SECONDS,
    RESTART_DELAY_SECONDS,
    restart_delay,
)


def test_a_failing_jobs_process_is_restarted_ever_more_slowly_up_to_a_minute() -> None:
    delays = [restart_delay(n) for n in range(1, 9)]
    assert delays[0] == RESTART_DELAY_SECONDS
    assert delays[:5] == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert delays[5:] == [MAX_RESTART_DELAY_SECONDS] * 3
