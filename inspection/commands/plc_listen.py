"""`steel-inspect plc-listen`: the reference subscriber for PLC / L2 integrators.

Prints every message on one line, checks it against the shipped JSON Schema, reports sequence
gaps per topic as they happen and a summary at exit. Exit status: 0 when every message was
valid, 1 when an invalid message was seen, 3 when ``--count`` messages did not arrive within
``--timeout`` seconds. Gaps do not change the exit status: a PUB socket drops for a slow subscriber by
design; the gap report is how you see it.

Where and with which keys: ``--config F`` takes the endpoint (``endpoints.plc``) and the CURVE keys
(the PLC client pair ``plc/plc`` and the recorder's public key, from ``[security] keys_dir``) from
the line config; ``--connect EP`` replaces the endpoint; ``--keys DIR`` names a key folder of the
same layout (also without ``--config``, for a machine that has the keys but not the config).
``--connect`` alone subscribes without CURVE, which only a line with ``curve = false`` serves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import zmq

from inspection.arguments import endpoint as endpoint_type
from inspection.arguments import positive_float, positive_int
from inspection.curve import Curve
from inspection.errors import ConfigError, TransportError
from inspection.schemas import TOPICS, load_schema
from inspection.schemas import validate as builtin_validate
from inspection.transport import Endpoint, Subscriber, parse_endpoint, peer_endpoint

EXIT_INVALID, EXIT_INCOMPLETE = 1, 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plc-listen", help="subscribe to the PLC output, print and validate messages, report sequence gaps",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, metavar="F",
                        help="line config: the endpoint and the CURVE keys of its PLC output")
    parser.add_argument("--connect", type=endpoint_type, metavar="ENDPOINT",
                        help="the publisher's endpoint, e.g. tcp://127.0.0.1:5570 (instead of the config's); "
                             "alone, without --config or --keys: no CURVE")
    parser.add_argument("--keys", type=Path, metavar="DIR",
                        help="CURVE key folder (layout of `steel-inspect keys generate`; default: the config's)")
    parser.add_argument("--topic", action="append", choices=TOPICS, metavar="T",
                        help=f"only this topic ({', '.join(TOPICS)}); repeat for several; default all")
    parser.add_argument("--count", type=positive_int, metavar="N", help="exit after N messages")
    parser.add_argument("--timeout", type=positive_float, metavar="S",
                        help="exit after S seconds in all (a deadline: heartbeats never let a link go idle)")
    parser.add_argument("--json", action="store_true", help="print each message as its JSON, summary as JSON")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from inspection.line.process import StopFlag

    endpoint, curve = _link(args)
    with PlcListener(endpoint, args.topic, curve=curve) as listener:
        summary = listener.run(count=args.count, timeout=args.timeout, as_json=args.json,
                               stop=StopFlag().is_set)
    return summary["exit_status"]


def _link(args: argparse.Namespace) -> tuple[str | Endpoint, Curve | None]:
    """The endpoint and keys to subscribe with (the module docstring says which option wins)."""
    from inspection.config import load_config, warn_if_curve_off
    from inspection.security import curve_for, side_curve

    endpoint: Endpoint | None = None
    if args.connect is not None:  # its form was checked when it was parsed (`inspection.arguments.endpoint`)
        endpoint = parse_endpoint(args.connect, "connect")
    if args.config is not None:
        config = load_config(args.config)
        warn_if_curve_off(config)
        endpoint = endpoint or peer_endpoint(config.endpoints.plc)
        return endpoint, curve_for(config, "plc", "plc", [endpoint], keys_dir=args.keys)
    if endpoint is None:
        raise ConfigError("give --config F (endpoint and keys from the line config) or --connect ENDPOINT")
    if args.keys is not None:
        return endpoint, side_curve(args.keys, "plc", "plc", [endpoint])
    print("plc-listen: no keys (--config or --keys): subscribing without CURVE; a line with CURVE on "
          "(the default) sends nothing to this subscriber", file=sys.stderr)
    return endpoint, None


@dataclass
class SequenceTracker:
    """Per-topic sequence numbers: gaps (lost messages), restarts of the publisher and replays.

    A publisher with an ``epoch`` (the recorder) continues ``seq`` across its restarts: a higher epoch
    is a restart; a ``seq`` that does not rise within an epoch, or an older epoch, is a replay (or a
    second publisher on the same endpoint). Without an epoch, ``seq`` going back is taken for a restart.
    """

    last: dict[str, int] = field(default_factory=dict)
    first: dict[str, int] = field(default_factory=dict)
    epoch: dict[str, int] = field(default_factory=dict)
    gaps: Counter = field(default_factory=Counter)
    missing: Counter = field(default_factory=Counter)
    restarts: Counter = field(default_factory=Counter)
    replays: Counter = field(default_factory=Counter)

    def observe(self, topic: str, seq: int, epoch: int | None = None) -> str | None:
        """Record `seq` (of publisher start `epoch`); a one-line report when it is not the expected next one."""
        previous, was = self.last.get(topic), self.epoch.get(topic)
        if previous is None:
            self._note(topic, seq, epoch)
            self.first[topic] = seq
            return None  # joining late is not a gap: nothing was promised before the first message
        if epoch is not None and was is not None and epoch < was:
            self.replays[topic] += 1  # not noted: the newer publisher's numbers stay the reference
            return f"{topic} seq {seq} of epoch {epoch} after epoch {was}: a replay, or a second publisher"
        # a first epoch after messages without one: the publisher was upgraded and restarted
        restarted = epoch is not None and (was is None or epoch > was)
        if not restarted and epoch is not None and seq <= previous:
            self.replays[topic] += 1
            return f"{topic} seq {seq} again in epoch {epoch} (had {previous}): a replay, or a second publisher"
        self._note(topic, seq, epoch)
        expected = previous + 1
        if restarted and seq < expected:  # a publisher that kept no ledger: it counts from 1 again
            self.restarts[topic] += 1
            return f"{topic}: publisher restarted (epoch {was or '-'} -> {epoch}), seq back from {previous} to {seq}"
        restart = f"publisher restarted (epoch {was or '-'} -> {epoch}), " if restarted else ""
        self.restarts[topic] += restarted
        if seq == expected:
            return f"{topic}: {restart}seq continues at {seq}" if restarted else None
        if seq > expected:
            self.gaps[topic] += 1
            self.missing[topic] += seq - expected
            return f"{restart}gap on {topic}: expected seq {expected}, got {seq} ({seq - expected} missing)"
        self.restarts[topic] += 1
        return f"seq on {topic} went back from {previous} to {seq} (publisher restarted?)"

    def _note(self, topic: str, seq: int, epoch: int | None) -> None:
        self.last[topic] = seq
        if epoch is not None:
            self.epoch[topic] = epoch


def _validator() -> tuple[str, Callable[[str, Any], list[str]]]:
    """The full `jsonschema` library when installed, else the built-in subset validator."""
    try:
        from jsonschema import Draft202012Validator
    except ImportError:
        return "builtin", builtin_validate
    checkers = {t: Draft202012Validator(load_schema(t)) for t in TOPICS}

    def check(topic: str, message: Any) -> list[str]:
        return [f"{'.'.join(map(str, e.absolute_path)) or 'message'}: {e.message}"
                for e in checkers[topic].iter_errors(message)]

    return "jsonschema", check


class PlcListener:
    """A SUB socket on the PLC output; `receive` one message or `run` the print-and-check loop."""

    def __init__(self, endpoint: str | Endpoint, topics: Iterable[str] | None = None, *,
                 context: zmq.Context | None = None, rcvhwm: int = 100_000,
                 socket_options: Mapping[int, int] | None = None, curve: Curve | None = None) -> None:
        """`curve`: this subscriber's keys (None: plain ZeroMQ); see `from_config`."""
        self.topics = tuple(topics or ())
        self.validator_name, self._validate = _validator()
        self.tracker = SequenceTracker()
        self.received: Counter = Counter()
        self.invalid = 0
        try:
            self._subscriber = Subscriber(endpoint, self.topics or ("",), hwm=rcvhwm, options=socket_options,
                                          context=context, curve=curve)
        except TransportError as exc:
            raise TransportError(f"--connect {endpoint!r}: {exc}") from None
        self.endpoint = self._subscriber.endpoint.address

    @classmethod
    def from_config(cls, config: Any, topics: Iterable[str] | None = None, **kwargs: Any) -> PlcListener:
        """A listener on the line's PLC output with the PLC client keys of its key folder."""
        from inspection.security import curve_for

        endpoint = peer_endpoint(config.endpoints.plc)
        return cls(endpoint, topics, curve=curve_for(config, "plc", "plc", [endpoint]), **kwargs)

    def receive(self, timeout: float) -> list[bytes] | None:
        """The next raw multipart message, or None after `timeout` seconds."""
        return self._subscriber.recv(timeout)

    def check(self, parts: list[bytes]) -> tuple[str, dict[str, Any] | None, list[str]]:
        """(topic, message or None, problems) for one raw message; tracks sequence numbers."""
        topic = parts[0].decode("ascii", "replace") if parts else "?"
        if len(parts) != 2:
            return topic, None, [f"expected 2 frames [topic, json], got {len(parts)}"]
        if topic not in TOPICS:
            return topic, None, [f"unknown topic {topic!r}"]
        try:
            message = json.loads(parts[1])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return topic, None, [f"body is not JSON: {exc}"]
        problems = self._validate(topic, message)  # the schema's const also ties body topic to frame topic
        return topic, message if isinstance(message, dict) else None, problems

    def run(self, *, count: int | None = None, timeout: float | None = None, as_json: bool = False,
            out: TextIO | None = None, err: TextIO | None = None,
            stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Receive, print and check until `count` messages, `timeout` seconds in all, or `stop()`."""
        out, err = out or sys.stdout, err or sys.stderr
        total, timed_out = 0, False
        deadline = None if timeout is None else time.monotonic() + timeout
        while (count is None or total < count) and not stop():
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if left <= 0:
                timed_out = True
                break
            parts = self.receive(left)
            if parts is None:
                continue
            total += 1
            topic, message, problems = self.check(parts)
            self.received[topic] += 1
            if message is not None and isinstance(message.get("seq"), int):
                epoch = message.get("epoch")
                report = self.tracker.observe(topic, message["seq"], epoch if isinstance(epoch, int) else None)
                if report:
                    print(report, file=err, flush=True)
            if problems:
                self.invalid += 1
                seq = message.get("seq") if message else None
                print(f"invalid {topic} message (seq {seq}): {'; '.join(problems[:5])}", file=err, flush=True)
            if message is not None:
                print(json.dumps(message, separators=(",", ":")) if as_json else format_message(message),
                      file=out, flush=True)
        summary = self.summary(total, timed_out and count is not None)
        text = json.dumps(summary, sort_keys=True) if as_json else _format_summary(summary)
        print(text, file=err, flush=True)
        return summary

    def summary(self, total: int, incomplete: bool) -> dict[str, Any]:
        status = EXIT_INVALID if self.invalid else EXIT_INCOMPLETE if incomplete else 0
        t = self.tracker
        return {"endpoint": self.endpoint, "topics": list(self.topics) or list(TOPICS), "messages": total,
                "received": dict(self.received), "invalid": self.invalid, "gaps": dict(t.gaps),
                "missing": dict(t.missing), "restarts": dict(t.restarts), "replays": dict(t.replays),
                "first_seq": dict(t.first), "last_seq": dict(t.last), "epoch": dict(t.epoch),
                "validator": self.validator_name, "exit_status": status}

    def close(self) -> None:
        self._subscriber.close()

    def __enter__(self) -> PlcListener:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def format_message(message: dict[str, Any]) -> str:
    """One human line per message: time, topic, seq and the fields an operator looks at first.

    Numbers are rounded for reading (millimetres to 0.1, scores to 0.001, coverage in % to 0.01);
    ``--json`` prints the message as received, at full precision."""
    m = message.get
    epoch = f" epoch {m('epoch')}" if m("epoch") is not None else ""
    head = f"{m('time')} {m('topic', '?'):<9} #{m('seq')}{epoch}"
    topic = m("topic")
    if topic == "defect":
        body = (f"coil={m('coil')} {m('surface')} class={m('class')} sev={m('severity')} "
                f"score={_num(m('score'), 3)} along={_num(m('along_mm'), 1)}mm across={_num(m('across_mm'), 1)}mm "
                f"size={_num(m('length_mm'), 1)}x{_num(m('width_mm'), 1)}mm")
    elif topic == "coil":
        coverage = m("coverage")
        shown = f"{coverage * 100:.2f}%" if _is_number(coverage) else coverage
        body = (f"coil={m('coil')} {m('event')} grade={m('grade')} coverage={shown} "
                f"defects={m('defects_total')} reasons={m('reasons')}")
    elif topic == "alarm":
        body = f"{m('kind')} sev={m('severity')} coil={m('coil')}: {m('message')}"
    else:
        counters = m("counters")
        if isinstance(counters, dict):
            counters = {k: round(v, 3) if isinstance(v, float) else v for k, v in counters.items()}
        body = (f"{m('process')} {m('status')} uptime={_num(m('uptime_s'), 1)}s "
                f"counters={json.dumps(counters, separators=(',', ':'))}")
    return f"{head} {body}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _num(value: Any, decimals: int) -> Any:
    """`value` with `decimals` decimals when it is a number; anything else (a malformed message) as is."""
    return f"{value:.{decimals}f}" if _is_number(value) else value


def _format_summary(summary: dict[str, Any]) -> str:
    lines = [f"plc-listen: {summary['messages']} messages from {summary['endpoint']} "
             f"({summary['invalid']} invalid, validator {summary['validator']})"]
    for topic in summary["topics"]:
        lines.append(f"  {topic:<9} received {summary['received'].get(topic, 0)}, "
                     f"seq {summary['first_seq'].get(topic, '-')}..{summary['last_seq'].get(topic, '-')}, "
                     f"{summary['gaps'].get(topic, 0)} gaps ({summary['missing'].get(topic, 0)} missing), "
                     f"{summary['restarts'].get(topic, 0)} restarts, {summary['replays'].get(topic, 0)} replays")
    return "\n".join(lines)
