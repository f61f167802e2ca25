"""Tools that measure the app from outside: ``python -m benchmarks.loadtest``. Not part of the library or the UI."""
