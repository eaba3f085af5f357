"""The result: targets checked against figures, a table for people and a JSON document for machines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _get(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _at_most(value: float | None, limit: float | None) -> bool | None:
    if value is None or limit is None:
        return None
    return value <= limit


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Issues 8 and 15's targets, each with the measured figure, the limit and whether it holds (None: not measured)."""
    f = doc["figures"]
    busy = f.get("busy_node") or {}
    cd1 = _get(f, "create_delete.c1.p50_ms")
    cd_floor = _get(doc, "floors.create_delete_pair_ms")
    iso = f.get("isolation") or {}
    burst = f.get("burst_create") or {}
    rows = [
        ("CreateVolume+DeleteVolume pair p50, c=1", cd1, 1.5, "ms"),
        ("CreateVolume+DeleteVolume pair p50 / floor, c=1", _ratio(cd1, cd_floor), 1.5, "x"),
        ("NodePublish+NodeUnpublish pair p50, c=1", _get(f, "publish_unpublish.c1.p50_ms"), 5.0, "ms"),
        ("RSS idle", f.get("rss_idle_mib"), 45.0, "MiB"),
        (f"RSS after {f.get('ops_for_rss', 0):,} operations", f.get("rss_after_ops_mib"), 60.0, "MiB"),
        ("start to ready", f.get("start_to_ready_s"), 1.0, "s"),
        (f"burst of {burst.get('size', 0)} CreateVolume: failures", burst.get("failures"), 0, ""),
        (f"burst of {burst.get('size', 0)} CreateVolume p99", burst.get("p99_ms"), 1000.0, "ms"),
        ("isolation: publish p50 with a hung mount / without", iso.get("ratio"), 1.2, "x"),
        (
            "busy node: NodePublish+NodeUnpublish p50 / empty node's, c=1",
            _ratio(_get(busy, "publish_unpublish.c1.p50_ms"), _get(f, "publish_unpublish.c1.p50_ms")), 1.2, "x",
        ),
        (f"busy node: RSS after {busy.get('calls_for_rss', 0):,} calls", busy.get("rss_after_calls_mib"), 60.0, "MiB"),
    ]
    versus = doc.get("versus")
    if versus:
        vb = versus.get("busy_node") or {}

        def p50(figures: dict[str, Any], key: str) -> float | None:
            return _get(figures, f"{key}.c1.p50_ms")

        def rate(figures: dict[str, Any], key: str) -> float | None:
            return _get(figures, f"{key}.c16.throughput_per_s")

        rows += [
            ("versus: empty node, publish pair p50 c=1, first / versus", _ratio(p50(f, "publish_unpublish"), p50(versus, "publish_unpublish")), 1.0, "x"),
            ("versus: busy node, publish pair p50 c=1, first / versus", _ratio(p50(busy, "publish_unpublish"), p50(vb, "publish_unpublish")), 1.0, "x"),
            ("versus: empty node, publish pairs/s c=16, versus / first", _ratio(rate(versus, "publish_unpublish"), rate(f, "publish_unpublish")), 1.0, "x"),
            ("versus: busy node, publish pairs/s c=16, versus / first", _ratio(rate(vb, "publish_unpublish"), rate(busy, "publish_unpublish")), 1.0, "x"),
            ("versus: create+delete pair p50 c=1, first / versus", _ratio(p50(f, "create_delete"), p50(versus, "create_delete")), 0.2, "x"),
            ("versus: create+delete pairs/s c=16, versus / first", _ratio(rate(versus, "create_delete"), rate(f, "create_delete")), 0.5, "x"),
        ]
    return [
        {"target": name, "measured": value, "at_most": limit, "unit": unit, "holds": _at_most(value, limit)}
        for name, value, limit, unit in rows
    ]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _n(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        text = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
        return f"{text} {unit}".rstrip()
    return str(value)


def table(doc: dict[str, Any]) -> str:
    m, s, fl, f = doc["machine"], doc["settings"], doc["floors"], doc["figures"]
    out = []
    out.append(f"CSI benchmark: {doc['driver']['description']}")
    out.append(
        f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, grpcio {m['grpcio']}"
    )
    out.append(
        f"each figure is the median of {s['repeat']} runs; warm-up excluded; latencies are whole pairs, "
        f"measured by the client over the socket"
    )
    out.append(
        f"load average at start {m.get('loadavg_at_start', '?')}, at end {m.get('loadavg_at_end', '?')} "
        f"(other work on the machine shows here); commit {m.get('commit') or '?'}; {doc['when']}"
    )
    out.append("")
    out.append("Floors (same machine, same run)")
    rtt = fl["grpc_empty_round_trip"]
    out.append(f"  {'empty gRPC round trip, c=1':<46} p50 {_n(rtt['p50_ms'], 'ms', 3):>10}   p99 {_n(rtt['p99_ms'], 'ms', 3)}")
    out.append(f"  {'bare mkdir+rmdir on the export':<46} p50 {_n(fl['mkdir_rmdir']['p50_ms'], 'ms', 3):>10}   p99 {_n(fl['mkdir_rmdir']['p99_ms'], 'ms', 3)}")
    out.append(
        f"  {'bare subprocess mount+umount (the stand-in)':<46} p50 {_n(fl['mount_umount']['p50_ms'], 'ms', 3):>10}"
        f"   p99 {_n(fl['mount_umount']['p99_ms'], 'ms', 3)}"
        f"   (mount {_n(fl['mount_alone']['p50_ms'], 'ms', 2)}, umount {_n(fl['umount_alone']['p50_ms'], 'ms', 2)})"
    )
    out.append(f"  {'empty gRPC server, RSS idle':<46} {_n(fl['grpc_empty_server_rss_idle_mib'], 'MiB', 1):>14}   (grpcio + the CSI protobuf, nothing else)")
    out.append(f"  {'CreateVolume+DeleteVolume floor':<46} {_n(fl['create_delete_pair_ms'], 'ms', 3):>14}   (2 round trips + mkdir+rmdir)")
    out.append(f"  {'NodePublish+NodeUnpublish floor':<46} {_n(fl['publish_unpublish_pair_ms'], 'ms', 3):>14}   (2 round trips + mount+umount)")
    out.append("")
    head = f"  {'pairs':<28}{'c':>4}{'pairs/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}   {'floor ms':>9}{'x floor':>8}{'floor pairs/s':>15}"
    out.append(head)
    for key, label, floor_key in (
        ("create_delete", "CreateVolume+DeleteVolume", "create_delete_pair_ms"),
        ("publish_unpublish", "NodePublish+NodeUnpublish", "publish_unpublish_pair_ms"),
    ):
        for level, run in f[key].items():
            c = int(level[1:])
            floor = fl[floor_key]
            ceiling = _get(fl, f"grpc_empty_pairs.{level}.throughput_per_s")
            out.append(
                f"  {label:<28}{c:>4}{_n(run['throughput_per_s'], '', 1):>10}{_n(run['p50_ms']):>9}{_n(run['p95_ms']):>9}"
                f"{_n(run['p99_ms']):>9}{run['errors']:>8}   {_n(floor):>9}{_n(_ratio(run['p50_ms'], floor)):>8}"
                f"{_n(ceiling, '', 1):>15}"
            )
    out.append("  (floor pairs/s: pairs of empty gRPC round trips at the same concurrency, the gRPC stack's own ceiling)")
    out.append("")
    burst, iso = f["burst_create"], f["isolation"]
    codes = ", ".join(f"{n} {code}" for code, n in sorted(burst["results"].items())) or "none"
    rows = [
        (f"burst of {burst['size']} concurrent CreateVolume", f"{codes} (of {burst['calls']} calls)", ""),
        ("  burst latency p50 / p99 / max", f"{_n(burst['p50_ms'])} / {_n(burst['p99_ms'])} / {_n(burst['max_ms'])} ms", ""),
        ("isolation: other volumes' publish p50", f"{_n(iso['baseline_p50_ms'])} ms without, {_n(iso['hung_p50_ms'])} ms with one mount hung",
         f"{_n(iso['ratio'], 'x', 3)}"),
        ("  the hung publish stayed hung throughout", _n(iso["hung_publish_stayed_hung"]), ""),
        ("start to ready (process start to first Probe OK)", _n(f["start_to_ready_s"], "s", 3), ""),
        ("RSS idle (/proc/PID/status VmRSS)", _n(f["rss_idle_mib"], "MiB", 1),
         f"floor: the empty gRPC server's {_n(fl['grpc_empty_server_rss_idle_mib'], 'MiB', 1)}"),
        ("  RSS idle by --mode: all / controller / node",
         " / ".join(_n((f.get("rss_idle_by_mode_mib") or {}).get(m), "", 1) for m in ("all", "controller", "node")) + " MiB", ""),
        (f"RSS after {f['ops_for_rss']:,} operations", _n(f["rss_after_ops_mib"], "MiB", 1), ""),
        (f"RSS at the end ({f['ops_at_end']:,} operations)", _n(f["rss_at_end_mib"], "MiB", 1), ""),
    ]
    for label, value, extra in rows:
        out.append(f"  {label:<50} {value}{'   ' + extra if extra else ''}")
    if f.get("busy_node"):
        out.extend(busy_table(f["busy_node"], f))
    if doc.get("versus"):
        out.extend(versus_table(f, doc["versus"]))
    out.append("")
    out.append("Targets (issues 8 and 15)")
    for t in doc["targets"]:
        verdict = {True: "holds", False: "MISSED", None: "not measured"}[t["holds"]]
        out.append(f"  {t['target']:<52} {_n(t['measured'], t['unit'], 3):>14}  <= {_n(t['at_most'], t['unit'], 1):<10} {verdict}")
    held = sum(1 for t in doc["targets"] if t["holds"])
    out.append(f"  {held} of {len(doc['targets'])} targets hold")
    return "\n".join(out)


def busy_table(busy: dict[str, Any], f: dict[str, Any]) -> list[str]:
    out = ["", f"Busy node: {busy['mounts']:,} tmpfs mounts added ({busy['mounts_in_table']:,} mounts in the namespace's table)"]
    fl = busy["mount_umount_floor"]
    out.append(f"  {'bare subprocess mount+umount (the stand-in)':<46} p50 {_n(fl['p50_ms'], 'ms', 3):>10}   p99 {_n(fl['p99_ms'], 'ms', 3)}")
    out.append(f"  {'pairs':<28}{'c':>4}{'pairs/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}   {'empty p50':>9}{'busy/empty':>11}")
    for key, label in (("create_delete", "CreateVolume+DeleteVolume"), ("publish_unpublish", "NodePublish+NodeUnpublish")):
        for level, run in busy[key].items():
            empty = _get(f, f"{key}.{level}.p50_ms")
            out.append(
                f"  {label:<28}{int(level[1:]):>4}{_n(run['throughput_per_s'], '', 1):>10}{_n(run['p50_ms']):>9}"
                f"{_n(run['p95_ms']):>9}{_n(run['p99_ms']):>9}{run['errors']:>8}   {_n(empty):>9}{_n(_ratio(run['p50_ms'], empty)):>11}"
            )
    st = busy["stats"]
    calls = st["stats"]
    out.append(
        f"  NodeGetVolumeStats, {st['published']:,} of {st['volumes']:,} volumes published, c={st['concurrency']}: "
        f"p50 / p95 / p99 / max {_n(calls['p50_ms'], '', 3)} / {_n(calls['p95_ms'], '', 3)} / {_n(calls['p99_ms'], '', 3)} / "
        f"{_n(calls['max_ms'], 'ms', 3)}, {_n(calls['throughput_per_s'], 'calls/s', 1)}, "
        f"{calls['count']:,} OK, {calls['errors']} not ({', '.join(f'{n} {c}' for c, n in calls['error_codes'].items()) or 'none'})"
    )
    out.append(
        f"    its {st['published']:,} NodePublish / NodeUnpublish at c=16: p50 {_n(st['publish']['p50_ms'], 'ms')} / "
        f"{_n(st['unpublish']['p50_ms'], 'ms')}, errors {st['publish']['errors']} / {st['unpublish']['errors']}"
    )
    out.append(f"  {'RSS after ' + format(busy['calls_for_rss'], ',') + ' calls on the busy node':<50} {_n(busy['rss_after_calls_mib'], 'MiB', 1)}")
    return out


def versus_table(first: dict[str, Any], versus: dict[str, Any]) -> list[str]:
    """The two drivers side by side, every pair scenario measured in the same run, one right after the other."""
    out = ["", f"Side by side: the first driver and the one at {versus['endpoint']}, interleaved scenario by scenario"]
    out.append(f"  {'pairs':<28}{'node':>6}{'c':>4}{'p50 first':>11}{'p50 versus':>12}{'ratio':>7}{'pairs/s first':>15}{'versus':>8}{'ratio':>7}")
    for key, label in (("create_delete", "CreateVolume+DeleteVolume"), ("publish_unpublish", "NodePublish+NodeUnpublish")):
        for node, a, b in (("empty", first, versus), ("busy", first.get("busy_node") or {}, versus.get("busy_node") or {})):
            for level, run in (a.get(key) or {}).items():
                other = (b.get(key) or {}).get(level) or {}
                out.append(
                    f"  {label:<28}{node:>6}{int(level[1:]):>4}{_n(run['p50_ms']):>11}{_n(other.get('p50_ms')):>12}"
                    f"{_n(_ratio(run['p50_ms'], other.get('p50_ms'))):>7}{_n(run['throughput_per_s'], '', 1):>15}"
                    f"{_n(other.get('throughput_per_s'), '', 1):>8}{_n(_ratio(run['throughput_per_s'], other.get('throughput_per_s'))):>7}"
                )
    for name, figures in (("first", first), ("versus", versus)):
        busy = figures.get("busy_node") or {}
        calls = (busy.get("stats") or {}).get("stats") or {}
        out.append(
            f"  {name + ':':<8} NodeGetVolumeStats p50 / p99 {_n(calls.get('p50_ms'), '', 3)} / {_n(calls.get('p99_ms'), 'ms', 3)}"
            f" ({(busy.get('stats') or {}).get('published', 0):,} volumes, busy node); RSS idle {_n(figures.get('rss_idle_mib'), 'MiB', 1)},"
            f" after {figures.get('ops_for_rss') or 0:,} calls {_n(figures.get('rss_after_ops_mib'), 'MiB', 1)},"
            f" after {busy.get('calls_for_rss') or 0:,} on the busy node {_n(busy.get('rss_after_calls_mib'), 'MiB', 1)}"
        )
    return out


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    temporary.replace(path)
