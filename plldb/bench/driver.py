"""The benchmark's client, in a process of its own: it invokes functions and plays the floor's layer.

It runs outside the local cloud's process so that its own work (building, signing and parsing
requests) never competes with the local cloud for that process's interpreter lock, exactly as a
function's layer runs in an execution environment of its own. ``python -m plldb.bench.driver`` reads
one JSON line of work on stdin, then, while it works, lines ``stored CALLER DELIVERY_ID`` (the floor's
answers, the instant the local cloud stores them: floor.StoredWatcher); it prints one JSON line of
results and exits.

Work modes:

* ``latency``: C threads each repeat rounds of the plain function, the target function and a floor
  round, interleaved so that machine load hits all three alike; the first rounds of each thread are
  warm-up (new execution environments) and not recorded;
* ``throughput``: C threads invoke one function until N invocations are done;
* ``payloads``: events of given sizes, echoed back, against the plain and the target function.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

WAIT_SECONDS = 120.0


class Failure(RuntimeError):
    """An invocation that did not answer as expected: counted and reported, never timed."""


class StoredEvents:
    """Keys the local cloud reported stored, and a waiter for each."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], threading.Event] = {}
        self._lock = threading.Lock()

    def expect(self, caller: str, delivery_id: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault((caller, delivery_id), threading.Event())

    def stored(self, caller: str, delivery_id: str) -> None:
        self.expect(caller, delivery_id).set()

    def forget(self, caller: str, delivery_id: str) -> None:
        with self._lock:
            self._events.pop((caller, delivery_id), None)

    def read(self, stream: Any) -> None:
        for line in stream:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "stored":
                self.stored(parts[1], parts[2])


class Driver:
    def __init__(self, work: dict[str, Any], stored: StoredEvents) -> None:
        import boto3
        from botocore.config import Config

        self.work = work
        self.stored = stored
        concurrency = int(work.get("concurrency") or 1)
        config = Config(
            max_pool_connections=max(16, concurrency * 4),
            connect_timeout=10,
            read_timeout=WAIT_SECONDS,
            retries={"total_max_attempts": 1},  # a failure is reported, not hidden
        )
        session = boto3.Session()
        self.lambda_client = session.client("lambda", config=config)
        self.dynamodb = session.client("dynamodb", config=config)
        self.floor: dict[str, Any] | None = work.get("floor")

    # --- one measurement each -----------------------------------------------------------------------
    def invoke(self, function_name: str, event: bytes, expect: str) -> float:
        started = time.perf_counter()
        response = self.lambda_client.invoke(FunctionName=function_name, Payload=event)
        body = response["Payload"].read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.get("FunctionError"):
            raise Failure(f"{function_name} failed: {body[:300].decode('utf-8', 'replace')}")
        wanted = json.loads(event) if expect == "echo" else json.loads(expect)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if answer != wanted:
            raise Failure(f"{function_name} answered {body[:200]!r}, not the expected answer")
        return elapsed

    def floor_round(self) -> dict[str, Any]:
        """The unavoidable hops, in milliseconds: put, dispatch (relay invocation), answer, read."""
        floor = self.floor
        assert floor is not None
        caller, delivery_id = floor["caller"], uuid.uuid4().hex
        stored = self.stored.expect(caller, delivery_id)
        message = dict(floor["message"], caller=caller, deliveryId=delivery_id)
        key = {"Caller": {"S": caller}, "DeliveryId": {"S": delivery_id}}
        item = {
            **key,
            "SessionId": {"S": floor["session_id"]},
            "RequestId": {"S": str(uuid.uuid4())},
            "FunctionName": {"S": caller.split(":", 1)[1]},
            "PayloadSha256": {"S": "0" * 64},
            "TTL": {"N": str(int(time.time()) + 3600)},
        }
        request = json.dumps({"caller": caller, "deliveryId": delivery_id, "message": message}).encode()
        started = time.perf_counter()
        self.dynamodb.put_item(
            TableName=floor["table"],
            Item=item,
            ConditionExpression="attribute_not_exists(#caller)",
            ExpressionAttributeNames={"#caller": "Caller"},
        )
        put_done = time.perf_counter()
        response = self.lambda_client.invoke(FunctionName=floor["relay"], Payload=request)
        relay_answer = response["Payload"].read()
        if response.get("FunctionError"):
            raise Failure(f"the floor's relay failed: {relay_answer[:300]!r}")
        dispatched = time.perf_counter()
        if not stored.wait(WAIT_SECONDS):
            raise Failure("the floor's answer was never stored")
        stored_at = time.perf_counter()
        answer = self.dynamodb.get_item(
            TableName=floor["table"],
            Key=key,
            ConsistentRead=True,
            ProjectionExpression="#code, #response",
            ExpressionAttributeNames={"#code": "ResponseCode", "#response": "Response"},
        ).get("Item")
        ended = time.perf_counter()
        self.stored.forget(caller, delivery_id)
        if not answer or answer.get("Response") != {"S": floor["answer"]}:
            raise Failure(f"the floor read {answer}")
        return {
            "delivery_id": delivery_id,
            "total": (ended - started) * 1000,
            "put": (put_done - started) * 1000,
            "dispatch": (dispatched - put_done) * 1000,
            "answer": (stored_at - dispatched) * 1000,
            "read": (ended - stored_at) * 1000,
        }

    # --- modes -----------------------------------------------------------------------------------------
    def latency(self) -> dict[str, Any]:
        work = self.work
        concurrency = int(work["concurrency"])
        rounds = int(work["rounds"])
        event = str(work["event"]).encode("utf-8")
        expect = str(work["expect"])
        plain, target = work.get("plain"), work.get("target")
        results: dict[str, Any] = {
            "plain": [],
            "target": [],
            "floor": [],
            "floor_hops": {"put": [], "dispatch": [], "answer": [], "read": []},
            # time.monotonic() at start and end (and a floor round's delivery id), for timeline.py
            "spans": {"target": [], "floor": []},
            "failures": [],
        }
        lock = threading.Lock()

        def one_round(record: bool) -> None:
            measured: list[tuple[str, float]] = []
            spans: list[tuple[str, list[float]]] = []
            failures: list[str] = []
            hops: dict[str, Any] = {}
            for name, function in (("plain", plain), ("target", target)):
                if function:
                    try:
                        started = time.monotonic()
                        measured.append((name, self.invoke(function, event, expect)))
                        spans.append((name, [started, time.monotonic()]))
                    except Failure as exc:
                        failures.append(f"{name}: {exc}")
            if self.floor is not None:
                try:
                    started = time.monotonic()
                    hops = self.floor_round()
                    spans.append(("floor", [started, time.monotonic(), hops.pop("delivery_id")]))
                    measured.append(("floor", hops.pop("total")))
                except Failure as exc:
                    failures.append(f"floor: {exc}")
            if record:
                with lock:
                    for name, value in measured:
                        results[name].append(value)
                    for name, span in spans:
                        if name in results["spans"]:
                            results["spans"][name].append(span)
                    for hop, value in hops.items():
                        results["floor_hops"][hop].append(value)
                    results["failures"].extend(failures)

        per_thread = [
            rounds // concurrency + (1 if i < rounds % concurrency else 0) for i in range(concurrency)
        ]
        warm_up = int(work.get("warm_up_rounds_per_thread") or 0)

        def rounds_of(count: int, record: bool) -> None:
            for _ in range(count):
                one_round(record)

        in_parallel(concurrency, lambda i: rounds_of(warm_up, False))
        started = time.perf_counter()
        in_parallel(concurrency, lambda i: rounds_of(per_thread[i], True))
        results["seconds"] = time.perf_counter() - started
        return results

    def throughput(self) -> dict[str, Any]:
        work = self.work
        concurrency, total = int(work["concurrency"]), int(work["rounds"])
        event = str(work["event"]).encode("utf-8")
        remaining = [total]
        failures: list[str] = []
        lock = threading.Lock()

        def thread(_: int) -> None:
            while True:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                try:
                    self.invoke(str(work["target"]), event, str(work["expect"]))
                except Failure as exc:
                    with lock:
                        failures.append(str(exc))

        started = time.perf_counter()
        in_parallel(concurrency, thread)
        seconds = time.perf_counter() - started
        return {"invocations": total, "seconds": seconds, "per_second": total / seconds, "failures": failures}

    def payloads(self) -> dict[str, Any]:
        work = self.work
        results: dict[str, Any] = {}
        for label, size in work["sizes"].items():
            event = event_of_size(int(size)).decode("utf-8")
            entry: dict[str, Any] = {"plain": [], "target": [], "failures": []}
            for _ in range(int(work["repetitions"])):
                for name in ("plain", "target"):
                    try:
                        entry[name].append(self.invoke(str(work[name]), event.encode("utf-8"), "echo"))
                    except Failure as exc:
                        entry["failures"].append(f"{name}: {exc}"[:400])
            results[label] = entry
        return results

    def run(self) -> dict[str, Any]:
        mode = self.work["mode"]
        if mode == "latency":
            return self.latency()
        if mode == "throughput":
            return self.throughput()
        if mode == "payloads":
            return self.payloads()
        raise ValueError(f"unknown mode {mode!r}")


def event_of_size(size: int) -> bytes:
    """A JSON object whose text is exactly ``size`` bytes."""
    shell = b'{"data":""}'
    return b'{"data":"' + b"x" * (size - len(shell)) + b'"}'


def in_parallel(count: int, work: Any) -> None:
    with ThreadPoolExecutor(max_workers=count) as pool:
        for future in [pool.submit(work, index) for index in range(count)]:
            future.result()


def main() -> int:
    work = json.loads(sys.stdin.readline())
    stored = StoredEvents()
    threading.Thread(target=stored.read, args=(sys.stdin,), daemon=True).start()
    result = Driver(work, stored).run()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
