"""Read a csi-sanity (Ginkgo) JUnit report and print one summary line; standard library only."""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    name: str
    status: str  # passed, failed, skipped, pending (Ginkgo's own words; errors count as failed)
    message: str = ""


@dataclass(frozen=True)
class Report:
    specs: tuple[Spec, ...]

    def with_status(self, *statuses: str) -> list[Spec]:
        return [spec for spec in self.specs if spec.status in statuses]

    @property
    def run(self) -> list[Spec]:
        return self.with_status("passed", "failed")

    @property
    def passed(self) -> list[Spec]:
        return self.with_status("passed")

    @property
    def failed(self) -> list[Spec]:
        return self.with_status("failed")

    @property
    def skipped(self) -> list[Spec]:
        """Specs that did not run: skipped by csi-sanity at run time, or marked pending in its source."""
        return self.with_status("skipped", "pending")


def _name(testcase: ET.Element) -> str:
    name = testcase.get("name", "")
    return name.removeprefix("[It] ").strip()


def _spec(testcase: ET.Element) -> Spec:
    name = _name(testcase)
    for tag in ("failure", "error"):
        element = testcase.find(tag)
        if element is not None:
            return Spec(name, "failed", element.get("message", "") or (element.text or "").strip())
    status = testcase.get("status", "")
    skipped = testcase.find("skipped")
    if status == "pending":
        return Spec(name, "pending", "pending")
    if skipped is not None or status == "skipped":
        message = skipped.get("message", "") if skipped is not None else ""
        return Spec(name, "skipped", message.removeprefix("skipped - ").strip())
    if status in ("passed", ""):
        return Spec(name, "passed")
    return Spec(name, "failed", f"unexpected status {status!r}")


def read_report(path: str) -> Report:
    root = ET.parse(path).getroot()
    return Report(tuple(_spec(testcase) for testcase in root.iter("testcase")))


def summary_line(topology: str, report: Report, seconds: float | None = None) -> str:
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    skipped = "; ".join(
        sorted(f"{spec.name} [pending upstream]" if spec.status == "pending" else spec.name for spec in report.skipped)
    )
    return (
        f"csi-sanity {topology}: {len(report.run)} run, {len(report.passed)} passed, "
        f"{len(report.failed)} failed, {len(report.skipped)} skipped{took} (skipped: {skipped or 'none'})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("topology")
    parser.add_argument("junit_xml")
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args(argv)
    try:
        report = read_report(args.junit_xml)
    except (OSError, ET.ParseError) as err:
        print(f"csi-sanity {args.topology}: no readable JUnit report at {args.junit_xml}: {err}")
        return 1
    print(summary_line(args.topology, report, args.seconds))
    for spec in report.failed:
        print(f"  FAILED {spec.name}: {' '.join(spec.message.split())[:300]}", file=sys.stderr)
    return 1 if report.failed or not report.run else 0


if __name__ == "__main__":
    sys.exit(main())
