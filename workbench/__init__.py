"""vlr-workbench front ends: the Textual app (``workbench.app``) and the CLI (``workbench.cli``).

No tensor maths here: everything heavy goes through ``engine.jobs.registry``.
"""
