"""Running ``jaxlogits`` commands in-process in tests, and the one-line error contract."""

from jaxlogits import cli


def run_cli(capsys, argv):
  """``(status, stdout, stderr)`` of ``jaxlogits argv`` (argparse's own errors exit directly)."""
  try:
    status = cli.main(argv)
  except SystemExit as exit_:
    status = exit_.code
  captured = capsys.readouterr()
  return status, captured.out, captured.err


def assert_one_line_error(capsys, argv, message):
  """Bad input: status 2, nothing on stdout, one ``jaxlogits: error:`` line holding ``message``."""
  status, out, err = run_cli(capsys, argv)
  assert status == 2
  assert out == ""
  assert err.count("\n") == 1 and err.startswith("jaxlogits: error: ")
  assert message in err and "Traceback" not in err
