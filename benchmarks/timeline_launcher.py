"""bench_timeline.py's proxies: the bundle (TIMELINE_BUNDLE=1) or mitmdump with
only tokenaddons.lean, between two probes, first and last in the chain, that
note each flow's moments (wall and event-loop CPU clocks) and write them to
$TIMELINE_OUT when mitmdump stops."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from lean_launcher import Lean  # noqa: E402

MOMENTS: dict[str, dict[str, int]] = {}  # flow id -> moment -> ns
DONE: list[dict[str, int]] = []


def note(flow, moment: str) -> None:
    found = MOMENTS.get(flow.id)
    if found is not None:
        found[moment], found[moment + " cpu"] = time.perf_counter_ns(), time.thread_time_ns()


class First:
    def requestheaders(self, flow) -> None:
        MOMENTS[flow.id] = {}
        note(flow, "request headers read")

    def request(self, flow) -> None:
        note(flow, "request read")

    def responseheaders(self, flow) -> None:
        note(flow, "response headers read")

    def response(self, flow) -> None:
        note(flow, "response read")

    def done(self) -> None:
        with open(os.environ["TIMELINE_OUT"], "w") as f:
            json.dump(DONE, f)


class Last:
    def request(self, flow) -> None:
        note(flow, "request hooks done")

    def response(self, flow) -> None:
        note(flow, "response hooks done")
        DONE.append(MOMENTS.pop(flow.id, {}))


if os.environ.get("TIMELINE_BUNDLE"):
    from tokenaddons.bundle import addons as _addons  # noqa: E402
    from tokenaddons.bundle import loaded  # noqa: E402

    addons = [First(), *loaded(_addons()), Last()]
else:
    addons = [First(), Lean(), Last()]
