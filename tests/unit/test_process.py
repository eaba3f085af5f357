"""run_command: the child's output and exit status, stdin at end of file, and no descriptor left behind."""

from __future__ import annotations

import os

import pytest

from adapters.mount.process import CommandTimedOut, run_command


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


class TestRunCommand:
    def test_output_status_and_stdin_at_end_of_file(self) -> None:
        # cat copies stdin: were it not /dev/null, it would wait for input until the timeout
        result = run_command(["sh", "-c", "cat; echo out; echo err >&2; exit 3"], 30)
        assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert result.output == "err"

    def test_no_descriptor_is_left_open_whether_it_ran_failed_to_start_or_timed_out(self) -> None:
        run_command(["true"], 30)  # the one /dev/null every child's stdin shares, opened on first use
        before = open_descriptors()
        for _ in range(20):
            assert run_command(["sh", "-c", "echo x; echo y >&2"], 30).stdout == "x\n"
        with pytest.raises(FileNotFoundError):
            run_command(["/nonexistent/mount.nfs"], 30)
        with pytest.raises(CommandTimedOut):
            run_command(["sleep", "30"], 0.2)
        assert open_descriptors() == before

    def test_only_the_last_bytes_of_a_long_output_are_kept(self) -> None:
        result = run_command(["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' a; echo end"], 30)
        assert result.stdout == "a" * ((1 << 16) - len("end\n")) + "end\n"
