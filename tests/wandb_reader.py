"""Read a W&B offline run file (`run-<id>.wandb`) into its protobuf records.

wandb 0.31 dropped its Python reader of the transaction log (the writer is the Go core), so this
decodes the framing - LevelDB's log format behind a 7-byte W&B header - and parses each record with
W&B's own protobuf definitions (`wandb.proto.wandb_internal_pb2.Record`).
"""

from __future__ import annotations

import json
import struct

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str) -> list:
    data = open(path, "rb").read()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    out, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            pending += chunk
        rec = pb.Record()
        rec.ParseFromString(pending)
        out.append(rec)
    return out


def summarize(path: str) -> dict:
    """The parts tests check: run identity, config, metric definitions, history rows, summary."""
    run, config, metrics, history, summary = None, {}, {}, [], {}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run = {"id": r.run.run_id, "name": r.run.display_name, "group": r.run.run_group,
                   "job_type": r.run.job_type, "project": r.run.project}
            config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "metric":
            metrics[r.metric.name or r.metric.glob_name] = r.metric.step_metric
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
    return {"run": run, "config": config, "metrics": metrics, "history": history, "summary": summary}
