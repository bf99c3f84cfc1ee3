"""ssl_tasks: self-supervised pretraining and evaluation as a reproducible pipeline.

Importing this package has no side effects: no directories, no tracking URIs, no threads.
"""

__version__ = "0.1.0"
