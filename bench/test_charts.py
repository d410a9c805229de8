#!/usr/bin/env python3
"""Tests of bench/charts.py: labels, ratios, the medians and caption it draws from, and (when
matplotlib is importable, e.g. with target/bench-venv/bin/python) that the same results give the
same SVG.

    python3 bench/test_charts.py                      # without the rendering test
    target/bench-venv/bin/python bench/test_charts.py # with it
"""

import importlib.util
import json
import os
import tempfile
import unittest

import charts
import compare_table


def result(cpu, rate, ok=True):
    return {"cpu_us_per_msg": cpu, "msgs_per_s": rate, "ok": ok, "delivered": 1000}


def write_results(path, lines):
    with open(path, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")


META = {
    "kind": "meta",
    "date": "2026-12-06 13:00 UTC",
    "rounds": 3,
    "quick": 0,
    "rabbitmq": "3.10.8-1.1+deb12u1",
    "activemq": "5.17.2+dfsg-2+deb12u1",
    "plugboard": "abc1234",
    "cpu": "Test CPU",
    "cores": 2,
    "kernel": "6.1",
}


class Labels(unittest.TestCase):
    def test_values(self):
        self.assertEqual(charts.fmt_value(1.4, "µs"), "1.40 µs")
        self.assertEqual(charts.fmt_value(42.25, "µs"), "42.2 µs")
        self.assertEqual(charts.fmt_value(1900, "µs"), "1,900 µs")
        self.assertEqual(charts.fmt_value(1152, "/s"), "1,152/s")
        self.assertEqual(charts.fmt_value(725_400, "/s"), "725k/s")
        self.assertEqual(charts.fmt_value(1_234_000, "/s"), "1.23M/s")

    def test_ratios_against_the_better_peer(self):
        # Costs: against the lower peer; a 35th, or a share, or worse.
        self.assertEqual(charts.fmt_ratio(1.4, [80.5, 49.0], True), "1/35")
        self.assertEqual(charts.fmt_ratio(700, [850, 1900], True), "×0.82")
        self.assertEqual(charts.fmt_ratio(60, [50, None], True), "×1.2")
        # Rates: against the higher peer.
        self.assertEqual(charts.fmt_ratio(725_000, [20_000, 35_000], False), "×21")
        self.assertEqual(charts.fmt_ratio(1152, [1288, 588], False), "×0.9")
        self.assertIsNone(charts.fmt_ratio(None, [1], True))
        self.assertIsNone(charts.fmt_ratio(1, [None, None], True))

    def test_axis_labels_are_plain_numbers(self):
        self.assertEqual(charts.axis_label(1, "µs"), "1 µs")
        self.assertEqual(charts.axis_label(1000, "µs"), "1 ms")
        self.assertEqual(charts.axis_label(0.1, "µs"), "0.1 µs")
        self.assertEqual(charts.axis_label(10_000, "/s"), "10k/s")
        self.assertEqual(charts.axis_label(1_000_000, "/s"), "1M/s")
        self.assertEqual(charts.axis_label(100, "/s"), "100/s")

    def test_debian_versions_are_shortened(self):
        self.assertEqual(charts.short_version("3.10.8-1.1+deb12u1"), "3.10.8")
        self.assertEqual(charts.short_version("5.17.2+dfsg-2+deb12u1"), "5.17.2")
        self.assertEqual(charts.short_version("?"), "?")
        self.assertEqual(charts.short_version(None), "?")


class Data(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def test_compare_medians_and_caption(self):
        path = os.path.join(self.dir.name, "results.jsonl")
        lines = []
        for rnd, (pb, rmq) in enumerate([(1.0, 70.0), (2.0, 80.0), (3.0, 90.0)], 1):
            lines.append({"round": rnd, "broker": "plugboard", "scenario": "queue", "rc": 0,
                          "result": result(pb, 600_000)})
            lines.append({"round": rnd, "broker": "rabbitmq", "scenario": "queue", "rc": 0,
                          "result": result(rmq, 20_000)})
        write_results(path, lines + [META])
        meta, runs = compare_table.load(path)
        cpu, rate, caption = charts.compare_data(meta, runs)
        self.assertEqual(cpu["plugboard"][0], 2.0)  # the median, as in the table
        self.assertEqual(cpu["rabbitmq"][0], 80.0)
        self.assertIsNone(cpu["activemq"][0])  # no run: drawn as "no result"
        self.assertEqual(rate["plugboard"][0], 600_000)
        self.assertIsNone(cpu["plugboard"][1])  # topic: not run
        for part in ("run 2026-12-06 13:00 UTC", "medians of 3", "2 cores (Test CPU",
                     "Plugboard abc1234", "RabbitMQ 3.10.8", "ActiveMQ Classic 5.17.2"):
            self.assertIn(part, caption)
        self.assertNotIn("QUICK", caption)
        self.assertNotIn("load average", caption)  # results from before it was recorded
        meta.update(load="1.52", load_end="3.07")
        self.assertIn("load average 1.52 → 3.07 over the rounds", charts.compare_data(meta, runs)[2])
        meta["quick"] = 1
        self.assertIn("QUICK smoke-test counts", charts.compare_data(meta, runs)[2])

    def test_persistent_leaves_failed_runs_out_like_the_table(self):
        path = os.path.join(self.dir.name, "results.jsonl")
        lines = [
            {"round": 1, "broker": "plugboard", "scenario": "128-auto-w100", "rc": 0,
             "syncs": 10, "result": result(3.0, 190_000)},
            {"round": 2, "broker": "plugboard", "scenario": "128-auto-w100", "rc": 0,
             "syncs": 10, "result": result(99.0, 1, ok=False)},
            {"round": 1, "broker": "activemq", "scenario": "4k-ci-w1000", "rc": 0,
             "syncs": 10, "result": result(60.0, 24_000)},
        ]
        write_results(path, lines + [dict(META, messages=100_000, fs="ext4")])
        meta, runs = compare_table.load(path)
        cpu, rate, labels, caption = charts.persistent_data(meta, runs)
        self.assertEqual(labels, ["128 B, ack auto,\nwindow 100", "4 KiB, client-individual,\nwindow 1000"])
        self.assertEqual(cpu["plugboard"], [3.0, None])
        self.assertEqual(rate["activemq"], [None, 24_000])
        self.assertIn("100,000 persistent messages per run", caption)


@unittest.skipUnless(importlib.util.find_spec("matplotlib"), "matplotlib not importable here")
class Render(unittest.TestCase):
    def test_same_results_same_svg_with_the_caption_as_text(self):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "results.jsonl")
            lines = [
                {"round": 1, "broker": b, "scenario": s, "rc": 0, "result": result(cpu, cpu * 1e4)}
                for s in ("queue", "topic", "acked", "16k", "1m", "latency")
                for b, cpu in (("plugboard", 1.5), ("rabbitmq", 70.0), ("activemq", 40.0))
            ]
            write_results(path, lines + [META])
            meta, runs = compare_table.load(path)
            svgs = []
            for name in ("a.svg", "b.svg"):
                out = os.path.join(d, name)
                charts.render(plt, "compare", meta, runs, out)
                with open(out) as f:
                    svgs.append(f.read())
            self.assertEqual(svgs[0], svgs[1])
            self.assertIn("run 2026-12-06 13:00 UTC", svgs[0])
            self.assertIn("1.50 µs", svgs[0])
            self.assertIn("(1/27)", svgs[0])  # 1.5 against ActiveMQ's 40
            self.assertLess(len(svgs[0]), 200_000)


if __name__ == "__main__":
    unittest.main()
