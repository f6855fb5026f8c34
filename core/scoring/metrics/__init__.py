"""The built-in metrics of `fmu score`, one module each; every module registers its `Metric`
(`..registry`), which imports them all on first use. A new metric is one new module here."""
