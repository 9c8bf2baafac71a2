"""wellpanel analysis: reads panel Data Packages, fits mixed-effects models, writes reports.

Where things are (one module per concern):

- :mod:`analysis.spec`: the panel Data Package contract (resources, columns, types, outcomes,
  the ``wellpanel`` property); imported by the app's exporter.
- :mod:`analysis.datapackage`: writing packages in that contract (CSV or Parquet).
- :mod:`analysis.panel`: loading + validating a package; analysis frames (within/between
  decomposition, lags, event time).
- :mod:`analysis.mixed`: the linear mixed-model engine (exact profiled REML/ML from
  sufficient statistics, Satterthwaite df; statsmodels fallback).
- :mod:`analysis.models`: one module per model family (growth, within-between, lagged,
  event study / ITS, moderation); :mod:`analysis.multiplicity`: Benjamini-Hochberg.
- :mod:`analysis.pipeline`: the standard analysis of a panel; :mod:`analysis.quality`: data
  quality; :mod:`analysis.plots`: figures; :mod:`analysis.report`: HTML report + results.json.
- :mod:`analysis.simulate`: simulated panels with known effects; :mod:`analysis.power`:
  power by simulation.
- :mod:`analysis.cli`: ``register(app)`` adds ``analyze`` and ``power`` to the ``wellpanel`` CLI.
- ``analysis/notebooks/``: Jupytext percent-format notebooks.
"""
