"""Subcommands of the `signproxy` command line."""
