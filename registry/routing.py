"""Plan-directed routing: the gateway splits a demand class as the scaler planned it.

The scaler's planner sizes replicas for a *split* of each demand class between variants
(say 70 % of a class on a CPU variant, 30 % on a GPU one). The paper's selector sends every
query of a class to the single cheapest running variant until that variant is Overloaded,
then to the next one, and back once it recovers: the cheap variant is pushed into overload
again and again, and each time its queue's queries come back late. With routes, the
gateway follows the plan instead: a class the plan puts on one variant goes to that variant
(not to a cheaper one the plan keeps for other classes or is retiring), and among the routed
variants that are running and eligible, queries are dealt out in proportion to their
planned rates by smooth weighted round-robin (deterministic, no randomness, even spacing).
Variants not running yet are left out and their share goes to the others; a class with no
usable route is served by the paper's rule.

Pure: :class:`Routes` is read from the plan document the scaler publishes; the
:class:`RoundRobin` state lives in the gateway's selector index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Route = tuple[tuple[str, float], ...]  # (variant id, planned queries per second)


@dataclass(frozen=True)
class Routes:
    """Per demand class, the variants the plan routes it to and at what rate."""

    by_class: Mapping[str, Route] = field(default_factory=dict)

    def get(self, key: str) -> Route | None:
        return self.by_class.get(key)

    def __bool__(self) -> bool:
        return bool(self.by_class)

    @classmethod
    def from_routing(cls, routing: Mapping[tuple[str, str], float]) -> Routes:
        """From a planner's ``(class key, variant) -> qps``."""
        grouped: dict[str, list[tuple[str, float]]] = {}
        for (key, vid), qps in sorted(routing.items()):
            if qps > 0:
                grouped.setdefault(key, []).append((vid, float(qps)))
        return cls({k: tuple(v) for k, v in grouped.items()})

    def to_doc(self) -> dict[str, list[dict[str, Any]]]:
        return {
            key: [{"variant": vid, "qps": round(qps, 3)} for vid, qps in route]
            for key, route in sorted(self.by_class.items())
        }

    @classmethod
    def from_doc(cls, doc: object) -> Routes:
        """From the ``routes`` of a published plan; anything malformed is left out (a
        class without a route is still served, by the selector's own rule)."""
        if not isinstance(doc, Mapping):
            return cls()
        out: dict[str, Route] = {}
        for key, items in doc.items():
            if not isinstance(key, str) or not isinstance(items, list):
                continue
            route = []
            for item in items:
                if not isinstance(item, Mapping):
                    continue
                vid, qps = item.get("variant"), item.get("qps")
                if isinstance(vid, str) and isinstance(qps, int | float) and qps > 0:
                    route.append((vid, float(qps)))
            if route:
                out[key] = tuple(route)
        return cls(out)


class RoundRobin:
    """Smooth weighted round-robin per class (nginx's): each pick, every candidate gains
    its weight and the one with the most credit is chosen and pays the total. Over any
    window the picks follow the weights, spread evenly rather than in runs."""

    def __init__(self) -> None:
        self._credit: dict[str, dict[str, float]] = {}

    def pick(self, key: str, candidates: Sequence[tuple[str, float]]) -> str:
        if not candidates:
            raise ValueError("pick needs at least one candidate")
        credit = self._credit.setdefault(key, {})
        if set(credit) != {vid for vid, _ in candidates}:
            credit.clear()  # the candidates changed: start the rotation again
            credit.update({vid: 0.0 for vid, _ in candidates})
        total = 0.0
        best, best_credit = candidates[0][0], -float("inf")
        for vid, weight in candidates:
            credit[vid] += weight
            total += weight
            if credit[vid] > best_credit:
                best, best_credit = vid, credit[vid]
        credit[best] -= total
        return best
