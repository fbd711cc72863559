"""Dynamic batching: concurrent requests share model runs, each gets its own rows back in order."""

import asyncio
import time

import numpy as np

from serve.batching import Batcher


def run_concurrently(sizes: list[int], max_images: int, delay: float = 0.05):
    calls: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch * 10  # row-wise, so each request can check it got its own rows

    async def main():
        batcher = Batcher(predict, max_images=max_images, max_delay=delay, observe=lambda n: None, coming=lambda: False)
        batcher.start()
        requests = [np.full((n, 1), i, dtype=np.float32) for i, n in enumerate(sizes)]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return requests, results

    requests, results = asyncio.run(main())
    for request, result in zip(requests, results, strict=False):
        assert np.array_equal(result, request * 10)
    return calls


def test_concurrent_requests_are_batched_up_to_the_limit():
    calls = run_concurrently([1] * 10, max_images=4)
    assert calls == [4, 4, 2]


def test_a_request_that_does_not_fit_goes_first_in_the_next_batch():
    calls = run_concurrently([3, 3, 1, 5, 9], max_images=8)
    assert calls == [7, 5, 9]  # 3+3+1; 5 does not fit, leads the next; 9 exceeds the limit and runs alone


def test_errors_reach_every_request_of_the_batch():
    def broken(batch):
        raise RuntimeError("model exploded")

    async def main():
        batcher = Batcher(broken, max_images=8, max_delay=0.05, observe=lambda n: None, coming=lambda: False)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(3)), return_exceptions=True)
        await batcher.stop()
        return results

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(main()))


def test_a_batch_waits_only_while_another_request_is_on_its_way():
    """A lone request does not pay the batching delay; one still decoding is waited for and joins the batch."""
    calls: list[int] = []
    on_its_way = [False]

    async def main():
        batcher = Batcher(
            lambda b: calls.append(len(b)) or b,
            max_images=8,
            max_delay=2.0,
            observe=lambda n: None,
            coming=lambda: on_its_way[0],
        )
        batcher.start()
        started = time.perf_counter()
        await batcher.submit(np.zeros((1, 1)))
        alone = time.perf_counter() - started

        async def late():
            await asyncio.sleep(0.2)
            on_its_way[0] = False
            return await batcher.submit(np.ones((1, 1)))

        on_its_way[0] = True
        started = time.perf_counter()
        await asyncio.gather(batcher.submit(np.zeros((1, 1))), late())
        together = time.perf_counter() - started
        await batcher.stop()
        return alone, together

    alone, together = asyncio.run(main())
    assert alone < 1.0 and calls[0] == 1  # not the 2 s delay
    assert calls[1:] == [2] and 0.2 <= together < 1.5  # waited for the one on its way, then ran at once
