"""Callbacks for the frameworks researchers train with; each module imports its framework only
when used, so ``import collapsewatch`` stays light:

- :mod:`collapsewatch.integrations.lightning`: ``CollapsewatchCallback`` for PyTorch Lightning;
- :mod:`collapsewatch.integrations.transformers`: ``CollapsewatchCallback`` for Hugging Face's
  ``Trainer``.

Both find the model and optimizer the framework built, count the steps it counts, take its loss
and labels, resume into the same run after a restart from a checkpoint, and act on alerts
(``stop_on=``, ``checkpoint_on=``).
"""
