"""Benchmarks: each ``benchmarks/<area>.py`` has a ``main()`` that compares against a baseline measured in the
same run, prints a table and writes it as JSON under ``build/bench/``. ``python -m benchmarks`` runs them all."""
