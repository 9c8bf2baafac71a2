"""Anonymized panel exports: the database as a Frictionless Data Package for researchers.

- :mod:`app.export.service`: ``export_panel(engine, ExportOptions(...))``, the whole pipeline.
- :mod:`app.export.deidentify`: quasi-identifier generalization, k-anonymity, l-diversity.
- :mod:`app.export.writers`: streamed CSV/Parquet writers, SPSS/Stata conversion.
- :mod:`app.export.codebook`: the codebook inside datapackage.json.
- :mod:`app.export.cli`: ``register(app)`` adds ``wellpanel export panel``.
"""
