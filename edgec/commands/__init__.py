"""CLI commands, one module per area; registered in edgec.cli.COMMANDS."""
