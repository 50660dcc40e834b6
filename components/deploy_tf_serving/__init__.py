"""The `deploy_tf_serving` component: `core.py` (plain Python) and `component.py` (KFP shell).

Helpers: `kube.py` (the Kubernetes client), `rollout.py` (patch, watch, diagnose, roll back), `guard.py` (the
TensorFlow version-skew guard), `smoke.py` (golden requests and the smoke test), `report.py` (Markdown).
"""
