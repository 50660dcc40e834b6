"""The `explain_shap` component: `core.py` (plain Python) and `component.py` (KFP shell)."""
