#!/usr/bin/env python3
"""Turns the trace2e benches' results into one static HTML page (inline SVG, no network).

Reads criterion's output (``<criterion>/**/new/benchmark.json`` + ``estimates.json``:
median point estimates, ns per iteration) and the summaries the non-criterion benches
write beside it (``throughput/summary.json``, ``idle/summary.json``,
``breakdown/summary.json``), and writes ``perf/report/index.html``:

- the targets of the fast-path issue, met or not, with the numbers;
- per operation: std vs shm vs gRPC medians, trace2e's overhead (mediated − std) per
  transport, and the ratio gRPC overhead / shm overhead;
- the 64 B read with the daemon on another core vs on the same core;
- the provenance-size series, throughput vs client processes, the idle daemon's CPU;
- the overhead breakdown as stacked bars (when the daemon/client expose one).

Usage (from the repository root; see perf/README.md):
    python3 perf/report.py [--criterion target/criterion] [--out perf/report/index.html]

Python 3.8+, standard library only.
"""

import argparse
import datetime
import html
import json
import math
import os
import platform
import sys

VARIANTS = ["std", "shm", "grpc"]
COLORS = {"std": "#7f8c8d", "shm": "#2e86de", "grpc": "#e67e22"}
STAGE_COLORS = ["#1abc9c", "#3498db", "#9b59b6", "#e74c3c", "#f1c40f", "#2ecc71", "#34495e", "#e67e22", "#95a5a6"]

# (group, value) pairs shown in the per-operation section, in this order.
OPERATIONS = [
    ("file_read", "64B"),
    ("file_read", "4KiB"),
    ("file_read", "1MiB"),
    ("file_write", "64B"),
    ("file_write", "4KiB"),
    ("file_write", "1MiB"),
    ("file_open_close", None),
    ("tcp_write", "64B"),
    ("tcp_read", "64B"),
]


# ---------------------------------------------------------------- loading


def load_criterion(root):
    """{(group, function, value): {"median": ns, "low": ns, "high": ns}} from criterion's output."""
    results = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in filenames:
            continue
        try:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                bench = json.load(f)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
        except (OSError, ValueError):
            continue
        median = est.get("median", {})
        interval = median.get("confidence_interval", {})
        function = bench.get("function_id")
        value = bench.get("value_str")
        if function is None and value is not None:
            # BenchmarkId::from_parameter("std") gives value "std" and no function.
            function, value = value, None
        key = (bench.get("group_id"), function, value)
        results[key] = {
            "median": median.get("point_estimate"),
            "low": interval.get("lower_bound"),
            "high": interval.get("upper_bound"),
        }
    return results


def load_summary(root, name):
    try:
        with open(os.path.join(root, name, "summary.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "{} CPUs ({}), {} {}".format(os.cpu_count(), cpu, platform.system(), platform.release())


# ---------------------------------------------------------------- formatting


def fmt_ns(ns):
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "–"
    a = abs(ns)
    if a < 1e3:
        return "{:.0f} ns".format(ns)
    if a < 1e6:
        return "{:.2f} µs".format(ns / 1e3)
    if a < 1e9:
        return "{:.2f} ms".format(ns / 1e6)
    return "{:.2f} s".format(ns / 1e9)


def fmt_tick_ns(ns):
    """Axis labels: 1 µs, 100 µs, 2.5 ms (no trailing zeros)."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(ns) >= scale:
            return "{:g} {}".format(round(ns / scale, 3), unit)
    return "{:g} ns".format(round(ns, 3))


def fmt_tick_rate(x):
    return "{:,.0f}".format(x)


def fmt_ratio(x):
    if x is None:
        return "–"
    return "{:.1f}×".format(x) if x < 100 else "{:.0f}×".format(x)


def fmt_rate(x):
    if x is None:
        return "–"
    return "{:,.0f}".format(x)


def esc(s):
    return html.escape(str(s))


def op_label(group, value):
    return group if value is None else "{} {}".format(group, value)


# ---------------------------------------------------------------- SVG charts


def nice_log_ticks(lo, hi):
    ticks = []
    p = math.floor(math.log10(lo))
    while 10 ** p <= hi * 1.0001:
        ticks.append(10 ** p)
        p += 1
    return ticks


def svg_grouped_bars(categories, series, values, fmt, log=True, unit="", width=None, height=300, tick_fmt=fmt_tick_ns):
    """Bars per category, one per series; values[(category, series)] -> number or None."""
    present = [v for v in values.values() if v is not None and v > 0]
    if not present:
        return "<p class=note>no data</p>"
    left, right, top, bottom = 70, 10, 20, 70
    group_w = max(60, 22 * len(series) + 24)
    width = width or left + right + group_w * len(categories)
    plot_h = height - top - bottom
    if log:
        lo = 10 ** math.floor(math.log10(min(present)))
        hi = 10 ** math.ceil(math.log10(max(present)))
        if hi <= lo:
            hi = lo * 10

        def y(v):
            return top + plot_h * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

        ticks = nice_log_ticks(lo, hi)
    else:
        hi = max(present) * 1.1
        lo = 0

        def y(v):
            return top + plot_h * (1 - v / hi)

        step = 10 ** math.floor(math.log10(hi))
        if hi / step < 3:
            step /= 2
        ticks = [i * step for i in range(0, int(hi / step) + 1)]
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" class=chart>'.format(width, height)]
    for t in ticks:
        ty = y(t) if (not log or t > 0) else top + plot_h
        out.append('<line x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}" class=grid />'.format(left, width - right, ty, ty))
        out.append('<text x="{}" y="{:.1f}" class=tick text-anchor=end>{}</text>'.format(left - 4, ty + 4, esc(tick_fmt(t))))
    bar_w = (group_w - 24) / max(1, len(series))
    for i, cat in enumerate(categories):
        gx = left + i * group_w + 12
        for j, s in enumerate(series):
            v = values.get((cat, s))
            if v is None or v <= 0:
                continue
            by = y(v)
            out.append(
                '<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}"><title>{} {}: {}</title></rect>'.format(
                    gx + j * bar_w, by, bar_w - 2, top + plot_h - by, COLORS.get(s, "#555"), esc(cat), esc(s), esc(fmt(v))
                )
            )
        out.append(
            '<text x="{:.1f}" y="{}" class=label text-anchor=end transform="rotate(-30 {:.1f} {})">{}</text>'.format(
                gx + group_w / 2 - 12, top + plot_h + 16, gx + group_w / 2 - 12, top + plot_h + 16, esc(cat)
            )
        )
    out.append('<line x1="{}" x2="{}" y1="{}" y2="{}" class=axis />'.format(left, width - right, top + plot_h, top + plot_h))
    if unit:
        out.append('<text x="4" y="12" class=tick>{}</text>'.format(esc(unit)))
    out.append("</svg>")
    out.append(legend(series))
    return "".join(out)


def svg_lines(xs, series, values, fmt, xlabel, unit="", width=520, height=300, tick_fmt=fmt_tick_ns):
    """Lines over categorical x positions; values[(x, series)] -> number or None (linear y)."""
    present = [v for (_, s), v in values.items() if v is not None and s in series]
    if not present:
        return "<p class=note>no data</p>"
    left, right, top, bottom = 80, 20, 20, 45
    plot_w, plot_h = width - left - right, height - top - bottom
    hi = max(present) * 1.1 or 1
    step = 10 ** math.floor(math.log10(hi))
    if hi / step < 3:
        step /= 2
    ticks = [i * step for i in range(0, int(hi / step) + 1)]

    def px(i):
        return left + (plot_w * (i + 0.5) / len(xs))

    def py(v):
        return top + plot_h * (1 - v / hi)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" class=chart>'.format(width, height)]
    for t in ticks:
        out.append('<line x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}" class=grid />'.format(left, width - right, py(t), py(t)))
        out.append('<text x="{}" y="{:.1f}" class=tick text-anchor=end>{}</text>'.format(left - 4, py(t) + 4, esc(tick_fmt(t))))
    for i, x in enumerate(xs):
        out.append('<text x="{:.1f}" y="{}" class=label text-anchor=middle>{}</text>'.format(px(i), top + plot_h + 16, esc(x)))
    out.append('<text x="{:.1f}" y="{}" class=tick text-anchor=middle>{}</text>'.format(left + plot_w / 2, height - 6, esc(xlabel)))
    for s in series:
        pts = [(px(i), py(values[(x, s)]), values[(x, s)]) for i, x in enumerate(xs) if values.get((x, s)) is not None]
        if not pts:
            continue
        color = COLORS.get(s, "#555")
        out.append(
            '<polyline fill=none stroke="{}" stroke-width=2 points="{}" />'.format(
                color, " ".join("{:.1f},{:.1f}".format(a, b) for a, b, _ in pts)
            )
        )
        for a, b, v in pts:
            out.append('<circle cx="{:.1f}" cy="{:.1f}" r=4 fill="{}"><title>{}: {}</title></circle>'.format(a, b, color, esc(s), esc(fmt(v))))
    out.append('<line x1="{}" x2="{}" y1="{}" y2="{}" class=axis />'.format(left, width - right, top + plot_h, top + plot_h))
    if unit:
        out.append('<text x="4" y="12" class=tick>{}</text>'.format(esc(unit)))
    out.append("</svg>")
    out.append(legend(series))
    return "".join(out)


def svg_stacked(bars, stage_names, width=700):
    """Horizontal stacked bars: bars = [(label, [(stage, ns)])]; scale per bar (each bar is 100 %)."""
    left, right, row_h, top = 60, 90, 34, 10
    height = top + row_h * len(bars) + 10
    plot_w = width - left - right
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" class=chart>'.format(width, height)]
    for i, (label, parts) in enumerate(bars):
        total = sum(max(0.0, ns) for _, ns in parts) or 1.0
        y = top + i * row_h
        out.append('<text x="{}" y="{}" class=label text-anchor=end>{}</text>'.format(left - 6, y + 18, esc(label)))
        x = left
        for stage, ns in parts:
            if ns <= 0:
                continue
            w = plot_w * ns / total
            color = STAGE_COLORS[stage_names.index(stage) % len(STAGE_COLORS)]
            out.append(
                '<rect x="{:.1f}" y="{}" width="{:.1f}" height="{}" fill="{}"><title>{}: {} ({:.0f} %)</title></rect>'.format(
                    x, y + 4, w, row_h - 8, color, esc(stage), esc(fmt_ns(ns)), 100 * ns / total
                )
            )
            if w > 46:
                out.append('<text x="{:.1f}" y="{}" class=inbar text-anchor=middle>{}</text>'.format(x + w / 2, y + 21, esc(fmt_ns(ns))))
            x += w
        out.append('<text x="{}" y="{}" class=label>{}</text>'.format(left + plot_w + 6, y + 18, esc(fmt_ns(total))))
    out.append("</svg>")
    out.append(
        "<div class=legend>"
        + "".join(
            '<span><i style="background:{}"></i>{}</span>'.format(STAGE_COLORS[i % len(STAGE_COLORS)], esc(n))
            for i, n in enumerate(stage_names)
        )
        + "</div>"
    )
    return "".join(out)


def legend(series):
    return (
        "<div class=legend>"
        + "".join('<span><i style="background:{}"></i>{}</span>'.format(COLORS.get(s, "#555"), esc(s)) for s in series)
        + "</div>"
    )


def table(headers, rows, cls=""):
    out = ["<table class='{}'><tr>".format(cls)]
    out += ["<th>{}</th>".format(esc(h)) for h in headers]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>" + "".join("<td>{}</td>".format(c) for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


# ---------------------------------------------------------------- analysis


def median(results, group, function, value):
    r = results.get((group, function, value))
    return r["median"] if r else None


def overhead(results, group, transport, value, std_value=None):
    t = median(results, group, transport, value)
    s = median(results, group, "std", value if std_value is None else std_value)
    if t is None or s is None:
        return None
    return t - s


def ratio(a, b):
    if a is None or b is None or b <= 0:
        return None
    return a / b


def target(name, measured, verdict, detail=""):
    if verdict is None:
        state = "<span class=na>not measured</span>"
    elif verdict:
        state = "<span class=ok>met</span>"
    else:
        state = "<span class=ko>not met</span>"
    return [esc(name), measured, state, detail]


def build(results, throughput, idle, breakdown, criterion_root):
    parts = []
    transports = [t for t in ("shm", "grpc") if any(k[1] == t for k in results)]
    variants = ["std"] + transports

    # ---- targets
    rows = []
    oc = overhead(results, "file_read_placement", "shm", "other-core")
    rows.append(target("shm 64 B read overhead, daemon on another core ≤ 1.5 µs", fmt_ns(oc), None if oc is None else oc <= 1500,
                       "file_read_placement: shm − std, bench and daemon pinned to different CPUs"))
    sc = overhead(results, "file_read_placement", "shm", "same-core")
    rows.append(target("shm 64 B read overhead, daemon on the same core ≤ 6 µs", fmt_ns(sc), None if sc is None else sc <= 6000,
                       "file_read_placement: shm − std, bench and daemon pinned to one CPU"))
    for group, value, label in [
        ("file_read", "64B", "unpinned"),
        ("file_read_placement", "other-core", "other core"),
        ("file_read_placement", "same-core", "same core"),
    ]:
        r = ratio(overhead(results, group, "grpc", value), overhead(results, group, "shm", value))
        rows.append(target("gRPC overhead / shm overhead ≥ 30 (64 B read, {})".format(label), fmt_ratio(r),
                           None if r is None else r >= 30,
                           "gRPC {} vs shm {}".format(fmt_ns(overhead(results, group, "grpc", value)),
                                                      fmt_ns(overhead(results, group, "shm", value)))))
    std_prov = median(results, "provenance", "std", None)
    for t in transports:
        o0 = None if std_prov is None else (lambda m: None if m is None else m - std_prov)(median(results, "provenance", t, "0"))
        o1 = None if std_prov is None else (lambda m: None if m is None else m - std_prov)(median(results, "provenance", t, "10000"))
        r = ratio(o1, o0)
        rows.append(target("{}: overhead with 10 000 provenance entries ≤ 2× with none".format(t), fmt_ratio(r),
                           None if r is None else r <= 2,
                           "{} vs {}".format(fmt_ns(o1), fmt_ns(o0)) + ("" if t == "shm" else " (informative: the target is about shm)")))
    if throughput:
        by = {(r["variant"], r["processes"]): r["reads_per_sec"] for r in throughput.get("results", [])}
        got = [by.get(("shm", p)) for p in (2, 4)]
        have = [g for g in got if g is not None]
        rows.append(target("≥ 250 000 mediated 64 B reads/s in total with 2–4 processes (shm)",
                           " / ".join(fmt_rate(g) for g in got) + " reads/s (2 / 4 processes)",
                           None if len(have) < 2 else min(have) >= 250000, "both the 2- and the 4-process runs"))
    else:
        rows.append(target("≥ 250 000 mediated 64 B reads/s in total with 2–4 processes (shm)", "–", None))
    if idle:
        for r in idle.get("results", []):
            if r["clients"] >= 100:
                rows.append(target("idle daemon with {} attached idle clients ({}) < 1 % of a core".format(r["clients"], r["variant"]),
                                   "{:.3f} %".format(r["cpu_percent"]), r["cpu_percent"] < 1,
                                   "over {:.0f} s".format(r.get("window_s", 0))))
    else:
        rows.append(target("idle daemon with 100 attached idle clients < 1 % of a core", "–", None))
    parts.append("<h2>Targets</h2>")
    parts.append(table(["target", "measured", "", "how"], rows, "targets"))

    # ---- per operation
    parts.append("<h2>Per operation: std vs shm vs gRPC</h2>")
    parts.append("<p>Medians per operation (criterion), log scale. Overhead = trace2e − std in the same run.</p>")
    cats, vals, rows = [], {}, []
    for group, value in OPERATIONS:
        if not any((group, v, value) in results for v in variants):
            continue
        label = op_label(group, value)
        cats.append(label)
        row = [esc(label)]
        for v in variants:
            m = median(results, group, v, value)
            vals[(label, v)] = m
            row.append(fmt_ns(m))
        ovs = {t: overhead(results, group, t, value) for t in transports}
        for t in transports:
            row.append(fmt_ns(ovs[t]))
        if "shm" in transports and "grpc" in transports:
            row.append(fmt_ratio(ratio(ovs["grpc"], ovs["shm"])))
        s = median(results, group, "std", value)
        for t in transports:
            row.append(fmt_ratio(ratio(median(results, group, t, value), s)))
        rows.append(row)
    parts.append(svg_grouped_bars(cats, variants, vals, fmt_ns, unit="time per operation (log)"))
    headers = ["operation"] + variants + ["{} overhead".format(t) for t in transports]
    if "shm" in transports and "grpc" in transports:
        headers.append("gRPC overhead / shm overhead")
    headers += ["{} / std".format(t) for t in transports]
    parts.append(table(headers, rows))

    # ---- placement
    parts.append("<h2>64 B read: daemon on another core vs the same core</h2>")
    parts.append("<p>The bench is pinned to one CPU; the daemon to another CPU or to the same one. std is measured under the same pinning.</p>")
    cats, vals, rows = [], {}, []
    for value in ("other-core", "same-core"):
        if not any(("file_read_placement", v, value) in results for v in variants):
            continue
        cats.append(value)
        row = [esc(value)]
        for v in variants:
            m = median(results, "file_read_placement", v, value)
            vals[(value, v)] = m
            row.append(fmt_ns(m))
        ovs = {t: overhead(results, "file_read_placement", t, value) for t in transports}
        row += [fmt_ns(ovs[t]) for t in transports]
        if "shm" in transports and "grpc" in transports:
            row.append(fmt_ratio(ratio(ovs["grpc"], ovs["shm"])))
        rows.append(row)
    parts.append(svg_grouped_bars(cats, variants, vals, fmt_ns, unit="time per 64 B read (log)"))
    headers = ["placement"] + variants + ["{} overhead".format(t) for t in transports]
    if "shm" in transports and "grpc" in transports:
        headers.append("gRPC overhead / shm overhead")
    parts.append(table(headers, rows))

    # ---- provenance
    parts.append("<h2>Provenance size</h2>")
    parts.append("<p>Mediated 64 B reads of a source whose provenance holds n files (built by real flows); std once ({}).</p>".format(
        fmt_ns(std_prov)))
    sizes = sorted({int(k[2]) for k in results if k[0] == "provenance" and k[2] is not None and k[2].isdigit()})
    xs = [str(n) for n in sizes]
    vals, rows = {}, []
    for n in xs:
        row = [esc(n)]
        for t in transports:
            m = median(results, "provenance", t, n)
            o = None if m is None or std_prov is None else m - std_prov
            vals[(n, t)] = o
            o0 = None if std_prov is None or median(results, "provenance", t, "0") is None else median(results, "provenance", t, "0") - std_prov
            row += [fmt_ns(m), fmt_ns(o), fmt_ratio(ratio(o, o0))]
        rows.append(row)
    if xs:
        parts.append(svg_lines(xs, transports, vals, fmt_ns, "provenance entries of the source", unit="overhead per read"))
        headers = ["entries"]
        for t in transports:
            headers += ["{} read".format(t), "{} overhead".format(t), "{} overhead / overhead at 0".format(t)]
        parts.append(table(headers, rows))
    else:
        parts.append("<p class=note>not measured</p>")

    # ---- throughput
    parts.append("<h2>Throughput vs client processes</h2>")
    if throughput:
        res = throughput.get("results", [])
        procs = sorted({r["processes"] for r in res})
        tv = sorted({r["variant"] for r in res}, key=lambda v: VARIANTS.index(v) if v in VARIANTS else 9)
        by = {(str(r["processes"]), r["variant"]): r["reads_per_sec"] for r in res}
        parts.append("<p>Total {} B reads per second, each process reading its own file; {} CPUs, nothing pinned.</p>".format(
            throughput.get("read_size", 64), throughput.get("cpus", "?")))
        xs = [str(p) for p in procs]
        mediated = [v for v in tv if v != "std"]
        parts.append(svg_lines(xs, mediated, by, fmt_rate, "client processes", unit="mediated reads/s", tick_fmt=fmt_tick_rate))
        rows = [[esc(p)] + [fmt_rate(by.get((p, v))) for v in tv] for p in xs]
        parts.append(table(["processes"] + ["{} reads/s".format(v) for v in tv], rows))
    else:
        parts.append("<p class=note>not measured (run the throughput bench)</p>")

    # ---- idle
    parts.append("<h2>Idle daemon CPU</h2>")
    if idle:
        rows = [[esc(r["variant"]), esc(r["clients"]), "{:.3f} %".format(r["cpu_percent"]), "{:.0f} s".format(r.get("window_s", 0))]
                for r in idle.get("results", [])]
        parts.append(table(["transport", "attached idle clients", "daemon CPU (% of one core)", "window"], rows))
    else:
        parts.append("<p class=note>not measured (run the idle bench)</p>")

    # ---- breakdown
    parts.append("<h2>Overhead breakdown (64 B file read)</h2>")
    if breakdown:
        def path_of(v):
            stages = [(s["name"], s["ns"]) for s in v.get("stages", [])]
            if "unattributed_ns" in v:  # summaries written before 2026-12-02
                stages.append(("unattributed", v["unattributed_ns"]))
            return stages
        bars, names, rows = [], [], []
        for v in breakdown.get("variants", []):
            stages = path_of(v)
            for n, _ in stages:
                if n not in names:
                    names.append(n)
            bars.append((v["variant"], stages))
        parts.append("<p>std read {}; each bar is one transport's overhead (mediated − std) along the client's "
                     "critical path: the parts add up to the overhead, scaled to its own total (right). "
                     "<code>handoff_wait</code> is the client's round trip minus the daemon's time to answer "
                     "(it includes waiting behind the daemon's work on the previous report); "
                     "<code>client_rest</code> is the overhead minus the other parts (decoding the answer, "
                     "posting the report: over gRPC a second call).{}</p>".format(
            fmt_ns(breakdown.get("std_ns")),
            "" if breakdown.get("breakdown_available") else
            " <b>The daemon and client do not expose stage timings</b>: the whole overhead is unattributed."))
        parts.append(svg_stacked(bars, names))
        for v in breakdown.get("variants", []):
            stages = dict(path_of(v))
            rows.append([esc(v["variant"]), fmt_ns(v.get("total_ns")), fmt_ns(v.get("overhead_ns"))] + [fmt_ns(stages.get(n)) for n in names])
        parts.append(table(["transport", "mediated read", "overhead"] + names, rows))
        work_names, work_rows = [], []
        for v in breakdown.get("variants", []):
            for s in v.get("daemon_work", []):
                if s["name"] not in work_names:
                    work_names.append(s["name"])
        if work_names:
            for v in breakdown.get("variants", []):
                work = {s["name"]: s["ns"] for s in v.get("daemon_work", [])}
                work_rows.append([esc(v["variant"])] + [fmt_ns(work.get(n)) for n in work_names])
            parts.append("<p>The daemon's work per read, by stage. Not all of it is on the client's critical path: "
                         "reports are posted one-way and a grant is answered before its audit record is written, "
                         "so with the daemon on another CPU that work runs beside the client's own.</p>")
            parts.append(table(["transport"] + work_names, work_rows))
    else:
        parts.append("<p class=note>not measured (run the breakdown bench)</p>")

    parts.append("<h2>All criterion results</h2>")
    rows = []
    for (g, f, v), r in sorted(results.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        rows.append([esc("/".join(x for x in (g, f, v) if x is not None)), fmt_ns(r["median"]),
                     "{} – {}".format(fmt_ns(r["low"]), fmt_ns(r["high"]))])
    parts.append(table(["benchmark", "median", "95 % CI of the median"], rows, "all"))

    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    head = """<!doctype html><html><head><meta charset=utf-8><title>trace2e performance report</title><style>
body{{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}}
h1{{margin-bottom:0}} h2{{margin-top:36px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;margin:10px 0}} td,th{{border:1px solid #ddd;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}} th{{background:#f4f6f8}}
table.targets td:nth-child(4){{text-align:left;color:#555}}
.ok{{color:#fff;background:#27ae60;padding:1px 6px;border-radius:3px}} .ko{{color:#fff;background:#c0392b;padding:1px 6px;border-radius:3px}}
.na{{color:#555;background:#ddd;padding:1px 6px;border-radius:3px}} .note{{color:#777}}
svg.chart{{display:block;margin:8px 0}} .grid{{stroke:#eee}} .axis{{stroke:#888}}
.tick{{font-size:11px;fill:#666}} .label{{font-size:12px;fill:#333}} .inbar{{font-size:11px;fill:#fff}}
.legend span{{margin-right:14px;font-size:12px}} .legend i{{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}}
table.all{{font-size:12px}}
</style></head><body>
<h1>trace2e performance report</h1>
<p class=note>Generated {now} from {root} · {machine} · medians of the same run; overhead = trace2e − std.</p>
""".format(now=esc(now), root=esc(os.path.abspath(criterion_root)), machine=esc(machine()))
    return head + "\n".join(parts) + "\n</body></html>\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    default_root = os.environ.get("CRITERION_HOME") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target"), "criterion")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--criterion", default=default_root, help="criterion's output directory (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(here, "report", "index.html"), help="output file (default: %(default)s)")
    args = parser.parse_args()
    if not os.path.isdir(args.criterion):
        sys.exit("no criterion results in {} (run `cargo bench -p trace2e-benches` first)".format(args.criterion))
    results = load_criterion(args.criterion)
    page = build(results, load_summary(args.criterion, "throughput"), load_summary(args.criterion, "idle"),
                 load_summary(args.criterion, "breakdown"), args.criterion)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(page)
    print("wrote {} ({} criterion results)".format(args.out, len(results)))


if __name__ == "__main__":
    main()
