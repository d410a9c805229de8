#!/usr/bin/env python3
"""Charts of the side-by-side benchmarks: Plugboard beside RabbitMQ and ActiveMQ per scenario,
broker CPU time per message (the figure that is stable on shared machines) and throughput.

    charts.py compare RESULTS.jsonl OUT.svg       # bench/compare.sh's target/compare/results.jsonl
    charts.py persistent RESULTS.jsonl OUT.svg    # bench/persistent.sh's target/persistent/...
    charts.py --no-install compare RESULTS.jsonl OUT.png   # never create the virtualenv

The numbers are the medians the tables in docs/benchmarks.md show (the same functions of
compare_table.py and persistent_table.py compute them); the caption names the run (date,
rounds, machine, versions). SVG is written with text as text and fixed ids, so re-rendering the
same results gives the same file; an output name ending in .png gives a PNG.

Any python3 can start it: when matplotlib is not importable it re-runs itself in the bench's
own virtualenv, target/bench-venv (BENCH_VENV overrides), which it creates on first use with a
pinned matplotlib from PyPI. Exit status: 0 chart written, 3 no plotting package (a warning on
stderr; the benchmark scripts go on without the chart), 1 bad arguments or results.
"""

import os
import re
import subprocess
import sys
import textwrap

import compare_table  # same directory: load(), med()
import persistent_table  # same directory: values(), med(), label(), order()

MATPLOTLIB = "matplotlib==3.10.7"
NO_PLOTTING = 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("BENCH_VENV") or os.path.join(ROOT, "target", "bench-venv")
# Set in the re-run inside the virtualenv, so a broken one cannot loop.
REEXEC_MARK = "PLUGBOARD_CHARTS_IN_VENV"

# The brokers drawn, in order, with their legend names and colours (Okabe–Ito: distinct for
# colour-blind readers too).
COLOURS = {"plugboard": "#0072B2", "rabbitmq": "#E69F00", "activemq": "#009E73"}
COMPARE_BROKERS = [
    ("plugboard", "Plugboard"),
    ("rabbitmq", "RabbitMQ"),
    ("activemq", "ActiveMQ Classic"),
]
PERSISTENT_BROKERS = [
    ("plugboard", "Plugboard (journal, fsync batch)"),
    ("rabbitmq", "RabbitMQ (durable queue)"),
    ("activemq", "ActiveMQ Classic (KahaDB)"),
]
# compare.sh: (scenario, label) of the CPU panel and of the throughput panel.
COMPARE_CPU = [
    ("queue", "queue 4→4, 128 B"),
    ("topic", "topic 1→4, 128 B\n(per delivery)"),
    ("acked", "queue, client-individual acks"),
    ("16k", "queue 4→4, 16 KiB"),
    ("1m", "queue 1→1, 1 MiB"),
    ("latency", "1000 msg/s, 128 B\n(latency run)"),
]
COMPARE_RATE = [
    ("queue", "queue 4→4, 128 B"),
    ("topic", "topic 1→4, 128 B\n(deliveries/s)"),
    ("acked", "queue, client-individual acks"),
    ("16k", "queue 4→4, 16 KiB"),
    ("1m", "queue 1→1, 1 MiB"),
]


def warn(msg):
    print(f"charts.py: warning: {msg}", file=sys.stderr)


def venv_python():
    return os.path.join(VENV, "bin", "python")


def ensure_venv():
    """The virtualenv's python with MATPLOTLIB installed, creating it if needed; None (after a
    warning) if that cannot be done here."""
    python, marker = venv_python(), os.path.join(VENV, ".plugboard-ready")
    try:
        with open(marker) as f:
            if f.read().strip() == MATPLOTLIB and os.path.exists(python):
                return python
    except OSError:
        pass
    print(f"charts.py: installing {MATPLOTLIB} from PyPI into {VENV}", file=sys.stderr)
    try:
        if os.path.exists(VENV):
            subprocess.run(["rm", "-rf", "--", VENV], check=True)
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True, timeout=300)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", MATPLOTLIB],
            check=True,
            timeout=900,
        )
        with open(marker, "w") as f:
            f.write(MATPLOTLIB + "\n")
    except (OSError, subprocess.SubprocessError) as e:
        warn(f"could not set up {VENV} with {MATPLOTLIB} ({e}); needs python3-venv and PyPI")
        return None
    return python


def import_pyplot(install):
    """matplotlib.pyplot, from this interpreter or (re-running this script) from the venv;
    exits with NO_PLOTTING when neither has it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        pass
    if os.environ.get(REEXEC_MARK):
        warn(f"matplotlib is not importable in {VENV}; delete it to have it made again")
        sys.exit(NO_PLOTTING)
    python = ensure_venv() if install else None
    if python is None:
        if not install:
            warn("matplotlib is not installed and --no-install was given: no chart")
        sys.exit(NO_PLOTTING)
    env = dict(os.environ, **{REEXEC_MARK: "1"})
    os.execve(python, [python, os.path.abspath(__file__), *sys.argv[1:]], env)


def short_version(v):
    """Debian's `3.10.8-1.1+deb12u1` → `3.10.8`, `5.17.2+dfsg-2` → `5.17.2`; anything not
    starting with a digit as it is."""
    v = str(v or "?")
    return re.split(r"[-+~]", v, maxsplit=1)[0] if v[:1].isdigit() else v


def fmt_value(v, unit):
    """A bar's label: `1.40 µs`, `850 µs`, `1,900 µs`; `725k/s`, `1.23M/s`, `1,152/s`."""
    if unit == "/s":
        if v >= 1e6:
            return f"{v / 1e6:.2f}M/s"
        if v >= 1e4:
            return f"{v / 1e3:,.0f}k/s"
        return f"{v:,.0f}/s"
    digits = 0 if v >= 100 else (1 if v >= 10 else 2)
    return f"{v:,.{digits}f} {unit}"


def fmt_ratio(pb, peers, lower_is_better):
    """Plugboard against the better peer: `1/35` (a 35th of the cost), `×21` (21 times the
    rate), `×0.82` or `×1.2` (a cost 0.82 or 1.2 times the peer's); None without both figures."""
    peers = [p for p in peers if p]
    if not pb or not peers:
        return None
    r = pb / (min(peers) if lower_is_better else max(peers))
    if lower_is_better and r < 1:
        return f"1/{1 / r:.0f}" if r < 0.5 else f"×{r:.2f}"
    return f"×{r:.0f}" if r >= 10 else f"×{r:.1f}"


def axis_label(v, unit):
    """Log-axis tick labels in plain numbers: `1 µs`, `10 µs`, `1 ms`; `1k/s`, `1M/s`."""
    if unit == "µs":
        if v >= 1e3:
            return f"{v / 1e3:g} ms"
        return f"{v:g} µs"
    if v >= 1e6:
        return f"{v / 1e6:g}M/s"
    if v >= 1e3:
        return f"{v / 1e3:g}k/s"
    return f"{v:g}/s"


def compare_data(meta, runs):
    """({panel: {broker: [value per scenario]}}, caption) for compare.sh's results."""

    def column(rows, field):
        return {
            b: [compare_table.med(runs, b, s, field) for s, _ in rows] for b, _ in COMPARE_BROKERS
        }

    quick = " QUICK smoke-test counts, not a result." if meta.get("quick") else ""
    caption = (
        f"bench/compare.sh, run {meta.get('date', '?')}: medians of {meta.get('rounds', '?')} "
        f"round(s), non-persistent messages, loopback; {meta.get('cores', '?')} cores "
        f"({meta.get('cpu', '?')}, Linux {meta.get('kernel', '?')}) shared with the load tool"
        f"{compare_table.load_note(meta)}. "
        f"Plugboard {meta.get('plugboard', '?')} without plugins, RabbitMQ "
        f"{short_version(meta.get('rabbitmq'))} (rabbitmq_stomp), ActiveMQ Classic "
        f"{short_version(meta.get('activemq'))}. In brackets: Plugboard against the better of the two. Full table and method: docs/benchmarks.md.{quick}"
    )
    return column(COMPARE_CPU, "cpu_us_per_msg"), column(COMPARE_RATE, "msgs_per_s"), caption


def persistent_data(meta, runs):
    """(cpu, rate, scenario labels, caption) for persistent.sh's results."""
    scenarios = sorted({s for (_, s) in runs}, key=persistent_table.order)

    def column(fn):
        return {
            b: [persistent_table.med(persistent_table.values(runs, b, s, fn)) for s in scenarios]
            for b, _ in PERSISTENT_BROKERS
        }

    rate = column(lambda r: r["result"]["msgs_per_s"])
    cpu = column(lambda r: r["result"].get("cpu_us_per_msg"))
    labels = [persistent_table.label(s).replace(", window", ",\nwindow") for s in scenarios]
    quick = " QUICK smoke-test counts, not a result." if meta.get("quick") else ""
    caption = (
        f"bench/persistent.sh, run {meta.get('date', '?')}: medians of {meta.get('rounds', '?')} "
        f"round(s), {meta.get('messages', 0):,} persistent messages per run, 4 producers → 4 "
        f"consumers, each SEND's receipt after the broker's fsync; window = unconfirmed SENDs per "
        f"producer. {meta.get('cores', '?')} cores ({meta.get('cpu', '?')}, Linux "
        f"{meta.get('kernel', '?')}){compare_table.load_note(meta)}, {meta.get('fs', '?')}; "
        f"Plugboard {meta.get('plugboard', '?')}, "
        f"RabbitMQ {short_version(meta.get('rabbitmq'))}, ActiveMQ Classic "
        f"{short_version(meta.get('activemq'))}. In brackets: Plugboard against the better of the two. Full table: docs/benchmarks.md.{quick}"
    )
    return cpu, rate, labels, caption


def panel(ax, labels, series, brokers, unit, title, xlabel, lower_is_better):
    """Horizontal grouped bars on a log axis, one group per scenario (top to bottom), each bar's
    value beside it and, beside Plugboard's, its ratio to the better peer in brackets."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    n = len(brokers)
    height = 0.8 / n
    finite = [v for vals in series.values() for v in vals if v]
    peers = [b for b, _ in brokers if b != "plugboard"]
    for i, (b, name) in enumerate(brokers):
        ys = [g + (i - (n - 1) / 2) * height for g in range(len(labels))]
        vals = series[b]
        ax.barh(
            [y for y, v in zip(ys, vals) if v],
            [v for v in vals if v],
            height=height * 0.92,
            color=COLOURS[b],
            label=name,
        )
        for g, (y, v) in enumerate(zip(ys, vals)):
            if not v:
                ax.text(min(finite) / 1.8 if finite else 1, y, "no result", va="center",
                        fontsize=7.5, color="#666666")
                continue
            text = fmt_value(v, unit)
            ratio = None
            if b == "plugboard":
                ratio = fmt_ratio(v, [series[p][g] for p in peers], lower_is_better)
            if ratio:
                text += f"  ({ratio})"
            ax.text(v * 1.08, y, text, va="center", fontsize=7.5,
                    fontweight="bold" if b == "plugboard" else "normal")
    ax.set_xscale("log")
    if finite:
        ax.set_xlim(min(finite) / 2, max(finite) * 8)
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: axis_label(v, unit)))
    ax.set_yticks(range(len(labels)), labels, fontsize=8.5)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10.5, loc="left")
    ax.set_xlabel(xlabel, fontsize=9)
    ax.grid(axis="x", which="major", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="x", labelsize=8)


def render(plt, kind, meta, runs, out):
    if kind == "compare":
        cpu, rate, caption = compare_data(meta, runs)
        cpu_labels = [label for _, label in COMPARE_CPU]
        rate_labels = [label for _, label in COMPARE_RATE]
        brokers, title = COMPARE_BROKERS, "Plugboard, RabbitMQ and ActiveMQ side by side"
        size = (11, 5.6)
    else:
        cpu, rate, labels, caption = persistent_data(meta, runs)
        cpu_labels = rate_labels = labels
        brokers, title = PERSISTENT_BROKERS, "Persistent messages with receipts after fsync"
        size = (11, 7.4)
    if not any(v for vals in list(cpu.values()) + list(rate.values()) for v in vals):
        print(f"charts.py: no {kind} results with numbers in them", file=sys.stderr)
        sys.exit(1)
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "plugboard-bench",
                         "font.family": "sans-serif"})
    fig, (left, right) = plt.subplots(1, 2, figsize=size)
    panel(left, cpu_labels, cpu, brokers, "µs",
          "Broker CPU time per message: lower is better",
          "broker CPU time per message (user + system, log scale)", lower_is_better=True)
    panel(right, rate_labels, rate, brokers, "/s",
          "Throughput: higher is better",
          "messages per second (log scale)", lower_is_better=False)
    # Title, then the legend under it, then the panels; the caption at the bottom.
    top = 1 - 0.3 / size[1]
    fig.suptitle(title, fontsize=13, x=0.01, y=top + 0.2 / size[1], ha="left", va="top",
                 fontweight="bold")
    handles, names = left.get_legend_handles_labels()
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(0.005, top - 0.05 / size[1]),
               ncol=len(brokers), frameon=False, fontsize=9)
    wrapped = "\n".join(textwrap.wrap(caption, 185))
    fig.text(0.01, 0.1 / size[1], wrapped, fontsize=7.5, color="#333333", va="bottom", ha="left")
    lines = wrapped.count("\n") + 1
    fig.tight_layout(rect=(0, (0.2 + 0.14 * lines) / size[1], 1, top - 0.2 / size[1]))
    # No creation date in the file: the same results give the same SVG.
    metadata = {"Date": None} if out.endswith(".svg") else {}
    fig.savefig(out, metadata=metadata)
    plt.close(fig)


def main(argv):
    install = True
    if argv[:1] == ["--no-install"]:
        install, argv = False, argv[1:]
    if len(argv) != 3 or argv[0] not in ("compare", "persistent"):
        sys.exit(__doc__)
    kind, results, out = argv
    try:
        meta, runs = compare_table.load(results)
    except (OSError, ValueError, KeyError) as e:
        print(f"charts.py: cannot read {results}: {e}", file=sys.stderr)
        sys.exit(1)
    if not runs:
        print(f"charts.py: no runs in {results}", file=sys.stderr)
        sys.exit(1)
    plt = import_pyplot(install)
    render(plt, kind, meta, runs, out)
    print(f"charts.py: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
