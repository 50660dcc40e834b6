"""KFP components of kfp-tabular, one folder per component: ``core.py`` (plain Python) and ``component.py``.

Import a component from its shell module, e.g.
``from kfp_tabular.components.train_autogluon.component import train_autogluon``.

This package deliberately imports nothing: inside a running step the KFP executor sets ``_KFP_RUNTIME=true``,
which removes ``dsl.component``, and the step imports its core through this package, so loading the shells here
would break every step. (A package-level re-export would also clash with the folders, which share the
components' names.)
"""
