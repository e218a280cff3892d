"""Subcommands of ``emd`` that belong to no single stage."""
