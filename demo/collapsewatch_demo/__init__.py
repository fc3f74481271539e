"""Training recipes that collapse (and their healthy controls), trained through the SDK's public
API, and the held-out validation suite that measures how well the default rules catch them.

Importing this package is light; :mod:`collapsewatch_demo.harness` and the recipes import torch,
so the CLI imports them lazily (the server's Docker image ships without torch).
"""
