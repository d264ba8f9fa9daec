"""The exec policy's generator: the checked-in file is its output; its patterns fit every name gpuid makes."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from gpuid.bugreport.collect import report_name
from gpuid.smi.commands import REPORT_NAME, bug_report_command, checksum_command, cleanup_command
from gpuid.smi.policy import SECONDS, command_lines, render_policy
from tests.support.execpolicy import POLICY_FILE, ROOT


def test_the_checked_in_policy_is_what_the_generator_writes() -> None:
    command = f"python -m gpuid.smi.policy > {POLICY_FILE.relative_to(ROOT)}"
    assert POLICY_FILE.read_text() == render_policy(), f"the policy is stale: run `{command}`"


def test_only_the_report_name_and_the_time_limit_vary() -> None:
    lines = command_lines()
    patterns = [text for args in lines.values() for is_regex, text in args if is_regex]
    exact = {what for what, args in lines.items() if not any(is_regex for is_regex, _ in args)}
    assert exact == {"nvidia-smi -q -x (scan)", "nvidia-smi -L (scan, MIG)"}
    assert len(patterns) == 5  # the script, the checksum, cat, and rm's two paths
    for pattern in patterns:
        assert pattern.startswith("^")
        assert pattern.endswith("$")
        assert "\\" not in pattern  # the same text in YAML, CEL and RE2
        assert REPORT_NAME.pattern in pattern
        # Besides those two, only literal characters, the special ones as one-character classes.
        rest = pattern[1:-1].replace(REPORT_NAME.pattern, "").replace(SECONDS, "")
        assert re.fullmatch(r"(?:[^][{}()*+?|^$.\\]|\[[.$*+?(){}|]\])*", rest), pattern


NODES = ["gpu-node-1", "ip-10-0-3-7.ec2.internal", "n" * 253, "ünïcode node/with spaces;and$(sh)"]
REQUESTS = ["", "r1", "x" * 63, "../../etc/passwd", "`id`"]


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("request_id", REQUESTS)
def test_every_name_gpuid_makes_fits_the_patterns(node: str, request_id: str) -> None:
    """Up to a 253-character node and a 63-character request id: what safe_name leaves of anything."""
    name = report_name(node, request_id, datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC))
    lines = command_lines()
    made = {
        "nvidia-bug-report.sh": bug_report_command(name, 86400 * 7),
        "checksum of the report": checksum_command(name),
        "removal of the report": cleanup_command(name),
    }
    for what, argv in made.items():
        args = lines[what]
        assert len(argv) == len(args)
        for text, (is_regex, expected) in zip(argv, args, strict=True):
            assert re.fullmatch(expected, text) if is_regex else text == expected, (what, text)


@pytest.mark.parametrize(
    "knobs",
    [{"namespace": "it's"}, {"containers": ["a\\b"]}, {"service_accounts": ["x\ny"]}],
)
def test_the_generator_refuses_what_it_cannot_quote_rather_than_guess(knobs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="cannot render"):
        render_policy(**knobs)  # type: ignore[arg-type]


def test_the_knobs_land_where_the_docs_say() -> None:
    text = render_policy(namespace="nvidia-gpu-operator", containers=["dp"], service_accounts=["system:x"])
    assert "      expression: \"'nvidia-gpu-operator'\"" in text
    assert "      expression: \"['dp']\"" in text
    assert "request.userInfo.username in ['system:x']" in text
