"""SendWindow.wait_room, the http-over-websocket idle timeout: a client that takes nothing for
the timeout gives up the wait; one that keeps taking something, however slowly, does not.
The flush futures stand in for tornado's write futures (done once the client took the bytes)."""

from __future__ import annotations

import asyncio
import time

from jupyter_colab_remote.extension.http_over_ws import SendWindow

IDLE = 0.3


async def _wait(window: SendWindow, flushes: list[asyncio.Future[None]], at: list[float]):
    """wait_room(IDLE) while the futures are done one by one at the given delays: (result,
    seconds it took)."""
    loop = asyncio.get_running_loop()
    for future, delay in zip(flushes, at, strict=True):
        loop.call_later(delay, future.set_result, None)
    t0 = time.monotonic()
    result = await window.wait_room(IDLE)
    return result, time.monotonic() - t0


def test_a_client_taking_nothing_times_out_one_taking_slowly_does_not():
    """Nothing taken: False after IDLE. Taken in steps less than IDLE apart (the whole wait
    longer than IDLE): True once the window has room again. Room already there: True at once."""

    async def go():
        loop = asyncio.get_running_loop()
        window = SendWindow(10)
        stuck = [loop.create_future() for _ in range(2)]
        for future in stuck:
            window.add(15, future)
        result, took = await _wait(window, [], [])
        assert result is False and IDLE <= took < IDLE + 0.25
        for future in stuck:
            future.set_result(None)
        await asyncio.sleep(0)

        slow = [loop.create_future() for _ in range(3)]
        for future in slow:
            window.add(15, future)
        result, took = await _wait(window, slow, [0.2, 0.4, 0.55])
        assert result is True and 0.5 <= took < 0.9  # longer than IDLE, never idle for IDLE
        result, took = await _wait(window, [], [])
        assert result is True and took < 0.05

    asyncio.run(go())
