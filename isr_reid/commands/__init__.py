"""Subcommands of ``isr-reid``, one module each (see :mod:`isr_reid.cli`)."""
