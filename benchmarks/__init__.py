"""The benchmarks. They run as scripts (`python benchmarks/load.py`), importing each other by
bare name; the integration tests import benchmarks.harness through this package. A regular package,
not a namespace one, so an installed distribution that ships its own `benchmarks` cannot shadow it."""
