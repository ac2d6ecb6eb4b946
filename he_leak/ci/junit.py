"""JUnit XML as CI systems read it (Jenkins, GitLab, GitHub test reporters): one <testsuites> holding one
<testsuite> of <testcase>s, each with an optional <failure message=… type=…> or <skipped>, then <system-out>; the
element order and attributes of the JUnit schema those tools validate against (no file/line attributes, which
that schema lacks: the location is in the text). Written with the standard library; the tests read it back with
junitparser."""

from __future__ import annotations

import datetime
import os
import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from he_leak.errors import ConfigError

# characters XML 1.0 cannot hold at all (ElementTree would write them and make the file unreadable)
_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Case:
    """One <testcase>: a failure (short message, longer text), a skip reason, or neither (passed)."""

    name: str
    classname: str
    failure: str | None = None
    details: str = ""
    skipped: str | None = None
    output: str = ""
    seconds: float = 0.0


def _clean(text: str) -> str:
    return _INVALID.sub("\ufffd", text)


def junit_xml(suite: str, cases: Sequence[Case], *, seconds: float = 0.0, output: str = "") -> str:
    """The XML document of one suite of `cases` (`seconds`: the suite's wall time; `output`: its <system-out>)."""
    counts = {"tests": str(len(cases)), "failures": str(sum(c.failure is not None for c in cases)), "errors": "0",
              "skipped": str(sum(c.failure is None and c.skipped is not None for c in cases)),
              "time": f"{seconds:.3f}"}  # fmt: skip
    root = ET.Element("testsuites", {"name": _clean(suite), **counts})
    stamp = datetime.datetime.now(datetime.UTC).replace(microsecond=0, tzinfo=None).isoformat()
    node = ET.SubElement(root, "testsuite", {"name": _clean(suite), **counts, "timestamp": stamp,
                                             "hostname": socket.gethostname()})  # fmt: skip
    for case in cases:
        item = ET.SubElement(node, "testcase", {"classname": _clean(case.classname), "name": _clean(case.name),
                                                "time": f"{case.seconds:.3f}"})  # fmt: skip
        if case.failure is not None:
            failure = ET.SubElement(item, "failure", {"message": _clean(case.failure), "type": "AssertionError"})
            failure.text = _clean(case.details or case.failure)
        elif case.skipped is not None:
            ET.SubElement(item, "skipped", {"message": _clean(case.skipped)})
        if case.output:
            ET.SubElement(item, "system-out").text = _clean(case.output)
    if output:
        ET.SubElement(node, "system-out").text = _clean(output)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def check_path(path: Path) -> None:
    """Refuse, before any run, a --junit-xml path that cannot be written (one line naming the fix)."""
    if path.is_dir():
        raise ConfigError(f"--junit-xml {path} is a folder; give a file name, e.g. {path / 'he-leak.xml'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"--junit-xml {path}: no folder {parent}; create it first")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"--junit-xml {path}: not writable; choose another path")
