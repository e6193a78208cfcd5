"""The ``edgec`` command line: a click group whose commands live in ``edgec.commands.*``.

Each command parses its options, calls ``edgec.api`` and prints. Errors are handled
once, here: an ``EdgecError`` becomes one line on stderr and its exit code; ``--debug`` shows the traceback.
Commands are imported only when invoked, so ``edgec --help`` and ``import edgec.cli`` stay light (no torch,
no TensorFlow).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

import click

from edgec import __version__
from edgec.errors import EdgecError
from edgec.registry import Registry

__all__ = ["main"]

# command name -> "module:attribute" with its one-line help; imported only when the command runs.
COMMANDS = Registry("command")
for _name, _reference, _help in (
    ("compile", "edgec.commands.compile:compile_cmd", "Compile a model into a verified bundle for a target."),
    ("inspect", "edgec.commands.bundle:inspect_cmd", "Show a bundle's manifest and compile report."),
    ("verify", "edgec.commands.bundle:verify_cmd", "Re-check a bundle's hashes and reference outputs."),
    ("targets", "edgec.commands.targets:targets_group", "List, show and calibrate target profiles."),
    ("demo", "edgec.commands.demo:demo_cmd", "Build, compile and benchmark an example model."),
    ("bench", "edgec.commands.bench:bench_cmd", "Benchmark a bundle with the device agent."),
    ("push", "edgec.commands.farm:push_cmd", "Copy a bundle to a device over SSH."),
    ("farm", "edgec.commands.farm:farm_group", "Work with a farm of SSH devices."),
    ("deploy", "edgec.commands.deploy:deploy_cmd", "Make a bundle the live model of devices; roll back on failure."),
    ("rollback", "edgec.commands.deploy:rollback_cmd", "Make a device's previous bundle live again."),
    ("results", "edgec.commands.results:results_group", "List, show and compare stored benchmark results."),
    ("estimate", "edgec.commands.estimate:estimate_cmd", "Predict latency, memory, storage and energy on a target."),
    ("report", "edgec.commands.report:report_cmd", "Write an HTML report of stored benchmark results."),
    ("sweep", "edgec.commands.sweep:sweep_cmd", "Compile, benchmark and compare variants of a model in one report."),
):
    COMMANDS.add(_name, _reference, help=_help)


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name in COMMANDS if _module_exists(COMMANDS.reference(name))]

    def get_command(self, ctx, name):
        return COMMANDS.get(name) if name in COMMANDS else None

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS.info(name)["help"]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _module_exists(reference: str | None) -> bool:
    return reference is None or importlib.util.find_spec(reference.partition(":")[0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="edgec")
@click.option("--debug", is_flag=True, help="Show tracebacks and third-party logs.")
@click.pass_context
def cli(ctx, debug):
    """edgec: compile Keras, PyTorch and ONNX models into verified bundles for edge devices, deploy them
    over SSH and benchmark them there."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main(argv=None):
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("EDGEC_DEBUG"))
    try:
        code = cli.main(args=argv, prog_name="edgec", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("edgec: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("edgec: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgecError as exc:
        if debug:
            raise
        from edgec.device_agent.text import terminal_safe

        message = terminal_safe(" ".join(str(exc).split()) or type(exc).__name__)
        click.echo(f"edgec: error: {message}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        click.echo(f"edgec: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)
