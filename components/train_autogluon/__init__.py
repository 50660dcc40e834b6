"""The `train_autogluon` component: `core.py` (plain Python) and `component.py` (KFP shell)."""
