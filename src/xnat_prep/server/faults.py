"""Deterministic fault injection, to test clients' retry, resume and re-login paths.

SPEC (``--faults``, or ``PUT /xapi/xnatprep/faults`` with ``{"spec": SPEC}`` or the same keys as
a JSON object; ``GET`` shows the active plan, ``DELETE`` switches faults off; admin only)::

    seed=7,error=0.2,statuses=500:503:429,reset=0.05,truncate=0.05,latency=0.5,latency_ms=20,
    expire=0.01,path=/files

    seed        integer; same seed + same requests = same faults (default 0)
    error       fraction of requests answered with an error status instead of being served
    statuses    colon-separated statuses to pick from (default 500:502:503:429); 429 carries Retry-After
    reset       fraction of connections closed without any response
    truncate    fraction of responses whose body stops early (Content-Length promises more) and the
                connection closes
    latency     fraction of requests delayed by latency_ms (default 1 when latency_ms is given)
    latency_ms  delay in milliseconds
    expire      fraction of requests whose login session is expired first (the client gets a 401
                unless it also sent Basic credentials)
    path        regular expression (without commas); only request paths matching it (re.search)
                get faults
    answer      a hostile answer instead of a fault: html, wrong_digest, zip_slip, ... (the kinds
                and what each does: ``hostile.py``); every matching request gets it
    answer_rate fraction of the matching requests that get the hostile answer (default 1)

Determinism independent of thread interleaving: each decision is a hash of (seed, fault kind,
method, path, n), where n counts earlier requests with the same method and path. The faults
endpoint itself never gets faults.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from xnat_prep.errors import UserError
from xnat_prep.server import hostile

FAULTS_PATH = "/xapi/xnatprep/faults"  # the endpoint that sets the plan; never faulted itself
DEFAULT_STATUSES = (500, 502, 503, 429)
_RATES = ("error", "reset", "truncate", "latency", "expire")


@dataclass
class FaultPlan:
    seed: int = 0
    error: float = 0.0
    statuses: tuple[int, ...] = DEFAULT_STATUSES
    reset: float = 0.0
    truncate: float = 0.0
    latency: float = 0.0
    latency_ms: float = 0.0
    expire: float = 0.0
    path: str | None = None
    answer: str | None = None  # a hostile answer kind (hostile.KINDS)
    answer_rate: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "error": self.error,
            "statuses": list(self.statuses),
            "reset": self.reset,
            "truncate": self.truncate,
            "latency": self.latency,
            "latency_ms": self.latency_ms,
            "expire": self.expire,
            "path": self.path,
            "answer": self.answer,
            "answer_rate": self.answer_rate,
        }


def parse_spec(spec: str | dict[str, Any]) -> FaultPlan:
    """Parse a SPEC string (or the equivalent mapping); raises UserError on a bad key or value."""
    if isinstance(spec, str):
        items: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise UserError(f"--faults: '{part}' is not key=value")
            items[key.strip()] = value.strip()
    else:
        items = dict(spec)
    plan = FaultPlan()
    try:
        for key, value in items.items():
            if key == "seed":
                plan.seed = int(value)
            elif key == "statuses":
                values = value.split(":") if isinstance(value, str) else value
                plan.statuses = tuple(int(v) for v in values)
            elif key == "path":
                re.compile(value)
                plan.path = value or None
            elif key == "answer":
                if value not in hostile.KINDS:
                    raise UserError(f"--faults: answer={value} is not one of {', '.join(hostile.KINDS)}")
                plan.answer = value
            elif key in (*_RATES, "latency_ms", "answer_rate"):
                setattr(plan, key, float(value))
            else:
                raise UserError(f"--faults: unknown key '{key}'")
    except (ValueError, TypeError, re.error) as exc:
        raise UserError(f"--faults: bad value in {items}: {exc}") from exc
    if plan.latency_ms and "latency" not in items:
        plan.latency = 1.0
    for key in (*_RATES, "answer_rate"):
        if not 0.0 <= getattr(plan, key) <= 1.0:
            raise UserError(f"--faults: {key} must be a fraction between 0 and 1")
    return plan


@dataclass
class Decision:
    """What to do to one request."""

    status: int | None = None  # answer with this error instead of serving
    reset: bool = False
    truncate: bool = False
    delay_s: float = 0.0
    expire: bool = False
    answer: str | None = None  # a hostile answer kind
    kinds: list[str] = field(default_factory=list)


class Faults:
    """The active plan plus the per-(method, path) request counters (thread-safe)."""

    def __init__(self, plan: FaultPlan | None = None) -> None:
        self._lock = threading.Lock()
        self._plan = plan
        self._seen: Counter[tuple[str, str]] = Counter()

    @property
    def plan(self) -> FaultPlan | None:
        return self._plan

    def set_plan(self, plan: FaultPlan | None) -> None:
        with self._lock:
            self._plan = plan
            self._seen.clear()

    def decide(self, method: str, path: str) -> Decision:
        plan = self._plan
        if plan is None or (plan.path is not None and not re.search(plan.path, path)):
            return Decision()
        with self._lock:
            n = self._seen[(method, path)]
            self._seen[(method, path)] += 1

        def draw(kind: str) -> float:
            digest = hashlib.sha256(f"{plan.seed}|{kind}|{method}|{path}|{n}".encode()).digest()
            return int.from_bytes(digest[:8], "big") / 2**64

        d = Decision()
        if draw("reset") < plan.reset:
            d.reset = True
        elif draw("error") < plan.error:
            d.status = plan.statuses[int(draw("status") * len(plan.statuses))]
        elif draw("truncate") < plan.truncate:
            d.truncate = True
        if draw("latency") < plan.latency:
            d.delay_s = plan.latency_ms / 1000.0
        if draw("expire") < plan.expire:
            d.expire = True
        if plan.answer is not None and draw("answer") < plan.answer_rate:
            d.answer = plan.answer
        d.kinds = [
            k
            for k, on in (
                ("reset", d.reset),
                ("error", d.status is not None),
                ("truncate", d.truncate),
                ("latency", d.delay_s > 0),
                ("expire", d.expire),
                (f"answer:{d.answer}", d.answer is not None),
            )
            if on
        ]
        return d
