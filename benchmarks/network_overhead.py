"""Issue 11 item 5 in one run: all packets at 30 % loss within 1.5 K, and the flood goals kept.

``python -m benchmarks.network_overhead`` prints, from one process, the rows docs/PERFORMANCE.md
records in "Issue 11 items 4 and 5" (sans-IO, as ``benchmarks/network.py`` measures them):

- every packet the carousel sent until the receiver installed, per source symbol K, at 10/20/30 %
  loss for the 1 MB update (5 seeds) and at 30 % for the 100,000-signature update (3 seeds),
  against the 1.5 K goal, with the SYMBOL, HASHPAGE and MANIFEST shares at 30 %;
- the simulated floods of ``network.simulated_rows`` (1 MB update, 20 % loss, 50 forged packets
  of the flood mix or 50 forged MANIFESTs per genuine packet), against the same install without
  a flood: the goal is at most 2x.

``stamped_flood_rows`` (not in ``run``: minutes) measures forgeries that pay for the protocol
minimum's stamp against a genuine manifest stamped at the publisher's default;
``python -m benchmarks.network_overhead --stamped`` prints them with the unstamped floods;
``--stamp-cost`` the publisher's 24-bit stamp on every core against one (``stamp_cost_rows``).
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Callable

from benchmarks import network, network_fixtures
from benchmarks.common import Row
from guest_tool import work_stamp
from guest_tool.encoding import PUBLISHER_WORK_BITS, EncodedUpdate, carousel
from guest_tool.work_stamp import stamp
from hv_emu.updates import packets
from hv_emu.updates.packets import parse_packet

LOSSES = (0.1, 0.2, 0.3)
LARGE_SEEDS = range(1, 4)


def sent_until_installed(update: EncodedUpdate, loss: float, seed: int) -> dict[str, int]:
    """Packets of each type the carousel sent (lost ones included) until the receiver installed."""
    rx, rng = network_fixtures.receiver(), random.Random(seed)
    sent: collections.Counter[str] = collections.Counter()
    for payload in carousel(update, rounds=None):
        sent[parse_packet(payload).header.type.name] += 1
        if rng.random() < loss:
            continue
        rx.on_datagram(payload, network_fixtures.SOURCE)
        rx.poll()
        if rx.service.installed_version == network_fixtures.VERSION:
            return dict(sent)
    raise RuntimeError("unreachable: the carousel is endless")


def _share(runs: list[dict[str, int]], k: int, kind: str | None = None) -> float:
    """Mean packets (of ``kind``, or all) per K, in percent."""
    return 100 * statistics.mean(
        (r.get(kind, 0) if kind else sum(r.values())) / k for r in runs)


def loss_rows(update: EncodedUpdate, label: str, seeds: range,
              losses: tuple[float, ...]) -> list[Row]:  # fmt: skip
    k = update.source_symbols
    rows = []
    for loss in losses:
        runs = [sent_until_installed(update, loss, seed) for seed in seeds]
        rows.append(Row(f"all packets until installed, {loss:.0%} loss, {label} (K = {k}, "
                        f"mean of {len(seeds)} seeds)", _share(runs, k), "% of K",
                        "the 1.5 K goal", 150.0))
        if loss == 0.3:
            for kind in ("SYMBOL", "HASHPAGE", "MANIFEST"):
                rows.append(Row(f"  of which {kind}, {loss:.0%} loss, {label}",
                                _share(runs, k, kind), "% of K", "K / 0.7 (ideal symbols)",
                                100 / 0.7))
    return rows


def run() -> list[Row]:
    small = network.one_megabyte_update()
    rows = loss_rows(small, "1 MB update", network_fixtures.SEEDS, LOSSES)
    rows += loss_rows(network.large_update(), f"{network.LARGE_SIGNATURES:,}-signature update",
                      LARGE_SEEDS, (0.3,))
    rows += network.simulated_rows(small, network_fixtures.Forger(small))
    return rows


#: The stamps of ``stamped_flood_rows``, lowered so the benchmark can make 100,000 forgeries: the
#: forger at the protocol minimum (``packets.WORK_BITS`` for the run), the publisher as many bits
#: above it as ``PUBLISHER_WORK_BITS`` is above the real minimum (24 - 18 = 6: 64 times the work).
BENCH_FORGER_BITS = 4
BENCH_PUBLISHER_BITS = BENCH_FORGER_BITS + PUBLISHER_WORK_BITS - packets.WORK_BITS


def exact_stamp(datagram: bytes, bits: int) -> bytes:
    """``datagram`` with a stamp of exactly ``bits`` leading zero bits, no luckier: the worst case
    of a publisher who asked for ``bits`` (``encoding.stamp`` takes the first with at least as
    many, one more on average)."""
    for nonce in range(1 << 32):
        stamped = datagram[:-packets.WORK_SIZE] + nonce.to_bytes(packets.WORK_SIZE, "big")
        if packets.work_of(packets.digest(stamped)) == bits:
            return stamped
    raise RuntimeError("unreachable: 2^32 tries")


def stamped_flood_rows(seed: int = 0) -> list[Row]:
    """50 forged MANIFESTs per genuine packet that all carry a stamp at the protocol minimum, so
    each reaches the candidate pool, against the same install without a flood; the genuine
    manifest stamped as ``guest-tool manifest`` stamps it (``encoding.stamp`` at the publisher's
    default margin above the minimum: the first nonce with at least that work, one bit more on
    average), then at exactly one bit more than the margin, then at exactly the margin (which
    ranks as high as any: ``packets.RANK_MARGIN`` caps the rank there). Stamps are made at
    ``BENCH_FORGER_BITS`` and ``BENCH_PUBLISHER_BITS`` (the real 18 and 24 lowered by 14, the
    ratio of publisher to forger work kept at 64) so the benchmark can make them."""
    saved, packets.WORK_BITS = packets.WORK_BITS, BENCH_FORGER_BITS
    try:
        base = network.one_megabyte_update()
        forger = network_fixtures.Forger(base)
        rows = []
        for how, manifest in (
            ("as guest-tool stamps it", stamp(base.manifest, BENCH_PUBLISHER_BITS)),
            ("at exactly the margin + 1", exact_stamp(base.manifest, BENCH_PUBLISHER_BITS + 1)),
            ("at exactly the margin", exact_stamp(base.manifest, BENCH_PUBLISHER_BITS)),
        ):
            small = dataclasses.replace(base, manifest=manifest)
            margin = packets.work_of(packets.digest(manifest)) - BENCH_FORGER_BITS
            quiet = network.simulated_install(small, 0, None, seed)[0]
            flood = network.simulated_install(small, 50, lambda: stamp(forger.manifest()),
                                              seed)[0]  # fmt: skip
            rows.append(Row(
                f"install a 1 MB update, 50 forged MANIFESTs per genuine packet STAMPED at the "
                f"minimum, 20% loss, genuine manifest {how} ({margin} bits above the minimum), "
                f"simulated time (seed {seed})", flood, "s", "same, no flood", quiet,
            ))  # fmt: skip
    finally:
        packets.WORK_BITS = saved
    return rows


def stamped_run(seeds: range = range(1)) -> list[Row]:
    """``--stamped``: the unstamped simulated floods of ``run`` and ``stamped_flood_rows`` for
    each seed, in one process."""
    small = network.one_megabyte_update()
    rows = network.simulated_rows(small, network_fixtures.Forger(small))
    for seed in seeds:
        rows += stamped_flood_rows(seed)
    return rows


def stamp_cost_rows(rounds: int = 3, chunks: int = 64) -> list[Row]:
    """``--stamp-cost``: the publisher's mean time for a stamp of ``PUBLISHER_WORK_BITS`` on every
    core (``work_stamp``'s pool: its start, once, plus 2^24 tries at the pool's rate) against one
    core, alternating, from rounds of ``chunks`` x 2^16 tries that never hit (64 bits wanted), so
    the geometric luck of a real search does not blur the ratio."""
    body = network.one_megabyte_update().manifest[:-packets.WORK_SIZE]
    tasks = [(body, 64, i) for i in range(chunks)]
    scale = (1 << PUBLISHER_WORK_BITS) / (chunks * work_stamp.CHUNK)
    workers = work_stamp.cores()
    rows = []
    for n in range(rounds):
        begin = time.perf_counter()
        for task in tasks:
            work_stamp.search_chunk(task)
        one = (time.perf_counter() - begin) * scale
        begin = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(work_stamp.search_chunk, [(body, 0, 0)] * workers)  # started, imported
            ready = time.perf_counter()
            pool.map(work_stamp.search_chunk, tasks, chunksize=1)
            searched = time.perf_counter()
        every = ready - begin + (searched - ready) * scale
        rows.append(Row(f"a {PUBLISHER_WORK_BITS}-bit work stamp, mean time, {workers} cores "
                        f"(pool start {ready - begin:.2f} s counted; round {n + 1})", every, "s",
                        "one core", one))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print("| benchmark | hv-emu | peer | peer value | ratio |")
    print("|---|---|---|---|---|")
    modes: dict[str, Callable[[], list[Row]]] = {"--stamped": stamped_run,
                                                  "--stamp-cost": stamp_cost_rows}
    chosen = modes.get(" ".join(args), run)
    for row in chosen():
        print(row.markdown(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
